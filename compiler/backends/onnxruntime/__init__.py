"""ONNX Runtime backend: an optimized ONNX model (and `.ort`) plus its execution provider configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from compiler.backends import (BACKEND_API_VERSION, BackendBase, Capabilities, GenerationPlan, Lowered, LowerJob,
                               Normalizer, RunPlan, host_mismatch, package_version)
from compiler.backends.onnxruntime.options import DECODER_WEIGHT_METHODS, SCHEMA
from targets.model import TracedModel
from targets.host import HostInfo
from targets.signature import Signature
from targets.spec import TargetSpec


class OnnxRuntimeBackend(BackendBase):
    name = "onnxruntime"
    api_version = BACKEND_API_VERSION
    options_schema = SCHEMA
    capabilities = Capabilities(
        consumes="onnx", precisions=("fp32", "fp16", "int8", "int4"), graph_precisions=("fp16", "int8", "int4"),
        symbolic_dims=True, accepted_domains=("com.microsoft",),
        # Decoder LMs go through onnxruntime-genai's own model builder: the families it builds and chipfit has
        # verified token for token against transformers (compiler/backends/onnxruntime/README.md).
        decoder_precisions=("fp32", "int8", "int4"),
        decoder_families=("llama", "qwen2", "qwen3", "phi3", "gemma2", "gemma3_text", "mistral"),
        decoder_weight_methods={"int4": DECODER_WEIGHT_METHODS},
        # NNCF's ratio keeps its most sensitive matmuls int8; the builder's own methods are all-int4
        decoder_int8_backup=("awq+scale_estimation",))

    def lowers_onnx(self, model: TracedModel, precision: str) -> bool:
        return True

    def versions(self) -> dict[str, str]:
        return {"onnxruntime": package_version("onnxruntime"), "onnx": package_version("onnx")}

    def lower(self, job: LowerJob) -> Lowered:
        from compiler.backends.onnxruntime import lower as _lower

        return _lower.lower(job.model, job.target, job.precision, job.workdir, dict(job.options))

    def plan_run(self, artifact_dir: Path, options: Mapping[str, Any], signature: Signature, target: TargetSpec,
                 host: HostInfo) -> RunPlan:
        from compiler.backends.onnxruntime import runner as _runner

        return _runner.plan_run(artifact_dir, options, target, host)

    def lower_decoder(self, job: LowerJob) -> Lowered:
        from compiler.backends.onnxruntime import genai

        q = job.target.quantization
        block = q.int4_block_sizes[0] if q and q.int4_block_sizes else None
        calibration = [sample["input_ids"][0].tolist() for sample in job.data.calibration]
        return genai.lower_decoder(job.model, job.target, job.precision, job.workdir, job.context, dict(job.options),
                                   block, method=job.weight_method or "rtn", calibration=calibration,
                                   calibration_origin=job.data.calibration_origin, int8_share=job.int8_share)

    def plan_generate(self, artifact_dir: Path, options: Mapping[str, Any], target: TargetSpec,
                      host: HostInfo, form: str = "main") -> GenerationPlan:
        from compiler.backends.onnxruntime.genai import GenaiRunner

        provider = options["execution_provider"]
        mismatch = host_mismatch(target, host)
        on_cpu = provider == "CPUExecutionProvider"
        if form == "static":
            from compiler.backends.onnxruntime.static_decoder import static_ort_runner

            return GenerationPlan(static_ort_runner(artifact_dir, options["static_layout"]), proxy=True,
                                  note=f"proxy: the static programs made for {provider} run on this host's CPU provider",
                                  representative=on_cpu)
        if mismatch is None and on_cpu:
            return GenerationPlan(GenaiRunner(artifact_dir, on_cpu=False))
        why = mismatch or f"{provider} is not on this host"
        return GenerationPlan(GenaiRunner(artifact_dir, on_cpu=True), proxy=True,
                              note=f"proxy: the folder run by onnxruntime-genai on this host's CPU provider ({why})",
                              representative=on_cpu)

    def normalizers(self) -> Mapping[str, Normalizer]:
        # Found by the conformance kit's determinism check: ONNX Runtime's ORT-format writer lays its
        # flatbuffer tables out in an order that varies per build.
        return {"model.ort": (None, "ORT-format flatbuffer: table layout varies per build; generated from "
                                    "model.onnx, which is covered")}


backend = OnnxRuntimeBackend()
