"""ONNX Runtime backend: an optimized ONNX model (and `.ort`) plus its execution provider configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from compiler.backends import BACKEND_API_VERSION, BackendBase, Lowered, Normalizer, RunPlan, package_version
from compiler.backends.onnxruntime.options import SCHEMA
from compiler.traced import TracedModel
from targets.host import HostInfo
from targets.signature import Signature
from targets.spec import TargetSpec


class OnnxRuntimeBackend(BackendBase):
    name = "onnxruntime"
    api_version = BACKEND_API_VERSION
    SCHEMA = SCHEMA
    consumes = "onnx"
    precisions = ("fp32", "fp16", "int8", "int4")
    graph_precisions = ("fp16", "int8", "int4")
    program_precisions = ()
    symbolic_dims = True
    accepted_domains = ("com.microsoft",)

    def lowers_onnx(self, model: TracedModel, precision: str) -> bool:
        return True

    def versions(self) -> dict[str, str]:
        return {"onnxruntime": package_version("onnxruntime"), "onnx": package_version("onnx")}

    def lower(self, model: TracedModel, target: TargetSpec, precision: str, workdir: Path) -> Lowered:
        from compiler.backends.onnxruntime import lower as _lower

        return _lower.lower(model, target, precision, workdir, self.SCHEMA.resolve(target))

    def plan_run(self, artifact_dir: Path, options: Mapping[str, Any], signature: Signature, target: TargetSpec,
                 host: HostInfo) -> RunPlan:
        from compiler.backends.onnxruntime import runner as _runner

        return _runner.plan_run(artifact_dir, options, target, host)

    def normalizers(self) -> Mapping[str, Normalizer]:
        # Found by the conformance kit's determinism check: ONNX Runtime's ORT-format writer lays its
        # flatbuffer tables out in an order that varies per build.
        return {"model.ort": (None, "ORT-format flatbuffer: table layout varies per build; generated from "
                                    "model.onnx, which is covered")}


backend = OnnxRuntimeBackend()
