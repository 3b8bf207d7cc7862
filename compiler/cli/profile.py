"""``chipfit profile``: measure or estimate built artifacts, and the options every profiling command shares."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from compiler.errors import UsageError
from compiler.options import add_arguments, values_from_arguments
from targets.request import BuildRequest, ModelSource, ProfileRequest, set_options
from compiler.cli.text import table



def _profile_options(args: argparse.Namespace) -> ProfileRequest:
    return set_options(ProfileRequest(), values_from_arguments(args, ProfileRequest))



def run_profiles(root: Path, args: argparse.Namespace, progress) -> int:
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
            print(table(TABLE_HEADERS, graphs))
            print("\nlatency/energy columns say measured:<runner> or estimated:<model>; est/meas = estimate / measurement.")
            print(fit_text(run.fit))
        if decoders:
            print(("\n" if graphs else "") + table(LLM_HEADERS, decoders))
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
        image = p.llm.get("image")
        if image and image.get("pixels"):
            energy = (image.get("energy") or {}).get("j_per_image")
            print(f"{p.target} {p.backend} {p.precision}: an image of {image['pixels'][1]}x{image['pixels'][0]} pixels "
                  f"({image['tokens']} tokens): encoded in {image['encode_ms_p50']:.1f} ms, time to first token "
                  f"{image['ttft_ms_p50']:.1f} ms with it, decode {_fmt_rate(image['decode_tok_s'])} tok/s after it"
                  + (f", {energy:.3f} J per image (measured)" if energy is not None else ""))
        elif image:
            print(f"{p.target} {p.backend} {p.precision}: an image of {image['tokens']} tokens (estimated:"
                  f"{p.llm.get('method', '').split(':')[-1]}): encode {_fmt_ms(image['encode_ms_p50'])} ms, time to "
                  f"first token {_fmt_ms(image['ttft_ms_p50'])} ms with it, {image['j_per_image']:.4f} J per image")
        sustained = p.llm.get("sustained")
        if sustained:
            print(f"{p.target} {p.backend} {p.precision}: sustained {len(sustained['runs'])} generations: first "
                  f"{_fmt_rate(sustained['first_decode_tok_s'])} tok/s, steady {_fmt_rate(sustained['steady_decode_tok_s'])} "
                  f"tok/s, spread {sustained['spread_pct']:.1f}%")



def _fmt_ms(value) -> str:
    return "-" if value is None else f"{value:.1f}"


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
    return run_profiles(path, args, progress)



def add_profile_options(p: argparse.ArgumentParser) -> None:
    add_arguments(p, ProfileRequest)
    p.add_argument("--html", help="also write an HTML report with plots here")
