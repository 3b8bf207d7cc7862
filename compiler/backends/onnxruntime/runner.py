"""Run an ONNX Runtime artifact on this machine, on its own provider or the CPU provider as a stated proxy."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnxruntime as ort

from compiler.backends import NotRunnable, RunPlan, host_mismatch
from targets.host import HostInfo
from targets.spec import TargetSpec


class OrtRunner:
    def __init__(self, model_path: Path, provider: str, provider_options: Mapping[str, Any]) -> None:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # The artifact is already optimized; do not let this host's CPU rewrite it again.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        providers = [(provider, dict(provider_options))] if provider != "CPUExecutionProvider" else [provider]
        self.session = ort.InferenceSession(str(model_path), options, providers=providers)
        self.description = f"onnxruntime {ort.__version__} {provider} on this host ({model_path.name})"
        self._outputs = [o.name for o in self.session.get_outputs()]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {i.name: inputs[i.name] for i in self.session.get_inputs()}
        return dict(zip(self._outputs, self.session.run(self._outputs, feeds)))


def plan_run(artifact_dir: Path, manifest: Mapping[str, Any], target: TargetSpec, host: HostInfo) -> RunPlan:
    options = manifest["backend"]["options"]
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
