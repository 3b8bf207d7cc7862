"""The whole ONNX node suite (every case `onnx.backend.test.case.node.collect_testcases()` gives) against a
target's backend, each case with a time budget, beside ONNX Runtime run directly on the same cases.

    chipfit conformance -t host --node-suite [--case-budget 60] --report suite.json --markdown suite.md

Cases run one after another in a worker process: a case that hangs past its budget, or crashes the process,
is killed with its worker and recorded as a failure at the stage it had reached (a fresh worker takes the
next case), so the sweep always finishes with every case classified. The direct run is the baseline a
chipfit ONNX Runtime target is held to: chipfit's passes and precision rewrites must not lose a case that the
runtime itself passes.
"""

from __future__ import annotations

import multiprocessing
import tempfile
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from compiler.conformance import Outcome, Report, load_backends

DEFAULT_CASE_BUDGET_S = 60.0


def node_case_names() -> list[str]:
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sorted(c.name for c in collect_testcases())


def runtime_direct(case, tolerance) -> tuple[bool, str]:
    """The case run by ONNX Runtime's CPU provider as the runtime loads it (default options), checked with the
    target's tolerance: (passed, why not)."""
    import onnxruntime as ort

    from calibration import compare_outputs
    from compiler.verify import within

    inputs_list, outputs_list = case.data_sets[0]
    graph = case.model.graph
    initializers = {i.name for i in graph.initializer}
    names = [i.name for i in graph.input if i.name not in initializers]
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 4
        session = ort.InferenceSession(case.model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        got = session.run(None, {n: np.asarray(a) for n, a in zip(names, inputs_list)})
    except Exception as exc:
        return False, f"{type(exc).__name__}: {str(exc)[:200]}"
    outputs = [o.name for o in graph.output]
    try:
        errors = compare_outputs({n: np.asarray(a).astype(np.float64) for n, a in zip(outputs, outputs_list)},
                                 dict(zip(outputs, got)))
        bad = [e for e in errors if not within(e, tolerance)]
    except Exception as exc:
        return False, f"outputs not comparable: {type(exc).__name__}: {str(exc)[:160]}"
    return (not bad), ", ".join(f"{e.output}: max|err| {e.max_abs_error:.3g}" for e in bad)


def _worker(conn, target_id: str, backend_name: str, workdir: str, direct: bool) -> None:
    """Serve cases by name: for each, the stage markers as it goes, then its outcomes and the direct run."""
    from onnx.backend.test.case.node import collect_testcases

    from compiler.build import BuildContext
    from compiler.conformance import precision_for_ops, run_op_battery

    ctx = BuildContext()
    target = ctx.targets.get(target_id)
    backend = ctx.backends.get(backend_name)
    tolerance = target.tolerance(precision_for_ops(target, backend))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = {c.name: c for c in collect_testcases()}
    conn.send(("ready", None))
    while True:
        name = conn.recv()
        if name is None:
            return
        case = cases[name]
        report = Report(target.id, [backend.name])
        run_op_battery(target, backend, Path(workdir), report, (name,),
                       lambda m: conn.send(("stage", m[6:])) if m.startswith("stage ") else None, cases=[case])
        baseline = runtime_direct(case, tolerance) if direct else None
        conn.send(("done", ([asdict(o) for o in report.outcomes], report.unsupported_ops, report.notes, baseline)))


class _Worker:
    def __init__(self, target_id: str, backend: str, workdir: Path, direct: bool) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker, args=(child, target_id, backend, str(workdir), direct),
                                       daemon=True)
        self.process.start()
        child.close()
        if not self.conn.poll(300) or self.conn.recv()[0] != "ready":
            self.kill()
            raise RuntimeError("the node-suite worker did not start")

    def kill(self) -> None:
        self.process.kill()
        self.process.join(10)
        self.conn.close()


def sweep(target_id: str, backend: str | None = None, names: Sequence[str] | None = None,
          budget_s: float = DEFAULT_CASE_BUDGET_S, direct: bool = True,
          progress: Callable[[str], None] = lambda m: None, ctx=None) -> list[Report]:
    """One report per backend of the target (or ``backend``): every case (or ``names``) classified by stage,
    and, where ``direct``, the notes comparing it with ONNX Runtime run directly on the same cases."""
    from compiler.build import BuildContext

    ctx = ctx or BuildContext()
    target = ctx.targets.get(target_id)
    names = list(names) if names is not None else node_case_names()
    reports = []
    for backend_obj in load_backends(target, ctx, backend):
        reports.append(_sweep_backend(target.id, backend_obj, names, budget_s, direct, progress))
    return reports


def _sweep_backend(target_id: str, backend, names: Sequence[str], budget_s: float, direct: bool,
                   progress: Callable[[str], None]) -> Report:
    report = Report(target_id, [backend.name])
    runtime_passes: dict[str, bool] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"chipfit-node-suite-{target_id}-") as tmp:
        worker: _Worker | None = None
        try:
            for n, name in enumerate(names, 1):
                if worker is None:
                    worker = _Worker(target_id, backend.name, Path(tmp), direct)
                if n % 50 == 0:
                    progress(f"node suite {target_id} ({backend.name}): {n}/{len(names)} cases, "
                             f"{time.monotonic() - started:.0f} s")
                worker.conn.send(name)
                stage, deadline, result = "LOAD", time.monotonic() + budget_s, None
                while result is None:
                    left = deadline - time.monotonic()
                    try:
                        if left <= 0 or not worker.conn.poll(left):
                            break
                        kind, payload = worker.conn.recv()
                    except (EOFError, OSError):
                        break
                    if kind == "stage":
                        stage = payload
                    else:
                        result = payload
                if result is None:
                    code = worker.process.exitcode
                    worker.kill()
                    worker = None
                    why = (f"the worker died (exit {code}) in this case" if code is not None
                           else f"no result within the {budget_s:g} s budget (killed)")
                    report.outcomes.append(Outcome(name, "op", False, stage, why, "", backend.name))
                    continue
                outcomes, unsupported, notes, baseline = result
                if notes and not outcomes:  # the backend takes no ONNX graphs: one note, no cases
                    report.notes += notes
                    break
                report.outcomes += [Outcome(**o) for o in outcomes]
                report.unsupported_ops += unsupported
                if baseline is not None:
                    runtime_passes[name] = baseline[0]
        finally:
            if worker is not None:
                try:
                    worker.conn.send(None)
                except OSError:
                    pass
                worker.kill()
    report.unsupported_ops = sorted(set(report.unsupported_ops))
    if runtime_passes:
        report.notes.append(runtime_note(report, runtime_passes))
        report.runtime_direct = runtime_passes
    return report


def runtime_note(report: Report, runtime_passes: dict[str, bool]) -> str:
    passed_direct = {n for n, ok in runtime_passes.items() if ok}
    ours = {o.item for o in report.outcomes if o.passed and o.ran}
    not_run = {o.item for o in report.outcomes if o.passed and not o.ran}
    lost = sorted(passed_direct - ours - not_run)
    gained = sorted(ours - passed_direct)
    return (f"ONNX Runtime {_ort_version()} run directly (CPU provider, default options) passes "
            f"{len(passed_direct)} of {len(runtime_passes)} cases; through chipfit's {report.backends[0]} artifacts "
            f"{len(ours)} pass, {len(not_run)} not run here; lost against the direct run: "
            f"{len(lost)}{' (' + ', '.join(lost[:30]) + (', ...' if len(lost) > 30 else '') + ')' if lost else ''}; "
            f"passing only through chipfit: {len(gained)}")


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def lost_cases(report: Any) -> list[str]:
    """Cases ONNX Runtime passes directly that fail through chipfit's artifact (``report``: a Report or its dict)."""
    data = report if isinstance(report, dict) else report.to_dict()
    direct = data.get("runtime_direct") or {}
    ok = {o["item"] for o in data["outcomes"] if o["passed"]}
    return sorted(n for n, passed in direct.items() if passed and n not in ok)


def summary_markdown(reports: Sequence[dict[str, Any]]) -> str:
    """The sweep for the docs: per backend its pass rates by stage, then, for each stage, the ops whose cases
    failed there (how many cases), and the comparison with ONNX Runtime run directly."""
    from onnx.backend.test.case.node import collect_testcases

    from compiler.conformance import STAGES

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        op_of = {c.name: (c.model.graph.node[0].op_type if c.model.graph.node else "?") for c in collect_testcases()}
    stages = [s for s in STAGES if s != "PROFILE"]
    lines = ["| target | backend | passed | failed | not run here | " + " | ".join(stages) + " |",
             "|---|---|---|---|---|" + "---|" * len(stages)]
    for r in reports:
        rates = " | ".join("-" if r["stages"][s]["pass_rate"] is None else f"{r['stages'][s]['pass_rate'] * 100:.1f}%"
                           for s in stages)
        lines.append(f"| {r['target']} | {', '.join(r['backends'])} | {r['passed']}/{r['total']} | {r['failed']} | "
                     f"{r['not_run']} | {rates} |")
    lines.append("")
    for r in reports:
        lines += [f"**{r['target']} ({', '.join(r['backends'])})**", ""]
        lines += [f"- {note}" for note in r.get("notes", [])]
        for stage in stages:
            failed: dict[str, int] = {}
            for o in r["outcomes"]:
                if not o["passed"] and o["stage"] == stage:
                    op = op_of.get(o["item"], "?")
                    failed[op] = failed.get(op, 0) + 1
            if failed:
                ops = ", ".join(f"{op} ({n})" if n > 1 else op for op, n in sorted(failed.items()))
                lines.append(f"- failed at {stage}, {sum(failed.values())} cases: {ops}")
        lines.append("")
    return "\n".join(lines)
