"""Run an ONNX Runtime artifact on this machine, on its own provider or the CPU provider as a stated proxy."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnxruntime as ort

from compiler.backends import NotRunnable, RunnerBase, RunPlan, host_mismatch
from targets.host import HostInfo
from targets.spec import TargetSpec


class OrtRunner(RunnerBase):
    per_op_source = "onnxruntime profiler"

    def __init__(self, model_path: Path, provider: str, provider_options: Mapping[str, Any], threads: int = 0,
                 as_written: bool = False) -> None:
        self._model_path, self._provider, self._provider_options = model_path, provider, dict(provider_options)
        self._as_written = as_written
        self.session = self._session(threads)
        self.description = (f"onnxruntime {ort.__version__} {provider} on this host ({model_path.name}"
                            + (", graph optimizations off: Q/DQ as written)" if as_written else ")"))
        self._outputs = [o.name for o in self.session.get_outputs()]

    def _session(self, threads: int, profile: bool = False) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # As an application loads the artifact: the runtime's default session options (ORT_ENABLE_ALL), so its
        # layout-specific kernels (NCHWc) apply here exactly as they will in the user's process.
        if threads:
            options.intra_op_num_threads = threads
        if self._as_written:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.enable_profiling = profile
        provider = self._provider
        providers = [(provider, self._provider_options)] if provider != "CPUExecutionProvider" else [provider]
        return ort.InferenceSession(str(self._model_path), options, providers=providers)

    def set_threads(self, threads: int) -> bool:
        self.session = self._session(threads)
        return True

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {i.name: inputs[i.name] for i in self.session.get_inputs()}
        return dict(zip(self._outputs, self.session.run(self._outputs, feeds)))

    def profile_ops(self, inputs: Mapping[str, np.ndarray], runs: int = 5) -> list[dict[str, Any]]:
        """Mean kernel time per graph node from ONNX Runtime's profiler, slowest first."""
        import json
        import os

        session = self._session(self.session.get_session_options().intra_op_num_threads, profile=True)
        feeds = {i.name: inputs[i.name] for i in session.get_inputs()}
        for _ in range(runs):
            session.run(None, feeds)
        trace = Path(session.end_profiling())
        try:
            events = json.loads(trace.read_text())
        finally:
            os.unlink(trace)
        per_node: dict[str, dict[str, Any]] = {}
        for event in events:
            if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
                continue
            node = event["name"][: -len("_kernel_time")]
            row = per_node.setdefault(node, {"node": node, "op": event.get("args", {}).get("op_name", "?"), "total_us": 0.0})
            row["total_us"] += float(event.get("dur", 0))
        rows = [{**r, "mean_us": r.pop("total_us") / runs} for r in per_node.values()]
        return sorted(rows, key=lambda r: -r["mean_us"])


class EmulatedRunner(RunnerBase):
    """The artifact's QDQ graph computed with the target's int8 arithmetic (`compiler.arithmetic`)."""

    def __init__(self, model_path: Path) -> None:
        import onnx

        from compiler.arithmetic import EmulatedGraph

        self._graph = EmulatedGraph(onnx.load(str(model_path)))
        self.description = (f"chipfit's emulation of x86 int16-pair int8 arithmetic ({model_path.name}: int8 layers "
                            "in numpy, the other ops in ONNX's reference evaluator)")

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._graph.run(inputs)


def _arithmetic_plan(model_path: Path, provider: str, target: TargetSpec, host: HostInfo, proxy: bool
                     ) -> RunPlan | None:
    """The execution that computes what the target computes, where the artifact's own runtime here would not
    (None where it does): where the two int8 arithmetics differ on some layer of the graph, and for every proxy run
    of an int8 graph for an exact chip (an NPU), so that the verdict is the same on every host kind."""
    import onnx

    from compiler.arithmetic import EMULATED, QDQ, execution_for, has_int8_layers
    from targets.isa import ARITHMETIC, EXACT

    ours, theirs = host.isa.int8_arithmetic, target.isa.int8_arithmetic
    if not model_path.exists() or (ours == theirs and not (proxy and theirs == EXACT)):
        return None
    graph = onnx.load(str(model_path))
    execution = execution_for(graph, theirs, ours)
    if proxy and theirs == EXACT and has_int8_layers(graph):
        execution = QDQ
    why = (f"target {target.id} ({target.isa.label}): {ARITHMETIC[theirs]}; this host ({host.isa.label}): "
           f"{ARITHMETIC[ours]}")
    if execution == QDQ:
        return RunPlan(OrtRunner(model_path, "CPUExecutionProvider", {}, as_written=True), proxy=True,
                       note=f"proxy: the {provider} artifact's graph with Q/DQ run as written on this host's "
                            f"CPUExecutionProvider ({why})", execution=QDQ)
    if execution == EMULATED:
        return RunPlan(EmulatedRunner(model_path), proxy=True,
                       note=f"proxy: the {provider} artifact's graph with the target's int8 arithmetic emulated ({why})",
                       execution=EMULATED)
    return None


def plan_run(artifact_dir: Path, options: Mapping[str, Any], target: TargetSpec, host: HostInfo) -> RunPlan:
    provider = options["execution_provider"]
    model = artifact_dir / ("model.ort" if options.get("ort_format") else "model.onnx")
    if not model.exists():
        raise NotRunnable(f"{model} is missing")
    mismatch = host_mismatch(target, host)
    available = ort.get_available_providers()
    proxy = mismatch is not None or provider not in available
    arithmetic = _arithmetic_plan(artifact_dir / "model.onnx", provider, target, host, proxy)
    if arithmetic is not None:
        return arithmetic
    if mismatch is None and provider in available:
        return RunPlan(OrtRunner(model, provider, options.get("provider_options", {})))
    # The ONNX graph is portable: run it on the CPU provider and say that it is a proxy.
    why = mismatch or f"{provider} is not in this onnxruntime build (has {', '.join(available)})"
    return RunPlan(
        OrtRunner(artifact_dir / "model.onnx", "CPUExecutionProvider", {}),
        proxy=True,
        note=f"proxy: the {provider} artifact's graph run on this host's CPUExecutionProvider ({why})",
    )
