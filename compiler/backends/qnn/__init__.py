"""Qualcomm QNN backend: an EPContext ONNX model and its HTP context binary, compiled offline by QNN for the
target's Snapdragon SoC through onnxruntime-qnn, and checked on Qualcomm's HTP simulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from compiler.backends import (BACKEND_API_VERSION, BackendBase, Capabilities, GenerationPlan, Lowered, LowerJob,
                               Normalizer, RunPlan, package_version)
from compiler.backends.qnn.options import SCHEMA
from targets.host import HostInfo
from targets.model import TracedModel
from targets.signature import Signature
from targets.spec import TargetSpec


class QnnBackend(BackendBase):
    name = "qnn"
    api_version = BACKEND_API_VERSION
    options_schema = SCHEMA
    capabilities = Capabilities(
        # int8: chipfit's calibrated QDQ graph (uint8 or uint16 activations, the target's); fp16: the float graph
        # at the HTP's fp16 precision. The HTP computes no fp32.
        # int4: w4a16 (int4 weights, uint16 activations), quantized by the backend on the build's samples
        consumes="onnx", precisions=("fp16", "int8", "int4"), graph_precisions=("int8",),
        calibrated_precisions=("int4",),
        symbolic_dims=False,  # the HTP compiles static shapes
        compute_unit="npu",
        # Decoder LMs: static prefill/decode programs at w8a16 in one weight-sharing context binary
        # (compiler/backends/qnn/decoder.py); the families verified on the HTP simulator (tests/compiler/backends/
        # test_qnn.py). "minmax": activation ranges from the calibration prompts, the only method offered.
        decoder_precisions=("int8",), decoder_families=("llama", "qwen2"),
        decoder_weight_methods={"int8": ("minmax",)})

    def lowers_onnx(self, model: TracedModel, precision: str) -> bool:
        return True

    def check_options(self, target: TargetSpec) -> None:
        from compiler.backends.qnn.socs import soc_for

        options = SCHEMA.resolve(target)
        soc_for(options["soc_model"], options["htp_arch"], str(target.source_file))

    def check_toolchain(self, target: TargetSpec) -> tuple[str, ...]:
        from compiler.backends.qnn import ep

        why = ep.unavailable()
        return (why,) if why else ()

    def versions(self) -> dict[str, str]:
        from compiler.backends.qnn import ep

        return {"onnxruntime": package_version("onnxruntime"), **ep.versions()}

    def lower(self, job: LowerJob) -> Lowered:
        from compiler.backends.qnn import lower as _lower

        activation = job.request.quantization.activation_dtype or "uint16"
        return _lower.lower(job.model, job.target, job.precision, job.workdir, dict(job.options),
                            job.data.calibration, activation)

    def plan_run(self, artifact_dir: Path, options: Mapping[str, Any], signature: Signature, target: TargetSpec,
                 host: HostInfo) -> RunPlan:
        from compiler.backends.qnn import runner

        return runner.plan_run(artifact_dir, options)

    def lower_decoder(self, job: LowerJob) -> Lowered:
        from compiler.backends.qnn.decoder import lower_decoder

        calibration = [sample["input_ids"][0].tolist() for sample in job.data.calibration]
        return lower_decoder(job.model, job.target, job.precision, job.workdir, job.context, dict(job.options),
                             calibration, job.data.calibration_origin)

    def plan_generate(self, artifact_dir: Path, options: Mapping[str, Any], target: TargetSpec,
                      host: HostInfo, form: str = "main") -> GenerationPlan:
        from compiler.backends.qnn.decoder import plan_generate

        return plan_generate(artifact_dir, options)

    def normalizers(self) -> Mapping[str, Normalizer]:
        # Found by building twice: some 50 bytes of QNN's context binary (handles laid out per compile) differ.
        why = ("QNN context binary: some 50 bytes vary per compile; compiled from the QDQ graphs beside it, which "
               "are covered")
        return {"model_ctx_qnn.bin": (None, why), "prefill_ctx_qnn.bin": (None, why)}


backend = QnnBackend()
