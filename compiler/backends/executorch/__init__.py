"""ExecuTorch backend: a `.pte` program with the XNNPACK delegate, from the torch program (graphs) or from a
Hugging Face decoder LM (`decoder.py`: the KV cache in the program, 8da4w / 8da8w weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from compiler.backends import (BACKEND_API_VERSION, BackendBase, Capabilities, GenerationPlan, Lowered, LowerJob,
                               NotRunnable, ProgramQuantizer, RunPlan, host_mismatch, package_version, run_threads)
from compiler.backends.executorch.options import SCHEMA
from targets.model import TracedModel
from targets.host import HostInfo
from targets.signature import Signature
from targets.spec import TargetSpec


FAMILIES = ("llama", "qwen2", "qwen3", "phi3", "gemma2", "gemma3_text", "mistral", "minicpm3")


class ExecuTorchBackend(BackendBase):
    name = "executorch"
    api_version = BACKEND_API_VERSION
    options_schema = SCHEMA
    capabilities = Capabilities(
        consumes="torch", precisions=("fp32", "int8"),
        program_precisions=("int8",),  # PT2E with XNNPACK's quantizer, so every int8 op is an XNNPACK kernel
        compute_unit="cpu",  # XNNPACK is a CPU library
        symbolic_dims=False,  # XNNPACK programs are planned at static shapes
        decoder_precisions=("fp32", "int8", "int4"),
        # the families whose program generates token for token as transformers does at fp32
        # (tests/compiler/backends/test_executorch_decoder.py)
        decoder_families=FAMILIES)

    def lowers_onnx(self, model: TracedModel, precision: str) -> bool:
        return False  # lowers the torch program; XNNPACK fuses what it takes

    def versions(self) -> dict[str, str]:
        return {"executorch": package_version("executorch"), "torchao": package_version("torchao")}

    def lower(self, job: LowerJob) -> Lowered:
        from compiler.backends.executorch import lower as _lower

        return _lower.lower(job.model, job.target, job.precision, job.workdir, dict(job.options))

    def lower_decoder(self, job: LowerJob) -> Lowered:
        from compiler.backends.executorch.decoder import lower_decoder

        q = job.target.quantization
        block = job.request.quantization.block_size or (q.int4_block_sizes[0] if q and q.int4_block_sizes else 32)
        return lower_decoder(job.model, job.target, job.precision, job.workdir, job.context,
                             job.request.llm.prefill_chunk, block, dict(job.options))

    def plan_generate(self, artifact_dir: Path, options: Mapping[str, Any], target: TargetSpec,
                      host: HostInfo, form: str = "main") -> GenerationPlan:
        from compiler.backends.executorch.decoder import PROGRAM, ExecuTorchDecoderRunner

        program = artifact_dir / PROGRAM
        if not program.exists():
            raise NotRunnable(f"{program} is missing")
        layout = options["decoder"]
        runner = ExecuTorchDecoderRunner(program, int(layout["chunk"]), int(layout["context"]),
                                         run_threads(target, host))
        mismatch = host_mismatch(target, host)
        if mismatch is None:
            return GenerationPlan(runner)
        return GenerationPlan(runner, proxy=True, note=f"proxy: the same {PROGRAM} run by ExecuTorch's runtime on "
                                                       f"this host's CPU ({mismatch})")

    def program_quantizer(self, method: str) -> ProgramQuantizer:
        from compiler.backends.executorch.quantizer import xnnpack_quantizer

        return xnnpack_quantizer(method)

    def plan_run(self, artifact_dir: Path, options: Mapping[str, Any], signature: Signature, target: TargetSpec,
                 host: HostInfo) -> RunPlan:
        from compiler.backends.executorch.lower import PROGRAM
        from compiler.backends.executorch.runner import ExecuTorchRunner

        program = artifact_dir / PROGRAM
        if not program.exists():
            raise NotRunnable(f"{program} is missing")
        try:
            runner = ExecuTorchRunner(program, signature)
        except ImportError as exc:
            raise NotRunnable(f"ExecuTorch's runtime is not installed here ({exc})") from exc
        mismatch = host_mismatch(target, host)
        if mismatch is None:
            return RunPlan(runner)
        # An XNNPACK program is portable: the very file the board loads runs here, on this CPU's XNNPACK kernels.
        return RunPlan(runner, proxy=True,
                       note=f"the same model.pte run by ExecuTorch's runtime on this host's CPU ({mismatch}): its "
                            "numerics are the program's; its speed is this CPU's, not the target's")


backend = ExecuTorchBackend()
