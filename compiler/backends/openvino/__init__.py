"""OpenVINO backend: an OpenVINO IR (`model.xml` + `model.bin`) for Intel CPUs, GPUs and NPUs, with NNCF int8; for
a Hugging Face decoder LM, a stateful IR folder that OpenVINO GenAI's `LLMPipeline` runs (`decoder.py`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from compiler.backends import (BACKEND_API_VERSION, BackendBase, Capabilities, GenerationPlan, Lowered, LowerJob,
                               NotRunnable, RunPlan, host_mismatch, package_version, run_threads)
from compiler.backends.openvino.options import SCHEMA
from targets.model import TracedModel
from targets.host import HostInfo
from targets.signature import Signature
from targets.spec import TargetSpec


FAMILIES = ("llama", "qwen2", "qwen3", "phi3", "gemma2", "gemma3_text", "mistral", "minicpm3")
DECODER_WEIGHT_METHODS = ("rtn", "awq+scale_estimation", "gptq+scale_estimation")


class OpenVinoBackend(BackendBase):
    name = "openvino"
    api_version = BACKEND_API_VERSION
    options_schema = SCHEMA
    capabilities = Capabilities(
        consumes="onnx", precisions=("fp32", "fp16", "int8"),
        # it lowers the float graph: fp16 and int8 are OpenVINO's own (save_model; NNCF from the build's samples)
        calibrated_precisions=("int8",),
        symbolic_dims=True,  # the IR keeps dynamic dims; `static_shapes` binds them (the NPU plugin needs that)
        accepted_domains=(),  # OpenVINO's ONNX frontend takes the standard domain; it fuses in its own plugins
        decoder_precisions=("fp32", "fp16", "int8", "int4"),
        # the families whose folder generates token for token as transformers does at fp32
        # (tests/compiler/backends/test_openvino.py)
        decoder_families=FAMILIES,
        # NNCF's own algorithms: round to nearest (data-free), then its data-aware ones on the build's calibration
        # prompts (activation-aware scaling with scale estimation; GPTQ with scale estimation)
        decoder_weight_methods={"int4": DECODER_WEIGHT_METHODS},
        # NNCF's ratio keeps the most sensitive matmuls int8 whatever the int4 algorithm
        decoder_int8_backup=DECODER_WEIGHT_METHODS,
        # the CPU plugin's KV_CACHE_PRECISION (u8 by default below fp32)
        decoder_kv_caches=("fp32", "fp16", "int8"))

    def lowers_onnx(self, model: TracedModel, precision: str) -> bool:
        return True

    def versions(self) -> dict[str, str]:
        return {"openvino": package_version("openvino"), "nncf": package_version("nncf"),
                "openvino-genai": package_version("openvino-genai"),
                "openvino-tokenizers": package_version("openvino-tokenizers")}

    def lower(self, job: LowerJob) -> Lowered:
        from compiler.backends.openvino import lower as _lower

        return _lower.lower(job.model, job.target, job.precision, job.workdir, dict(job.options), job.data)

    def lower_decoder(self, job: LowerJob) -> Lowered:
        from compiler.backends.openvino.decoder import lower_decoder

        q = job.target.quantization
        block = job.request.quantization.block_size or (q.int4_block_sizes[0] if q and q.int4_block_sizes else 32)
        calibration = [sample["input_ids"][0].tolist() for sample in job.data.calibration]
        return lower_decoder(job.model, job.precision, job.workdir, job.context, block, dict(job.options),
                             method=job.weight_method or "rtn", calibration=calibration,
                             calibration_origin=job.data.calibration_origin, int8_share=job.int8_share,
                             kv_cache=job.request.llm.kv_cache)

    def plan_generate(self, artifact_dir: Path, options: Mapping[str, Any], target: TargetSpec,
                      host: HostInfo, form: str = "main") -> GenerationPlan:
        from compiler.backends.openvino.decoder import IR, OpenVinoDecoderRunner

        if not (artifact_dir / IR).exists():
            raise NotRunnable(f"{artifact_dir / IR} is missing")
        try:
            import openvino_genai  # noqa: F401
        except ImportError as exc:
            raise NotRunnable(f"OpenVINO GenAI is not installed here ({exc})") from exc
        layout = options["decoder"]
        runner = OpenVinoDecoderRunner(artifact_dir, layout["config"], int(layout["context"]),
                                       run_threads(target, host))
        mismatch = host_mismatch(target, host)
        device = options.get("device", "CPU")
        if mismatch is None and device == "CPU":
            return GenerationPlan(runner)
        why = mismatch or f"the folder is for OpenVINO's {device} plugin"
        return GenerationPlan(runner, proxy=True, representative=device == "CPU",
                              note=f"proxy: the same folder run by OpenVINO GenAI on this host's CPU plugin ({why})")

    def plan_run(self, artifact_dir: Path, options: Mapping[str, Any], signature: Signature, target: TargetSpec,
                 host: HostInfo) -> RunPlan:
        from compiler.backends.openvino.lower import IR
        from compiler.backends.openvino.runner import OpenVinoRunner

        ir = artifact_dir / IR
        if not ir.exists():
            raise NotRunnable(f"{ir} is missing")
        try:
            import openvino as ov
        except ImportError as exc:
            raise NotRunnable(f"OpenVINO's runtime is not installed here ({exc})") from exc
        device, config = options.get("device", "CPU"), dict(options.get("config", {}))
        mismatch = host_mismatch(target, host)
        if mismatch is None and device == "CPU":
            return RunPlan(OpenVinoRunner(ir, signature, "CPU", config))
        # The IR is device-independent: OpenVINO's CPU plugin runs the very files the target's plugin loads.
        why = mismatch or f"the IR is for OpenVINO's {device} plugin"
        available = ", ".join(ov.Core().available_devices)
        return RunPlan(OpenVinoRunner(ir, signature, "CPU", config if device == "CPU" else {}), proxy=True,
                       note=f"proxy: the same IR run by OpenVINO's CPU plugin on this host at f32 ({why}; this "
                            f"machine's devices: {available}): its numerics are the IR's, its speed is this CPU's")


backend = OpenVinoBackend()
