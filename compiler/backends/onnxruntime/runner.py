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

    def __init__(self, model_path: Path, provider: str, provider_options: Mapping[str, Any], threads: int = 0) -> None:
        self._model_path, self._provider, self._provider_options = model_path, provider, dict(provider_options)
        self.session = self._session(threads)
        self.description = f"onnxruntime {ort.__version__} {provider} on this host ({model_path.name})"
        self._outputs = [o.name for o in self.session.get_outputs()]

    def _session(self, threads: int, profile: bool = False) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # As an application loads the artifact: the runtime's default session options (ORT_ENABLE_ALL), so its
        # layout-specific kernels (NCHWc) apply here exactly as they will in the user's process.
        if threads:
            options.intra_op_num_threads = threads
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


def plan_run(artifact_dir: Path, options: Mapping[str, Any], target: TargetSpec, host: HostInfo) -> RunPlan:
    provider = options["execution_provider"]
    model = artifact_dir / ("model.ort" if options.get("ort_format") else "model.onnx")
    if not model.exists():
        raise NotRunnable(f"{model} is missing")
    mismatch = host_mismatch(target, host)
    available = ort.get_available_providers()
    if mismatch is None and provider in available:
        return RunPlan(OrtRunner(model, provider, options.get("provider_options", {})))
    # The ONNX graph is portable: run it on the CPU provider and say that it is a proxy.
    why = mismatch or f"{provider} is not in this onnxruntime build (has {', '.join(available)})"
    return RunPlan(
        OrtRunner(artifact_dir / "model.onnx", "CPUExecutionProvider", {}),
        proxy=True,
        note=f"proxy: the {provider} artifact's graph run on this host's CPUExecutionProvider ({why})",
    )
