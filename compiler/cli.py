"""The ``chipfit`` command line.

    chipfit targets [--json]                 registered targets
    chipfit targets show ID [--json]         one target: backend, options, figures with sources
    chipfit build MODEL -t T [-t T ...]      trace, lower, verify; exit 0 only if every artifact verified
    chipfit inspect PATH [--json]            an artifact: what it is, its manifest, its numerics
    chipfit generate PATH --prompt TEXT      a decoder LM artifact generates text (streamed), with tok/s
    chipfit release RELEASE.toml -o dist/    every model x target of a release, cached, verified, profiled
    chipfit compare BASELINE CURRENT         regressions beyond threshold and noise (exit 1)
    chipfit cache info|prune                 the release build cache

Exit codes: 0 success, 1 a build or verification failed, 2 bad input (file, option, target).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from compiler import __version__
from compiler.errors import ChipfitError, UsageError
from compiler.logs import native_stderr_to, quiet_libraries
from compiler.options import add_arguments, values_from_arguments
from targets.request import BuildRequest, ModelSource, ProfileRequest, set_options
from targets.spec import TargetError, TargetSpec


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


# --- targets ---------------------------------------------------------------------------------


def _figure(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return str(value)


def cmd_targets(args: argparse.Namespace) -> int:
    from targets.registry import target_registry

    if args.action == "validate":
        from compiler.validate import validate_spec

        spec, checks = validate_spec(args.target)
        for check in checks:
            print(f"{'ok  ' if check.ok else 'FAIL'}  {check.name:<20} {check.detail}")
        bad = [c for c in checks if not c.ok]
        print(f"\n{args.target}: " + ("valid" if not bad else f"{len(bad)} problem(s)"))
        return 1 if bad else 0
    if args.action == "reference":
        from compiler import spec_reference

        backends = spec_reference.builtin_backends()
        if not args.write:
            print(spec_reference.generated(backends))
            return 0
        doc = Path(args.write)
        try:
            updated = spec_reference.update(doc.read_text(encoding="utf-8"), backends)
        except (OSError, ValueError) as exc:
            raise UsageError(f"{doc}: {exc}") from exc
        from targets.files import write_text_atomic

        write_text_atomic(doc, updated)
        print(f"{doc}: generated part updated")
        return 0
    registry = target_registry()
    if args.action == "show":
        spec = registry.get(args.target)
        if args.json:
            print(json.dumps(spec.to_dict() | {"spec_digest": spec.digest, "spec_file": spec.source_file}, indent=2))
        else:
            print(_describe_target(spec))
        return 0
    specs, failed = registry.load_all()
    broken = _broken_backends(specs.values())
    for target_id, errors in broken.items():
        failed[target_id] = f"target {target_id!r} is broken: " + "; ".join(errors)
    if args.json:
        print(json.dumps({"targets": [s.to_dict() | {"spec_digest": s.digest, "broken": broken.get(s.id, [])}
                                      for s in specs.values()], "load_errors": failed}, indent=2))
    else:
        rows = [
            (s.id, s.name, ", ".join(s.backends), s.default_precision, ", ".join(s.precisions),
             s.reach.kind + (f" ({s.reach.rpc_key})" if s.reach.rpc_key else ""),
             "BROKEN (see below)" if s.id in broken else "ok")
            for s in specs.values()
        ]
        print(_table(("target", "name", "backends", "default", "precisions", "reach", "status"), rows))
        for name, error in failed.items():
            print(f"error: {error}", file=sys.stderr)
    return 2 if failed else 0


def _broken_backends(specs) -> dict[str, list[str]]:
    """Target id -> why each of its backends that does not load fails (a plugin's import error, an old API)."""
    from targets.registry import PluginLoadError, backend_registry

    backends = backend_registry()
    errors: dict[str, str] = {}
    broken: dict[str, list[str]] = {}
    for spec in specs:
        for name in spec.backends:
            if name not in errors:
                try:
                    backends.get(name)
                    errors[name] = ""
                except (PluginLoadError, TargetError) as exc:
                    errors[name] = f"backend {name!r} does not load: {exc}"
            if errors[name]:
                broken.setdefault(spec.id, []).append(errors[name])
    return broken


def _describe_target(spec: TargetSpec) -> str:
    from targets.isa import ARITHMETIC

    hw = spec.hardware
    lines = [
        f"{spec.id}: {spec.name} ({spec.vendor})",
        f"  {spec.description}" if spec.description else "",
        f"  spec file: {spec.source_file}",
        f"  spec digest: {spec.digest}",
        f"  backends (preferred first): {', '.join(spec.backends)}" + ("; builds all of them" if spec.build_all_backends else ""),
        f"  precisions: {', '.join(spec.precisions)} (default {spec.default_precision})",
        f"  reach: {spec.reach.kind}" + (f", arch {spec.reach.arch}" if spec.reach.arch else "")
        + (f", tracker key {spec.reach.rpc_key}" if spec.reach.rpc_key else "")
        + (f" ({spec.reach.reason})" if spec.reach.reason else ""),
        f"  isa: {spec.isa.label}; int8 arithmetic: {spec.isa.int8_arithmetic} ({ARITHMETIC[spec.isa.int8_arithmetic]})",
    ]
    if spec.id == "host" or spec.reach.kind == "local":
        from targets.host import detect_host

        facts = detect_host().facts()
        lines.append(f"  this machine: {facts.vendor} {facts.cpu}, {facts.arch}, {facts.cores} cores, "
                     f"{facts.memory_gb} GB; isa {', '.join(facts.isa) or 'baseline'}; int8 arithmetic "
                     f"{facts.int8_arithmetic}")
    lines += ["", "backend options:"]
    for backend, options in spec.backend_options.items():
        lines.append(f"  [{backend}]")
        lines.extend(f"    {k} = {json.dumps(v)}" for k, v in options.items())
    lines += ["", "verification tolerances:"]
    for precision, tol in spec.tolerances.items():
        lines.append(f"  {precision}: atol {tol.atol:g}, rtol {tol.rtol:g}, cosine >= {tol.min_cosine:g}")
    lines += ["", f"hardware ({hw.chip}): {hw.compute}"]
    rows = []
    for key, value in hw.figures.items():
        rows.append((key, _figure(value), "; ".join(hw.sources.get(key, ())) or "-"))
    lines += ["  " + line for line in _table(("figure", "value", "source"), rows).splitlines()]
    if hw.notes:
        lines += ["", f"notes: {hw.notes}"]
    return "\n".join(line for line in lines if line is not None)


# --- build -----------------------------------------------------------------------------------


def cmd_build(args: argparse.Namespace) -> int:
    from compiler.build import BuildContext, BuildOptions, build, exit_code, print_progress
    from compiler.fusion_stage import FusionOptions
    from compiler.passes.fusion import FUSIONS
    from compiler.frontend import load_model
    from targets.signature import parse_input_override
    from targets.registry import target_registry

    unknown = [name for name in args.dump_after if name not in FUSIONS]
    if unknown:
        raise UsageError(f"--dump-after {unknown[0]}: no such pass; passes: {', '.join(FUSIONS)}")
    settings = values_from_arguments(args, BuildRequest)
    overrides = [parse_input_override(text) for text in settings.get("inputs", ())]
    registry = target_registry()
    target_ids = registry.names() if args.target == ["all"] else args.target
    for target_id in target_ids:
        registry.get(target_id)  # fail on an unknown name before tracing anything
    # every option is checked before tracing (a bad --method must not cost a trace)
    from targets.request import check_request

    check_request(BuildRequest(ModelSource(args.model, "model"), "").with_options(**settings),
                  lambda o: o.cli_flag or o.name)
    progress = (lambda m: None) if args.quiet else print_progress
    progress(f"tracing {args.model}")
    with contextlib.redirect_stdout(sys.stderr):
        model = load_model(args.model, overrides, trust_remote_code=bool(settings.get("trust_remote_code")))
        dumps = FusionOptions(enabled=settings.pop("fusion", True), explain=settings.pop("explain_fusion", False),
                              dump_after=tuple(args.dump_after), dump_all=Path(args.dump_all) if args.dump_all else None)
        options = BuildOptions(target_ids, Path(args.output), fusion=dumps, force=args.force, **settings)
        results = build(model, options, BuildContext(targets=registry, progress=progress))
    if args.json:
        print(json.dumps({"model": model.name, "source": model.source, "results": [r.to_dict() for r in results]},
                         indent=2))
    else:
        rows = []
        for r in results:
            latency = f"{r.latency.latency_ms_p50:.3f}" if r.latency else "-"
            rows.append((r.target, r.backend, r.precision, _size(r.size_bytes) if r.size_bytes else "-",
                         f"{r.build_seconds:.2f}", latency,
                         r.numerics.summary() if r.numerics else f"ERROR: {r.message}"))
        print(f"\n{model.name} ({model.source}) -> {Path(args.output) / model.name}")
        print(_table(("target", "backend", "precision", "size", "build s", "host ms p50", "numerics"), rows))
        for line in _quantization_lines(results):
            print(line)
        for line in _fusion_lines(results, dumps.explain):
            print(line)
        for line in _choice_lines(results):
            print(line)
        for r in results:
            for warning in r.warnings:
                print(f"warning: {r.target} ({r.backend}): {warning}", file=sys.stderr)
        failures = [r for r in results if not r.ok]
        if failures:
            print(f"\n{len(failures)} of {len(results)} artifacts failed:", file=sys.stderr)
            for r in failures:
                print(f"  {r.target} ({r.backend}): {r.message or r.numerics.summary()}", file=sys.stderr)
        print("\nhost ms p50: median latency of one batch (1, or the artifact's static batch) on this machine, run as the "
              "target's runtime loads it (TVM: the schedules it got, see chipfit tune).")
    code = exit_code(results)
    if args.profile and not args.json:
        print()
        code = max(code, _run_profiles(Path(args.output) / model.name, args, progress))
    return code


def _choice_lines(results) -> list[str]:
    lines = []
    for r in results:
        if r.choice:
            figures = ", ".join(f"{c.backend} " + (f"{c.latency_ms:.4g} ms" if c.latency_ms is not None else c.status)
                                for c in r.choice.candidates)
            method = next((c.method for c in r.choice.candidates if c.backend == r.choice.chosen), "")
            lines.append(f"{r.target}: {r.choice.chosen} chosen among {figures} ({method}; {r.choice.rule})")
    return (["\nbackend choice (targets with several backends ship the fastest verified one):"] + lines) if lines else []


def _fusion_lines(results, explain: bool) -> list[str]:
    from compiler.fusion_stage import fusion_summary

    lines = []
    for r in results:
        if r.fusion:
            fallback = f"; {len(r.fallbacks)} ops fall back to CPU" if r.fallbacks else ""
            lines.append(f"fusion {r.target} ({r.backend}): {fusion_summary(r.fusion)}{fallback}")
            if explain:
                for p in r.fusion["passes"]:
                    if p.get("explain"):
                        first = p["explain"].strip().splitlines()
                        lines.append(f"  {p['name']} did not fire: {' / '.join(first[:3])[:300]}")
    return (["\nfusion (declared by each target's [fusion] rules):"] + lines) if lines else []


def _accuracy_text(acc: dict) -> str:
    parts = []
    if "top1_pct" in acc:
        parts.append(f"top-1 {acc['top1_pct']:.2f}% vs float {acc['top1_float_pct']:.2f}% ({-acc['top1_drop_points']:+.2f} points)")
    parts.append(f"agreement with float {acc['agreement_with_float_pct']:.1f}%")
    sqnr = [o["sqnr_db"] for o in acc["outputs"] if o["sqnr_db"] is not None]
    if sqnr:
        parts.append(f"SQNR {min(sqnr):.1f} dB")
    return ", ".join(parts) + f" on {acc['evaluated_on']}"


def _quantization_lines(results) -> list[str]:
    """The accuracy report of each distinct precision rewrite in this build."""
    lines: list[str] = []
    seen: set[str] = set()
    for r in results:
        q = r.quantization
        if not q:
            continue
        key = json.dumps(q["settings"], sort_keys=True)
        targets = [x.target for x in results if x.quantization and json.dumps(x.quantization["settings"], sort_keys=True) == key]
        if key in seen:
            continue
        seen.add(key)
        settings = ", ".join(f"{k} {v}" for k, v in q["settings"].items() if k != "precision")
        lines.append(f"\n{q['settings']['precision']} ({settings}) for {', '.join(dict.fromkeys(targets))}:")
        lines.append(f"  {_accuracy_text(q['accuracy'])}")
        if q.get("scheme", {}).get("refused"):
            refused, tried = q["scheme"]["refused"], q["scheme"]["tried"]
            lines.append(f"  scheme: {q['scheme']['chosen']} (exact on the target's {q['scheme']['arithmetic']}; tried "
                         + ", ".join(f"{t['scheme']} SQNR {t['sqnr_db']:g} dB" for t in tried)
                         + f"); {refused['scheme']} refused: on the target cos {refused['cosine']:.6f}, SQNR "
                         f"{refused['sqnr_db']:g} dB")
        elif q.get("scheme", {}).get("note"):
            lines.append(f"  scheme: {q['scheme']['chosen']}: {q['scheme']['note']}")
        if q.get("statistics"):
            st = q["statistics"]
            lines.append(f"  ranges: {st['method']}, " + ("reused from the statistics cache" if st["from_cache"] else "calibrated now and cached")
                         + (" -- from RANDOM data (--calibration random): accuracy on real inputs is unknown"
                            if st.get("random_data") else f" ({st.get('samples_from')})"))
        if q.get("pre_quantization", {}).get("tried"):
            pre = q["pre_quantization"]
            tried = ", ".join(f"{t['variant']} {t['drop']:g}" for t in pre["tried"])
            lines.append(f"  before quantizing: {pre['chosen']} chosen (accuracy drop per variant: {tried})")
        if q.get("sensitivity"):
            worst = ", ".join(f"{row['node']} ({row['op']}) {row['sqnr_db']:.1f} dB" for row in q["sensitivity"][:5])
            lines.append(f"  most sensitive layers (quantized alone, output SQNR): {worst}")
        if q.get("kept_in_float"):
            lines.append(f"  kept in float for the accuracy budget: {', '.join(q['kept_in_float'])}")
    return lines


# --- profile ---------------------------------------------------------------------------------


def _profile_options(args: argparse.Namespace) -> ProfileRequest:
    return set_options(ProfileRequest(), values_from_arguments(args, ProfileRequest))


def _run_profiles(root: Path, args: argparse.Namespace, progress) -> int:
    from profiles.profile import ProfileError, profile_artifacts
    from profiles.report import (LLM_HEADERS, TABLE_HEADERS, fit_text, html_report, llm_rows, table_rows,
                                 unknown_figures)

    try:
        run = profile_artifacts(root, _profile_options(args), progress)
    except ProfileError as exc:
        raise UsageError(str(exc)) from exc
    if args.html:
        Path(args.html).write_text(html_report(run.profiles, run.fit, run.errors))
    if getattr(args, "json", False) and args.command == "profile":
        print(json.dumps({"profiles": [p.to_dict() for p in run.profiles], "fit": run.fit, "errors": run.errors},
                         indent=2))
    else:
        graphs, decoders = table_rows(run.profiles), llm_rows(run.profiles)
        if graphs:
            print(_table(TABLE_HEADERS, graphs))
            print("\nlatency/energy columns say measured:<runner> or estimated:<model>; est/meas = estimate / measurement.")
            print(fit_text(run.fit))
        if decoders:
            print(("\n" if graphs else "") + _table(LLM_HEADERS, decoders))
            print("\nTTFT at the first prompt length (@tokens); decode tok/s at that KV depth; fits at ctx: the memory "
                  "plan at the artifact's context; % roofline: decode rate against the chip's memory-bandwidth bound.")
            _llm_notes(run.profiles)
        for line in unknown_figures(run.profiles):
            print(line)
        for p in run.profiles:
            if p.latency and p.latency.noisy:
                print(f"NOISY: {p.target} {p.backend}: cv {p.latency.cv:.3f}; the p50 is not exact (busy machine?)")
        if args.html:
            print(f"HTML report: {args.html}")
    for path, error in run.errors.items():
        print(f"error: {error}", file=sys.stderr)
    return 1 if run.errors else 0


def _llm_notes(profiles) -> None:
    for p in profiles:
        if not p.llm:
            continue
        error = p.llm.get("estimate_error_pct")
        if error:
            print(f"{p.target} {p.backend} {p.precision}: the estimate is off by {error.get('decode_tok_s')}% "
                  f"(decode tok/s) and {error.get('ttft_ms')}% (TTFT) against this measurement")
        sustained = p.llm.get("sustained")
        if sustained:
            print(f"{p.target} {p.backend} {p.precision}: sustained {len(sustained['runs'])} generations: first "
                  f"{_fmt_rate(sustained['first_decode_tok_s'])} tok/s, steady {_fmt_rate(sustained['steady_decode_tok_s'])} "
                  f"tok/s, spread {sustained['spread_pct']:.1f}%")


def _fmt_rate(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def cmd_profile(args: argparse.Namespace) -> int:
    from targets.manifest import find_artifacts
    from targets.request import check_request

    path = Path(args.path)
    if not path.exists():
        raise UsageError(f"{path}: no such artifact folder")
    given = values_from_arguments(args, ProfileRequest)
    check_request(BuildRequest(ModelSource("-", "-"), "-", profile=_profile_options(args)), lambda o: o.cli_flag or o.name)
    if given.get("meter"):
        from profiles.meters import MeterError, open_meter

        try:
            meter = open_meter(given["meter"])
            meter.start()
            meter.joules()
            meter.close()
        except MeterError as exc:
            raise UsageError(f"--meter {given['meter']}: {exc}") from None
    llm_flags = [f"--{k.replace('_', '-')}" for k in ("prompt_lengths", "new_tokens", "sustained") if k in given]
    if llm_flags and not any(a.manifest.llm for a in find_artifacts(path)):
        raise UsageError(f"{', '.join(llm_flags)}: {path} holds no language model artifact; these options apply to "
                         "decoder LMs built from a model folder")
    progress = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    return _run_profiles(path, args, progress)


def _add_profile_options(p: argparse.ArgumentParser) -> None:
    add_arguments(p, ProfileRequest)
    p.add_argument("--html", help="also write an HTML report with plots here")


# --- compare and baseline ------------------------------------------------------------------------


def _thresholds(items: Sequence[str]) -> dict[str, float]:
    from profiles.compare import DEFAULT_THRESHOLDS

    out = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in DEFAULT_THRESHOLDS:
            raise UsageError(f"--threshold {item}: unknown metric {name!r}; metrics: {', '.join(DEFAULT_THRESHOLDS)}")
        try:
            out[name] = float(value)
        except ValueError:
            raise UsageError(f"--threshold {item}: {value!r} is not a number") from None
    return out


def _release_thresholds(current: Path) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Thresholds a release recorded in its index.json (from release.toml); --threshold overrides them."""
    index = current / "index.json"
    if not index.is_file():
        return {}, {}
    try:
        recorded = json.loads(index.read_text()).get("thresholds") or {}
    except ValueError as exc:
        raise UsageError(f"{index}: not valid JSON ({exc})") from None
    return dict(recorded.get("default", {})), {t: dict(v) for t, v in recorded.get("target", {}).items()}


def cmd_compare(args: argparse.Namespace) -> int:
    from profiles.compare import (CompareError, compare, junit, load_profiles, markdown, match_backend_switches,
                                  read_index, release_verdicts)

    try:
        baseline, current = load_profiles(args.baseline), load_profiles(args.current)
        index = read_index(args.current)
    except CompareError as exc:
        raise UsageError(str(exc)) from exc
    thresholds, per_target = _release_thresholds(Path(args.current))
    thresholds.update(_thresholds(args.threshold))
    baseline, switched = match_backend_switches(baseline, current)
    verdicts, added, removed = compare(baseline, current, thresholds, per_target, args.gate_estimated)
    verdicts += switched + release_verdicts(baseline, current, index, args.accept_removed)
    text = markdown(verdicts, added, removed, args.all)
    if args.summary:
        Path(args.summary).write_text(text)
    if args.junit:
        Path(args.junit).write_text(junit(verdicts))
    figure = (lambda x: "-" if x is None else f"{x:.4g}")
    from profiles.compare import ORDER

    rows = [(v.key, v.metric, v.status.upper() if v.status != "ok" else "ok", figure(v.baseline), figure(v.current),
             v.unit or "-", "-" if v.ratio is None else f"{v.ratio:.3f}",
             "-" if v.interval is None else f"{v.interval[0]:.3f}-{v.interval[1]:.3f}", f"{v.threshold:g}",
             f"{v.method or '-'}, {v.test}" + (f"; {v.note}" if v.note else ""))
            for v in sorted(verdicts, key=lambda v: (ORDER.get(v.status, 9), v.key, v.metric))
            if v.status != "ok" or args.all]
    if rows:
        print(_table(("cell", "metric", "verdict", "baseline", "current", "unit", "ratio", "95% interval", "threshold",
                      "how"), rows))
    regressions = sum(v.status == "regression" for v in verdicts)
    failed = sum(v.status == "failed" for v in verdicts)
    print(f"\n{regressions} regression(s), {failed} failed cell(s), {sum(v.status == 'alarm' for v in verdicts)} "
          f"alarm(s) in {len(verdicts)} checks; added {len(added)}, removed {len(removed)} cell(s)")
    return 1 if regressions or failed else 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from profiles.compare import CompareError, update_baseline

    try:
        count = update_baseline(args.current, args.baseline)
    except CompareError as exc:
        raise UsageError(str(exc)) from exc
    print(f"baseline {args.baseline}: {count} profile(s) from {args.current}")
    return 0


# --- release -------------------------------------------------------------------------------------


def cmd_release(args: argparse.Namespace) -> int:
    from compiler.release.cache import default_cache_dir
    from compiler.release.config import load_release
    from compiler.release.driver import SUMMARY_NAME, ReleaseOptions, dry_run, release, temporary_cache
    from compiler.release.summary import SUMMARY_HEADERS, summary_rows
    from targets.release_index import INDEX_NAME, ReleaseIndex

    config = load_release(args.release)
    if args.jobs < 1:
        raise UsageError(f"--jobs {args.jobs}: must be at least 1")
    from compiler.release.cache import is_url

    if args.scheduler and args.executor != "dask":
        raise UsageError("--scheduler is for --executor dask")
    cache_dir = (temporary_cache() if args.no_cache else (args.cache if is_url(args.cache) else Path(args.cache))
                 if args.cache else default_cache_dir())
    if args.executor == "dask" and args.scheduler and args.no_cache:
        raise UsageError("--no-cache with --scheduler: the cluster's workers cannot reach a throwaway cache on this "
                         "machine; give --cache a shared path or URL")
    progress = (lambda m: None) if args.quiet else print_progress_line
    from compiler.release.cache import default_cache_max_gb

    max_gb = args.cache_max_gb if args.cache_max_gb is not None else default_cache_max_gb()
    if max_gb <= 0:
        raise UsageError(f"--cache-max-gb {max_gb}: must be positive")
    options = ReleaseOptions(out_dir=Path(args.output).absolute(), cache_dir=cache_dir, jobs=args.jobs,
                             check_reproducible=args.check_reproducible,
                             profile=not args.no_profile,
                             cell_timeout_s=args.cell_timeout, cache_max_bytes=int(max_gb * 2**30),
                             executor=args.executor, scheduler=args.scheduler)
    if args.dry_run:
        rows = [(c.model.name, c.precision, c.target.id, c.key[:12], what) for c, what in dry_run(config, options)]
        print(_table(("model", "precision", "target", "cache key", "would"), rows))
        return 0
    with contextlib.redirect_stdout(sys.stderr):
        report = release(config, options, progress)
    index = ReleaseIndex.from_dict(json.loads((options.out_dir / INDEX_NAME).read_text()), str(options.out_dir / INDEX_NAME))
    if args.json:
        print(json.dumps(index.to_dict(), indent=2))
    else:
        print(f"\nrelease {config.name} -> {options.out_dir}")
        print(_table(SUMMARY_HEADERS, summary_rows(index)))
        s = index.summary
        print(f"\n{s['cells']} cells: {s['built']} built, {s['cached']} from the cache, {s['partial']} partial, "
              f"{s['failed']} failed verification, {s['error']} could not be built; {index.seconds} s")
        print(f"index: {options.out_dir / INDEX_NAME}; summary: {options.out_dir / SUMMARY_NAME}")
    for outcome in report.outcomes:
        if not outcome.ok:
            detail = outcome.message or "; ".join(c.detail for c in outcome.reproducible or [] if not c.ok)
            print(f"error: {outcome.cell.label}: {detail}" + (f" (log: {outcome.log})" if outcome.log else ""),
                  file=sys.stderr)
    for path, error in report.profile_errors.items():
        print(f"error: profile {path}: {error}", file=sys.stderr)
    if args.no_cache:
        import shutil

        shutil.rmtree(cache_dir, ignore_errors=True)
    return 0 if report.ok else 1


def cmd_cache(args: argparse.Namespace) -> int:
    import time

    from compiler.release.cache import BuildCache, default_cache_dir

    from compiler.release.cache import is_url

    if args.cache and is_url(args.cache):
        raise UsageError(f"cache {args.action} --cache {args.cache}: works on a cache folder; a URL's store keeps "
                         "entries by its own retention policy (e.g. an S3 lifecycle rule)")
    cache = BuildCache(Path(args.cache) if args.cache else default_cache_dir())
    if args.action == "prune":
        if args.max_age_days is None and args.max_size_gb is None:
            raise UsageError("cache prune: give --max-age-days N and/or --max-size-gb G")
        removed = cache.prune(max_age_s=None if args.max_age_days is None else args.max_age_days * 86400,
                              max_bytes=None if args.max_size_gb is None else int(args.max_size_gb * 1e9))
        print(f"removed {len(removed)} entr{'y' if len(removed) == 1 else 'ies'} from {cache.root}")
    entries = cache.entries()
    total = sum(e[2] for e in entries)
    oldest = f"; least recently used {(time.time() - entries[0][1]) / 86400:.1f} days ago" if entries else ""
    print(f"{cache.root}: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, {_size(total)}{oldest}")
    return 0


def print_progress_line(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- conformance ---------------------------------------------------------------------------------


def cmd_conformance(args: argparse.Namespace) -> int:
    from compiler.build import BuildContext
    from compiler.conformance import OP_TESTS, load_backends, run_conformance, write_reports
    from targets.registry import target_registry

    registry = target_registry()
    ids = registry.names() if args.target == ["all"] else args.target
    ctx = BuildContext(targets=registry, progress=lambda m: None)
    for target_id in ids:  # every target known and every backend loading, before any work
        load_backends(registry.get(target_id), ctx, args.backend)
    progress = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    reports = []
    with contextlib.redirect_stdout(sys.stderr):
        for target_id in ids if args.node_suite else ():
            from compiler.node_suite import sweep

            progress(f"node suite: {target_id}")
            reports += sweep(target_id, args.backend, budget_s=args.case_budget, progress=progress, ctx=ctx)
        for target_id in () if args.node_suite else ids:
            progress(f"conformance: {target_id}")
            reports.append(run_conformance(target_id, ops=OP_TESTS[: args.ops] if args.ops else OP_TESTS,
                                           models=not args.no_models, progress=progress, ctx=ctx, llm=args.llm,
                                           families=args.llm_families.split(",") if args.llm_families else None,
                                           backend=args.backend))
    if args.node_suite and args.markdown:  # ~1900 cases a backend: the ops that failed per stage, not every case
        from compiler.node_suite import summary_markdown
        from targets.files import write_text_atomic

        write_reports(reports, args.report, args.html)
        write_text_atomic(Path(args.markdown), summary_markdown([r.to_dict() for r in reports]) + "\n")
    else:
        write_reports(reports, args.report, args.html, args.markdown)
    for report in reports:
        data = report.to_dict()
        print(f"\n{report.target} ({', '.join(report.backends)}): {data['passed']} passed, {data['failed']} failed, "
              f"{data['not_run']} not run here (of {data['total']} checks)")
        rows = [(s, v["reached"], v["failed"], v["not_run"] or "", "-" if v["pass_rate"] is None else
                 f"{v['pass_rate'] * 100:.1f}%") for s, v in data["stages"].items()]
        print(_table(("stage", "reached", "failed", "not run here", "pass rate"), rows))
        for o in data["outcomes"]:
            if not o["passed"]:
                print(f"  {o['stage']:<9} {o['backend']:<12} {o['kind']:<8} {o['item']} {o['precision']}: "
                      f"{o['message'][:160]}")
        if data["not_run"]:
            why = next(o["message"] for o in data["outcomes"] if not o["ran"])
            print(f"  not run here: {data['not_run']} lowered artifact(s), e.g. {why[:160]}")
        if data["unsupported_ops"]:
            print(f"  ops a backend cannot lower: {', '.join(data['unsupported_ops'])}")
        for note in data["notes"]:
            print(f"  note: {note}")
    return 0 if all(r.failed == 0 for r in reports) else 1


# --- generate --------------------------------------------------------------------------------


def cmd_tune(args: argparse.Namespace) -> int:
    """Tune a model's kernels for a target with its backend's tuner; later builds for that target reuse the records."""
    from compiler.frontend import load_model
    from targets.backend import Device
    from targets.registry import backend_registry, target_registry

    if args.trials < 1:
        raise UsageError(f"--trials {args.trials}: must be at least 1")
    target = target_registry().get(args.target)
    backends = backend_registry()
    tuners = [backends.get(name) for name in target.backends if getattr(backends.get(name), "tunable", False)]
    if not tuners:
        raise UsageError(f"-t {target.id}: none of its backends ({', '.join(target.backends)}) has a tuner; "
                         "TVM's does (a target with backends = [\"tvm\", ...])")
    device = None
    if args.rpc:
        if ":" not in args.rpc:
            raise UsageError(f"--rpc {args.rpc}: give the tracker as HOST:PORT")
        key = args.key or target.reach.rpc_key
        if not key:
            raise UsageError(f"--rpc given but no --key, and target {target.id} names no rpc_key")
        device = Device(args.rpc, key)
    elif target.reach.kind != "local" or target.reach.arch and target.reach.arch != _host_arch():
        raise UsageError(f"-t {target.id}: its kernels run on {target.reach.arch or target.reach.kind}, not this CPU: "
                         "tune on the device with --rpc HOST:PORT [--key KEY]")
    progress = (lambda m: None) if args.quiet else print_progress_line
    from targets.signature import parse_input_override

    overrides = [parse_input_override(text) for text in args.input]
    model = load_model(args.model, overrides)
    for backend in tuners:
        result = backend.tune(model, target, args.trials, device, progress)
        print(f"{target.id} ({backend.name}): {result.tasks} kernels, {result.trials} trials in "
              f"{result.seconds:.0f} s on {result.runner}; {result.records} records kept in {result.database}")
    print("later builds for this target apply them (the manifest's tvm-schedules pass lists the kernels)")
    return 0


def _host_arch() -> str:
    from targets.host import detect_host

    return detect_host().arch


def cmd_generate(args: argparse.Namespace) -> int:
    from targets.host import detect_host
    from targets.manifest import read_artifact
    from targets.registry import backend_registry, target_registry

    if args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens {args.max_new_tokens}: must be at least 1")
    artifact = read_artifact(args.path)
    m = artifact.manifest
    if m.llm is None:
        raise UsageError(f"{args.path}: not a language model artifact (built from {m.model.source_kind} "
                         f"{m.model.source}); `chipfit generate` takes a decoder LM built from a model folder")
    problems = artifact.file_problems()
    if problems:
        raise UsageError(f"{args.path}: refusing to run a modified artifact: {'; '.join(problems)}")
    from tokenizers import Tokenizer

    tokenizer_file = next((artifact.path / f for f in m.llm.tokenizer_files if f.endswith("tokenizer.json")), None)
    if tokenizer_file is None:
        raise UsageError(f"{args.path}: the artifact holds no tokenizer.json")
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    ids = tokenizer.encode(args.prompt).ids
    if not ids:
        raise UsageError("--prompt: it encodes to no tokens")
    if len(ids) + args.max_new_tokens > m.llm.context:
        raise UsageError(f"--max-new-tokens {args.max_new_tokens}: the prompt ({len(ids)} tokens) and the new tokens "
                         f"exceed the artifact's context of {m.llm.context}")
    target = target_registry().get(m.target.id)
    plan = backend_registry().get(m.backend.name).plan_generate(artifact.path, m.backend.options, target, detect_host())
    if plan.note:
        print(f"note: {plan.note}", file=sys.stderr)
    eos = m.llm.generation.get("eos_token_id")
    stop = tuple(eos) if isinstance(eos, list) else ((eos,) if isinstance(eos, int) else ())
    made: list[int] = []
    shown = ""
    sys.stdout.write(args.prompt)

    def stream(token: int) -> None:
        nonlocal shown
        made.append(token)
        text = tokenizer.decode(made)
        if not text.endswith("\ufffd"):  # a character split across tokens waits for its last byte
            sys.stdout.write(text[len(shown):])
            sys.stdout.flush()
            shown = text

    result = plan.runner.generate(ids, args.max_new_tokens, stop=() if args.ignore_eos else stop, on_token=stream)
    sys.stdout.write("\n")
    sys.stdout.flush()
    decode_s = sum(result.token_s)
    rate = f"{len(result.token_s) / decode_s:.1f} tok/s" if decode_s > 0 else "-"
    print(f"{len(result.tokens)} tokens; prompt {len(ids)} tokens, time to first token {result.prefill_s * 1e3:.1f} ms, "
          f"decode {rate} ({plan.runner.description})", file=sys.stderr)
    return 0


# --- inspect ---------------------------------------------------------------------------------


def cmd_inspect(args: argparse.Namespace) -> int:
    from targets.manifest import find_artifacts, read_artifact
    from targets.registry import backend_registry

    path = Path(args.path)
    if args.path == "example" or path.suffix.lower() in (".pt2", ".onnx") or (path / "config.json").is_file():
        return _describe_model(args)
    if not path.exists():
        raise UsageError(f"{path}: no such artifact directory")
    artifacts = [read_artifact(path)] if (path / "manifest.json").exists() else find_artifacts(path)
    if not artifacts:
        raise UsageError(f"{path}: holds no chipfit artifact (no manifest.json at or under it)")
    backends = backend_registry()
    status = 0
    reports = []
    for artifact in artifacts:
        problems = artifact.file_problems()
        drift = _toolchain_drift(artifact.manifest, backends)
        status = status or (1 if problems else 0)
        reports.append((artifact, problems, drift))
    if args.json:
        print(json.dumps([{"path": str(a.path), "manifest": a.manifest.to_dict(), "file_problems": p,
                           "toolchain_drift": d} for a, p, d in reports], indent=2))
        return status
    for artifact, problems, drift in reports:
        print(_describe_artifact(artifact, problems, drift))
    return status


def _describe_model(args: argparse.Namespace) -> int:
    """A model (not an artifact): its inputs and outputs, so that sample files can be written for it."""
    from compiler.frontend import load_model, signature_of

    path = Path(args.path)
    if path.is_dir():
        from compiler.frontend.huggingface import load_hf_directory

        model = load_hf_directory(path, digest=False)
        if args.json:
            from targets.schema import to_json

            print(json.dumps({"decoder": to_json(model.spec)}, indent=2))
            return 0
        d = model.spec
        print(f"{path}: {d.architecture} ({d.model_type}), {d.layers} layers, hidden {d.hidden_size}, vocab "
              f"{d.vocab_size}, {d.max_positions} positions, {d.parameters / 1e6:.1f} M parameters")
        print("  inputs:  token ids (a .txt file of prompts, one per line, for --samples)")
        return 0
    signature = signature_of(args.path) if path.suffix.lower() == ".pt2" else load_model(args.path).signature
    if args.json:
        print(json.dumps(signature.to_dict(), indent=2))
        return 0
    print(f"{args.path}:")
    for t in signature.inputs:
        print(f"  input   {t.name:<20} {t.shape_str():<20} {t.dtype}")
    for t in signature.outputs:
        print(f"  output  {t.name:<20} {t.shape_str():<20} {t.dtype}")
    names = ", ".join(f"'{t.name}'" for t in signature.inputs)
    print(f"sample files: a .npz with arrays {names}, leading axis = samples (a symbolic 'batch' dimension is that axis)")
    return 0


def _toolchain_drift(manifest, backends) -> dict[str, tuple[str, str]]:
    """Toolchain packages whose installed version differs from the one the artifact was built with."""
    name = manifest.backend.name
    if name not in backends:
        return {}
    try:
        now = backends.get(name).versions()
    except TargetError:
        return {}
    built = manifest.toolchain
    return {k: (built[k], v) for k, v in now.items() if k in built and built[k] != v}


def _shape(tensor) -> str:
    return f"{tensor.name} {'x'.join(map(str, tensor.shape))} {tensor.dtype}"


def _describe_artifact(artifact, problems: list[str], drift: dict) -> str:
    m = artifact.manifest
    numerics = m.numerics
    lines = [
        f"{artifact.path}",
        f"  model:     {m.model.name} from {m.model.source} ({m.model.source_kind}, "
        f"sha256 {m.model.source_digest[:16]}...)",
        f"  target:    {m.target.id} ({m.target.name}), spec sha256 {m.target.spec_digest[:16]}...",
        f"  backend:   {m.backend.name}  precision: {m.precision}",
        f"  options:   {json.dumps(m.backend.options, sort_keys=True)}",
        f"  built by:  chipfit {m.chipfit_version}; " + ", ".join(f"{k} {v}" for k, v in m.toolchain.items()),
        "  inputs:    " + ", ".join(_shape(t) for t in m.signature.inputs),
        "  outputs:   " + ", ".join(_shape(t) for t in m.signature.outputs),
        "  passes:    " + (", ".join(p.get("name", p.get("precision", "?")) for p in m.passes) or "none"),
    ]
    if m.calibration:
        c = m.calibration
        lines.append(f"  calibration: {c.samples} samples from {c.origin}" + (" (RANDOM data)" if c.random else ""))
    if m.quantization:
        q = m.quantization
        lines.append("  quantization: " + ", ".join(f"{k} {v}" for k, v in q["settings"].items()))
        lines.append(f"    accuracy: {_accuracy_text(q['accuracy'])}")
        for row in q.get("sensitivity", [])[:10]:
            lines.append(f"    sensitivity: {row['node']:<30} {row['op']:<8} SQNR {row['sqnr_db']:6.1f} dB  cosine {row['cosine']:.6f}")
        if q.get("kept_in_float"):
            lines.append(f"    kept in float: {', '.join(q['kept_in_float'])}")
    if m.llm:
        lines += _llm_lines(m.llm)
    lines.append(f"  files ({_size(m.size_bytes)}):")
    shown = list(m.files.items())
    for rel, meta in shown[:8]:
        lines.append(f"    {rel:<40} {_size(meta.bytes):>9}  sha256 {meta.sha256[:16]}...")
    if len(shown) > 8:
        lines.append(f"    ... and {len(shown) - 8} more")
    lines.append("  integrity: " + ("all files match their sha256" if not problems else "; ".join(problems)))
    repro = m.reproducibility
    if repro:
        varying = [f"{rel} normalized" for rel in repro.normalized] + [f"{rel} left out" for rel in repro.excluded]
        lines.append(f"  content:   digest {repro.content_digest[:16]}... ("
                     + ("files byte-identical across builds" if repro.byte_identical_expected else
                        "over what two builds share: " + ", ".join(varying)) + ")")
    lines.append(f"  numerics:  {numerics.status}" + (f" ({numerics.reason})" if numerics.reason else ""))
    if numerics.runner:
        lines.append(f"    runner: {numerics.runner}")
        lines.append(f"    inputs: {numerics.inputs}")
        tol = numerics.tolerance
        if tol is not None:
            lines.append(f"    tolerance: atol {tol.atol:g} + rtol {tol.rtol:g} x max|ref|, cosine >= {tol.min_cosine:g}")
        for o in numerics.outputs:
            sqnr = "exact" if o.sqnr_db is None else f"{o.sqnr_db:.1f} dB"
            lines.append(f"    {o.output}: cosine {o.cosine:.6f}, max|err| {o.max_abs_error:.3e} "
                         f"(max|ref| {o.max_abs_reference:.3g}), SQNR {sqnr}")
    if numerics.generation:
        lines += _generation_lines(numerics.generation)
    if numerics.structure:
        st = numerics.structure
        lines.append(f"    structure: {st.get('format')} spec v{st.get('specification_version')}, "
                     f"weights {', '.join(st.get('weight_dtypes', []))}, ops {json.dumps(st.get('op_histogram'))}")
    fusion = m.fusion or {}
    if fusion.get("passes"):
        from compiler.fusion_stage import fusion_summary

        lines.append(f"  fusion:    {fusion_summary(fusion)}")
        for p in fusion["passes"]:
            delta = ", ".join(f"{k} {v:+d}" for k, v in p.get("op_delta", {}).items())
            lines.append(f"    {p['name']:<16} fired {p.get('fired', 0):>3}  {p.get('seconds', 0):.3f} s"
                         + (f"  ({delta})" if delta else "") + (f"  numerics {p['numerics']}" if p.get("numerics") else ""))
    elif fusion:
        lines.append(f"  fusion:    not applied ({fusion.get('reason')})")
    if m.fallbacks:
        lines.append(f"  fallbacks: {len(m.fallbacks)} ops fall back to CPU: {', '.join(m.fallbacks[:6])}")
    for note in m.notes:
        lines.append(f"  note: {note}")
    for pkg, (built, now) in drift.items():
        lines.append(f"  WARNING: built with {pkg} {built}, this host has {now}: the artifact may not load here")
    return "\n".join(lines)


def _llm_lines(llm) -> list[str]:
    """A decoder LM's layout, cache and memory plan, as `chipfit inspect` shows it."""
    d, plan = llm.decoder, llm.memory_plan
    mib, gib = 2**20, 2**30
    sliding = (f"; sliding window {d.sliding_window} on layers {', '.join(map(str, d.sliding_layers))}"
               if d.sliding_window else "")
    capacity = f"{plan.capacity_bytes / gib:.2f} GiB" if plan.capacity_bytes else "unknown memory"
    return [
        f"  decoder:   {d.architecture} ({d.model_type}): {d.layers} layers, hidden {d.hidden_size}, {d.heads} heads, "
        f"vocab {d.vocab_size}, {d.parameters / 1e6:.1f} M parameters" + (", tied embeddings" if d.tied_embeddings else ""),
        f"  kv cache:  {d.layers} layers x {d.kv_heads} kv heads x {d.head_dim}"
        + (f"+{d.value_head_dim}" if d.value_head_dim != d.head_dim else "") + f" head dim x "
        f"{plan.kv_bytes_per_element} B = {d.kv_bytes_per_token(plan.kv_bytes_per_element) / 1024:.1f} KiB per token"
        + sliding,
        f"  form:      {llm.cache_form} cache, context {llm.context} tokens, programs {', '.join(llm.programs)}"
        + (f", prefill in chunks of {llm.prefill_chunk}" if llm.prefill_chunk else "") + f"; runs in {llm.runtime}",
        f"  weights:   " + ", ".join(f"{k} {v}" for k, v in llm.weight_precisions.items()),
        f"  memory:    weights {plan.weight_bytes / mib:.1f} MiB + KV cache {plan.kv_cache_bytes / mib:.1f} MiB "
        f"+ workspace {plan.workspace_bytes / mib:.1f} MiB = {plan.total_bytes / mib:.1f} MiB of {capacity} "
        f"({'fits' if plan.fits else 'DOES NOT FIT'}); largest context that fits: {plan.max_context_that_fits}"
        f" ({plan.basis})",
    ] + [f"  also:      {o['name']} form: {o['cache_form']} cache, programs {', '.join(o['programs'])}, runs in "
         f"{o['runtime']}; {o['numerics'].get('status')}: "
         f"{(o['numerics'].get('generation') or {}).get('summary') or o['numerics'].get('reason', '')}"
         for o in llm.other_forms] + (["  remote code: trusted (--trust-remote-code)"] if llm.trust_remote_code else [])


def _generation_lines(generation) -> list[str]:
    lines = [f"    generation: {generation.get('summary', '')}"]
    for step in generation.get("prompts", [])[:8]:
        lines.append(f"      prompt {step.get('prompt')!r}: {step.get('matched')} of {step.get('tokens')} greedy tokens "
                     f"equal the reference" + (f"; ties at steps {step['ties']}" if step.get("ties") else ""))
    return lines


# --- entry point -------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chipfit", description="Fit a trained model to target chips.")
    p.add_argument("--version", action="version", version=f"chipfit {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="show the toolchains' own warnings and logs")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("targets", help="list registered targets, show one, validate a spec file, or print the spec "
                                         "reference")
    t.add_argument("action", nargs="?", choices=("list", "show", "validate", "reference"), default="list")
    t.add_argument("target", nargs="?", help="target id (for show), or a spec file (for validate)")
    t.add_argument("--write", metavar="DOC", help="reference: replace the generated part of DOC (docs/targets.md)")
    t.add_argument("--json", action="store_true", help="machine-readable output")
    t.set_defaults(func=cmd_targets)

    b = sub.add_parser("build", help="trace, lower and verify a model for targets")
    b.add_argument("model", help="a .pt2 file, an .onnx file, a Hugging Face model folder, or 'example' (the bundled model)")
    b.add_argument("-t", "--target", action="append", required=True,
                   help="target id (repeat for several; 'all' for every registered target)")
    b.add_argument("-o", "--output", default="build", help="output folder (default: build)")
    add_arguments(b, BuildRequest)
    b.add_argument("--json", action="store_true", help="print the results as JSON")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    b.add_argument("--profile", action="store_true", help="profile every artifact after the build")
    b.add_argument("--dump-after", action="append", default=[], metavar="PASS",
                   help="write the graph after this pass to <output>/.dumps/ (repeatable)")
    b.add_argument("--dump-all", metavar="DIR", help="write the graph after every pass to DIR")
    b.add_argument("--html", help="with --profile: also write an HTML report with plots here")
    b.add_argument("--force", action="store_true",
                   help="replace an artifact of another precision already at build/<model>/<target>; build an --int8-weights "
                        "scheme the target's ISA does not compute exactly (verified with the target's arithmetic)")
    b.set_defaults(func=cmd_build)

    pr = sub.add_parser("profile", help="latency, memory and energy of artifacts: measured or estimated")
    pr.add_argument("path", help="an artifact, or a folder of them (e.g. build/)")
    _add_profile_options(pr)
    pr.add_argument("--json", action="store_true")
    pr.add_argument("-q", "--quiet", action="store_true")
    pr.set_defaults(func=cmd_profile)

    cmp = sub.add_parser("compare", help="compare profiles against a baseline (exit 1 on regression)")
    cmp.add_argument("baseline")
    cmp.add_argument("current")
    cmp.add_argument("--junit", help="write JUnit XML here (one test case per model x target x metric)")
    cmp.add_argument("--summary", help="write a Markdown summary here (e.g. a CI job summary)")
    cmp.add_argument("--threshold", action="append", default=[], metavar="METRIC=VALUE",
                     help="e.g. latency=1.05 (largest accepted ratio); accuracy=0.001 (largest cosine drop)")
    cmp.add_argument("--all", action="store_true", help="list every verdict, not only the non-ok ones")
    cmp.add_argument("--accept-removed", action="store_true",
                     help="cells the release no longer lists are intended removals, not failures")
    cmp.add_argument("--gate-estimated", action="store_true",
                     help="also gate estimated figures (energy without a meter) of cells whose speed was measured")
    cmp.set_defaults(func=cmd_compare)

    bl = sub.add_parser("baseline", help="accept current profiles as the new baseline")
    bl.add_argument("action", choices=("update",))
    bl.add_argument("current")
    bl.add_argument("baseline")
    bl.set_defaults(func=cmd_baseline)

    r = sub.add_parser("release", help="build, verify and profile every model x target of a release file, cached")
    r.add_argument("release", help="a release.toml (models, precisions, targets, thresholds)")
    r.add_argument("-o", "--output", default="dist", help="output folder (default: dist)")
    r.add_argument("-j", "--jobs", type=int, default=1, help="cells built at once, each in its own process (default 1); "
                   "with --executor dask and no --scheduler, the local cluster's workers")
    r.add_argument("--cache", help="build cache: a folder (default: $CHIPFIT_CACHE_DIR or ~/.cache/chipfit), or an "
                                   "fsspec URL (s3://bucket/prefix, file:///shared/cache) that every worker reaches")
    r.add_argument("--executor", choices=("local", "dask"), default="local",
                   help="where cache misses are built: worker processes here (default), or a Dask cluster "
                        "(pip install 'chipfit[dask]')")
    r.add_argument("--scheduler", help="--executor dask: the scheduler's address (tcp://host:8786); default: a "
                                       "local cluster of --jobs workers on 127.0.0.1")
    r.add_argument("--no-cache", action="store_true", help="build everything in a throwaway cache")
    r.add_argument("--check-reproducible", action="store_true",
                   help="build every cell a second time, outside the cache, and compare the artifacts")
    r.add_argument("--no-profile", action="store_true", help="skip profiling (the release file's [profile] also can)")
    r.add_argument("--cell-timeout", type=float, default=1800.0, help="seconds one cell may build (default 1800)")
    r.add_argument("--dry-run", action="store_true", help="list the cells and which are cached; build nothing")
    r.add_argument("--cache-max-gb", type=float,
                   help="after the release, prune the cache (least recently used first) to this size "
                        "(default: $CHIPFIT_CACHE_MAX_GB, else 10)")
    r.add_argument("--json", action="store_true", help="print dist/index.json")
    r.add_argument("-q", "--quiet", action="store_true")
    r.set_defaults(func=cmd_release)

    ca = sub.add_parser("cache", help="the release build cache: its size, or prune it")
    ca.add_argument("action", choices=("info", "prune"))
    ca.add_argument("--cache", help="cache folder (default: $CHIPFIT_CACHE_DIR or ~/.cache/chipfit)")
    ca.add_argument("--max-age-days", type=float, help="prune: remove entries unused for this long")
    ca.add_argument("--max-size-gb", type=float, help="prune: then remove least recently used entries down to this size")
    ca.set_defaults(func=cmd_cache)

    c = sub.add_parser("conformance", help="run the conformance kit against targets")
    c.add_argument("-t", "--target", action="append", required=True, help="target id (repeatable; 'all')")
    c.add_argument("--report", help="write the JSON report here")
    c.add_argument("--html", help="write an HTML summary here")
    c.add_argument("--markdown", help="write a Markdown table of pass rates here (docs/conformance.md is made so)")
    c.add_argument("--backend", help="test this backend of the target only (default: every backend it lists)")
    c.add_argument("--ops", type=int, help="run only the first N op tests")
    c.add_argument("--node-suite", action="store_true",
                   help="instead of the batteries: every case of ONNX's node suite (about 1900), each in a worker with "
                        "a time budget, beside ONNX Runtime run directly on the same cases")
    c.add_argument("--case-budget", type=float, default=60.0, metavar="S",
                   help="node suite: seconds a case may take before it is killed and counted as failed (default 60)")
    c.add_argument("--no-models", action="store_true", help="skip the model zoo (op, artifact and profile checks only)")
    c.add_argument("--llm", action="store_true", help="also the LLM battery: a decoder LM of every supported family")
    c.add_argument("--llm-families", metavar="A,B", help="only these families in the LLM battery (e.g. llama,gemma2)")
    c.add_argument("-q", "--quiet", action="store_true")
    c.set_defaults(func=cmd_conformance)

    g = sub.add_parser("generate", help="generate text with a decoder LM artifact (streams it, prints tok/s)")
    g.add_argument("path", help="an LLM artifact, e.g. build/<model>/host")
    g.add_argument("--prompt", required=True)
    g.add_argument("--max-new-tokens", type=int, default=64)
    g.add_argument("--ignore-eos", action="store_true", help="generate all tokens even past end-of-sequence")
    g.set_defaults(func=cmd_generate)

    tu = sub.add_parser("tune", help="tune a model's kernels for a target (TVM MetaSchedule); builds reuse the records")
    tu.add_argument("model", help="a .pt2 or .onnx file, or 'example'")
    tu.add_argument("-t", "--target", required=True, help="target id (its TVM target is what the records are for)")
    tu.add_argument("--trials", type=int, default=64, help="measurement trials over all kernels (default 64)")
    tu.add_argument("--input", action="append", default=[], metavar="NAME=SHAPE", help="as for chipfit build")
    tu.add_argument("--rpc", metavar="HOST:PORT", help="TVM RPC tracker: time the kernels on the device it serves")
    tu.add_argument("--key", help="device key on the tracker (default: the target's rpc_key)")
    tu.add_argument("-q", "--quiet", action="store_true")
    tu.set_defaults(func=cmd_tune)

    from compiler.isolated.commands import add_parser as add_toolchain_parser

    add_toolchain_parser(sub)

    i = sub.add_parser("inspect", help="describe an artifact (or every artifact under a folder), or a model's inputs")
    i.add_argument("path", help="an artifact or a folder of them; or a model (.pt2, .onnx, a model folder, 'example')")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_inspect)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "targets" and args.action in ("show", "validate") and not args.target:
        parser().error(f"targets {args.action} needs a target id (show) or a spec file (validate)")
    output = getattr(args, "output", None)
    log = Path(output) / "chipfit.log" if output else None
    quiet_libraries(verbose=args.verbose, log_path=log)
    try:
        with native_stderr_to(log, args.verbose):
            return args.func(args)
    except (UsageError, TargetError) as exc:
        print(f"chipfit: error: {exc}", file=sys.stderr)
        return 2
    except ChipfitError as exc:
        print(f"chipfit: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("chipfit: interrupted; no partial artifact was left in place", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
