"""Core ML backend: an `.mlpackage` ML program from the torch program, compute units from the target."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from compiler.backends import (BACKEND_API_VERSION, BackendBase, Capabilities, GenerationPlan, Lowered, LowerJob,
                               Normalizer, NotRunnable, ProgramQuantizer, RunPlan, package_version)
from compiler.backends.coreml.options import SCHEMA
from targets.model import TracedModel
from targets.host import HostInfo
from targets.signature import Signature
from targets.spec import TargetSpec


class CoreMLBackend(BackendBase):
    name = "coreml"
    api_version = BACKEND_API_VERSION
    options_schema = SCHEMA
    capabilities = Capabilities(
        consumes="torch", precisions=("fp32", "fp16", "int8"),
        # fp16 is coremltools' compute_precision on the torch program; int8 is W8A8 from the PT2E-quantized program
        program_precisions=("int8",),
        symbolic_dims=False,  # flexible shapes need enumerated ranges; static shapes are what the ANE runs best
        # Decoder LMs: a stateful multifunction ML program (compiler/backends/coreml/decoder.py).
        decoder_precisions=("fp32", "fp16", "int8", "int4"),
        decoder_families=("llama", "qwen2", "qwen3", "phi3", "gemma2", "gemma3_text", "mistral", "minicpm3"))

    def lowers_onnx(self, model: TracedModel, precision: str) -> bool:
        return False  # converts the torch program; Core ML's own compiler fuses for the Neural Engine

    def versions(self) -> dict[str, str]:
        return {"coremltools": package_version("coremltools")}

    def lower(self, job: LowerJob) -> Lowered:
        from compiler.backends.coreml import lower as _lower

        return _lower.lower(job.model, job.target, job.precision, job.workdir, dict(job.options))

    def program_quantizer(self, method: str) -> ProgramQuantizer:
        from compiler.backends.coreml.quantizer import neural_engine_quantizer

        return neural_engine_quantizer(method)

    def plan_run(self, artifact_dir: Path, options: Mapping[str, Any], signature: Signature, target: TargetSpec,
                 host: HostInfo) -> RunPlan:
        import platform

        if platform.system() != "Darwin":
            raise NotRunnable(
                "Core ML runs predictions only on macOS/iOS; the saved program's structure was validated instead"
            )
        from compiler.backends.coreml.runner import CoreMLRunner

        return RunPlan(CoreMLRunner(artifact_dir / "model.mlpackage", options, signature))

    def lower_decoder(self, job: LowerJob) -> Lowered:
        from compiler.backends.coreml.decoder import lower_decoder

        return lower_decoder(job.model, job.target, job.precision, job.workdir, job.context,
                             job.request.llm.prefill_chunk, dict(job.options))

    def plan_generate(self, artifact_dir: Path, options: Mapping[str, Any], target: TargetSpec,
                      host: HostInfo, form: str = "main") -> GenerationPlan:
        raise NotRunnable("Core ML runs programs only on macOS/iOS; the package's structure (functions, states, "
                          "state updates, weight types) was checked instead")

    def normalizers(self) -> Mapping[str, Normalizer]:
        from compiler.backends.coreml.reproducibility import NORMALIZERS

        return NORMALIZERS


backend = CoreMLBackend()
