"""The ``chipfit`` command line.

    chipfit targets [--json]                 registered targets
    chipfit targets show ID [--json]         one target: backend, options, figures with sources
    chipfit build MODEL -t T [-t T ...]      trace, lower, verify; exit 0 only if every artifact verified
    chipfit inspect PATH [--json]            an artifact: what it is, its manifest, its numerics
    chipfit generate PATH --prompt TEXT      a decoder LM artifact generates text (streamed), with tok/s
                     [--image F ...]         ... from images too (a vision-language artifact; <image> in the prompt)
    chipfit plan MODEL -t T [-t T ...]       a decoder's memory plan, TTFT, tok/s and J/token per target, unbuilt
    chipfit release RELEASE.toml -o dist/    every model x target of a release, cached, verified, profiled
    chipfit compare BASELINE CURRENT         regressions beyond threshold and noise (exit 1)
    chipfit cache info|prune                 the release build cache

Exit codes: 0 success, 1 a build or verification failed, 2 bad input (file, option, target).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from compiler import __version__
from compiler.errors import ChipfitError, UsageError
from compiler.logs import native_stderr_to, quiet_libraries
from compiler.options import add_arguments
from targets.request import BuildRequest
from targets.spec import TargetError
from compiler.cli.build import cmd_build
from compiler.cli.compare import cmd_baseline, cmd_compare
from compiler.cli.conformance import cmd_conformance
from compiler.cli.generate import cmd_generate
from compiler.cli.inspect import cmd_inspect
from compiler.cli.plan import PROMPT_TOKENS, cmd_plan
from compiler.cli.profile import add_profile_options, cmd_profile
from compiler.cli.release import cmd_cache, cmd_release
from compiler.cli.targets import cmd_targets
from compiler.cli.tune import cmd_tune



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
    add_profile_options(pr)
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
    g.add_argument("--image", action="append", default=[], metavar="FILE",
                   help="an image for a vision-language artifact (repeatable); the prompt marks where each goes "
                        "with <image>, e.g. --prompt '<image> What is in this picture?'")
    g.set_defaults(func=cmd_generate)

    pl = sub.add_parser("plan", help="estimate a decoder LM per target before building: memory plan, TTFT, prefill and "
                                     "decode tok/s, J/token (from its config and safetensors headers; nothing loaded)")
    pl.add_argument("model", help="a Hugging Face model folder, or its config.json alone")
    pl.add_argument("-t", "--target", action="append", required=True, help="target id (repeatable), or 'all'")
    pl.add_argument("--precision", help="the precision to plan (default: each target's default)")
    pl.add_argument("--context", type=int, help="tokens the KV cache holds (default: as a build plans it)")
    pl.add_argument("--prompt-tokens", type=int, default=PROMPT_TOKENS, help="prompt length for TTFT (default 128)")
    pl.add_argument("--trust-remote-code", action="store_true", help="accept a config whose model ships its own code")
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=cmd_plan)

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
