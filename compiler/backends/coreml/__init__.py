"""Core ML backend: an `.mlpackage` ML program from the torch program, compute units from the target."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from compiler.backends import (BACKEND_API_VERSION, BackendBase, GenerationPlan, Lowered, Normalizer, NotRunnable,
                               RunPlan, package_version)
from compiler.backends.coreml.options import SCHEMA
from compiler.traced import TracedModel
from targets.host import HostInfo
from targets.signature import Signature
from targets.spec import TargetSpec


class CoreMLBackend(BackendBase):
    name = "coreml"
    api_version = BACKEND_API_VERSION
    SCHEMA = SCHEMA
    consumes = "torch"
    precisions = ("fp32", "fp16", "int8")
    graph_precisions = ()  # fp16 is coremltools' compute_precision on the torch program
    program_precisions = ("int8",)  # W8A8 from the PT2E-quantized torch program
    symbolic_dims = False  # flexible shapes need enumerated ranges; static shapes are what the ANE runs best
    accepted_domains = ()

    def lowers_onnx(self, model: TracedModel, precision: str) -> bool:
        return False  # converts the torch program; Core ML's own compiler fuses for the Neural Engine

    def versions(self) -> dict[str, str]:
        return {"coremltools": package_version("coremltools")}

    def lower(self, model: TracedModel, target: TargetSpec, precision: str, workdir: Path) -> Lowered:
        from compiler.backends.coreml import lower as _lower

        return _lower.lower(model, target, precision, workdir, self.SCHEMA.resolve(target))

    def plan_run(self, artifact_dir: Path, options: Mapping[str, Any], signature: Signature, target: TargetSpec,
                 host: HostInfo) -> RunPlan:
        import platform

        if platform.system() != "Darwin":
            raise NotRunnable(
                "Core ML runs predictions only on macOS/iOS; the saved program's structure was validated instead"
            )
        from compiler.backends.coreml.runner import CoreMLRunner

        return RunPlan(CoreMLRunner(artifact_dir / "model.mlpackage", options, signature))

    # Decoder LMs: a stateful multifunction ML program (compiler/backends/coreml/decoder.py).
    decoder_precisions = ("fp32", "fp16", "int8", "int4")
    decoder_families = ("llama", "qwen2", "qwen3", "phi3", "gemma2", "gemma3_text", "mistral", "minicpm3")

    def lower_decoder(self, model, target: TargetSpec, precision: str, workdir: Path, context: int,
                      prefill_chunk: int | None) -> Lowered:
        from compiler.backends.coreml.decoder import lower_decoder

        return lower_decoder(model, target, precision, workdir, context, prefill_chunk, self.SCHEMA.resolve(target))

    def plan_generate(self, artifact_dir: Path, options: Mapping[str, Any], target: TargetSpec,
                      host: HostInfo, form: str = "main") -> GenerationPlan:
        raise NotRunnable("Core ML runs programs only on macOS/iOS; the package's structure (functions, states, "
                          "state updates, weight types) was checked instead")

    def normalizers(self) -> Mapping[str, Normalizer]:
        from compiler.backends.coreml.reproducibility import NORMALIZERS

        return NORMALIZERS


backend = CoreMLBackend()
