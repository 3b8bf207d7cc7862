"""The MyNPU backend: the backend protocol (`targets.backend.Backend`, re-exported by `compiler.backends`).

A real vendor replaces `_compile` with its compiler (ONNX in, a binary out) and `MyNpuRunner`
with its runtime's Python binding. The template uses ONNX Runtime's CPU provider for both, so it
builds, runs and passes chipfit's conformance kit anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnx
import onnxruntime as ort

from compiler.backends import (BACKEND_API_VERSION, BackendBase, Capabilities, Lowered, LowerJob, NotRunnable,
                               OptionField, OptionSchema, RunnerBase, RunPlan, host_mismatch)
from compiler.frontend.onnx_file import signature_from_onnx
from targets.model import TracedModel
from targets.host import HostInfo
from targets.signature import Signature
from targets.spec import TargetSpec

SCHEMA = OptionSchema("my-npu-runtime", {"compiler_level": OptionField(int, choices=(0, 1, 2), default=2)})
_LEVELS = {0: ort.GraphOptimizationLevel.ORT_DISABLE_ALL, 1: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
           2: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED}


class MyNpuRunner(RunnerBase):
    def __init__(self, path: Path) -> None:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.description = f"MyNPU runtime (template: onnxruntime {ort.__version__} CPU)"

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self._session.get_outputs()]
        feeds = {i.name: inputs[i.name] for i in self._session.get_inputs()}
        return dict(zip(names, self._session.run(names, feeds)))


class MyNpuBackend(BackendBase):
    """Subclassing `BackendBase` gives the defaults: options checked against ``options_schema``, no files that vary
    between builds, and a fingerprint (this package's version and a digest of this folder) for the build cache.
    What only some backends do (decoder LMs, tuning, a device runner, ...) is an optional protocol of
    `targets.backend`, claimed in ``capabilities`` and checked when chipfit loads the plugin."""

    name = "my-npu-runtime"
    api_version = BACKEND_API_VERSION
    options_schema = SCHEMA
    capabilities = Capabilities(
        consumes="onnx", precisions=("fp32", "int8"),
        graph_precisions=("int8",),  # chipfit's precision stage hands over the QDQ graph
        symbolic_dims=True,
        accepted_domains=(),  # standard ONNX ops only: contrib fusions are skipped for this backend
        compute_unit="npu")  # estimates use the spec's [hardware.units.<name>] of this kind, where it declares units

    def versions(self) -> dict[str, str]:
        return {"onnxruntime": ort.__version__, "my-npu-compiler": "0.1.0 (template)"}

    def lowers_onnx(self, model: TracedModel, precision: str) -> bool:
        return True

    def lower(self, job: LowerJob) -> Lowered:
        """``job`` carries the model, the target, the precision, this backend's resolved options, the whole build
        request and the build's data (calibration samples for a precision the backend quantizes itself)."""
        model, precision, workdir, options = job.model, job.precision, job.workdir, dict(job.options)
        source = workdir / "input.onnx"
        onnx.save(model.onnx_model, source)
        session_options = ort.SessionOptions()
        session_options.graph_optimization_level = _LEVELS[options["compiler_level"]]
        session_options.optimized_model_filepath = str(workdir / "model.mynpu.onnx")
        ort.InferenceSession(str(source), session_options, providers=["CPUExecutionProvider"])  # "compile"
        source.unlink()
        (workdir / "mynpu.json").write_text(json.dumps({"compiler_level": options["compiler_level"],
                                                       "precision": precision}, indent=2) + "\n")
        compiled = onnx.load(str(workdir / "model.mynpu.onnx"))
        return Lowered(files=("model.mynpu.onnx", "mynpu.json"), signature=signature_from_onnx(compiled),
                       options=options, passes=tuple(model.passes) + ({"name": "mynpu-compile", **options},))

    def plan_run(self, artifact_dir: Path, options: Mapping[str, Any], signature: Signature, target: TargetSpec,
                 host: HostInfo) -> RunPlan:
        why = host_mismatch(target, host)
        if why:
            raise NotRunnable(why)
        return RunPlan(MyNpuRunner(artifact_dir / "model.mynpu.onnx"))


backend = MyNpuBackend()
