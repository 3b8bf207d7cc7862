"""``chipfit conformance``: the conformance kit for a target."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from compiler.cli.text import table



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
        print(table(("stage", "reached", "failed", "not run here", "pass rate"), rows))
        for o in data["outcomes"]:
            if not o["passed"]:
                print(f"  {o['stage']:<9} {o['backend']:<12} {o['kind']:<8} {o['item']} {o['precision']}: "
                      f"{o['message'][:160]}")
        if data["not_run"]:
            why = next(o["message"] for o in data["outcomes"] if not o["ran"])
            print(f"  not run here: {data['not_run']} lowered artifact(s), e.g. {why[:160]}")
        if data["unsupported_ops"]:
            print(f"  ops a backend cannot lower: {', '.join(data['unsupported_ops'])}")
        for backend in report.backends:
            placed: dict[str, list[str]] = {}
            for o in data["outcomes"]:
                if o["backend"] == backend and o.get("placement"):
                    placed.setdefault(o["placement"], []).append(o["item"].removeprefix("test_"))
            if placed:
                print(f"  op placement ({backend}): " + "; ".join(
                    f"{where} {len(items)}" + (f" ({', '.join(items[:8])}{' ...' if len(items) > 8 else ''})"
                                               if where != "accelerator" else "")
                    for where, items in placed.items()))
        for note in data["notes"]:
            print(f"  note: {note}")
    return 0 if all(r.failed == 0 for r in reports) else 1
