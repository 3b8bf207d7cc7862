"""``chipfit build``: one model for several targets, and the table, choices, fusion and quantization lines it prints."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from compiler.errors import UsageError
from compiler.options import values_from_arguments
from targets.request import BuildRequest, ModelSource
from compiler.cli.profile import run_profiles
from compiler.cli.text import size, table



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
        model = load_model(args.model, overrides, trust_remote_code=bool(settings.get("trust_remote_code")),
                           task=settings.get("task"))
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
            rows.append((r.target, r.backend, r.precision, size(r.size_bytes) if r.size_bytes else "-",
                         f"{r.build_seconds:.2f}", latency,
                         r.numerics.summary() if r.numerics else f"ERROR: {r.message}"))
        print(f"\n{model.name} ({model.source}) -> {Path(args.output) / model.name}")
        print(table(("target", "backend", "precision", "size", "build s", "host ms p50", "numerics"), rows))
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
        code = max(code, run_profiles(Path(args.output) / model.name, args, progress))
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



def accuracy_text(acc: dict) -> str:
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
        lines.append(f"\n{q['settings'].get('precision', r.precision)} ({settings}) for {', '.join(dict.fromkeys(targets))}:")
        lines.append(f"  {accuracy_text(q['accuracy'])}")
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
