"""TVM backend: Relax, `tvm.compile`, a shared library for the host or cross-compiled for the target."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from compiler.backends import (BACKEND_API_VERSION, BackendBase, Capabilities, Device, DeviceTiming, GenerationPlan,
                               Lowered, LowerJob, RunPlan, package_version)
from compiler.backends.tvm.options import SCHEMA, resolve
from targets.model import TracedModel
from targets.host import HostInfo, detect_host
from targets.signature import Signature
from targets.spec import TargetError, TargetSpec


class TvmBackend(BackendBase):
    name = "tvm"
    api_version = BACKEND_API_VERSION
    options_schema = SCHEMA
    capabilities = Capabilities(
        consumes="torch",  # the torch program where there is one, else the ONNX graph
        # No int4: TVM's ONNX importer has no MatMulNBits. No fp16: it fails on the Cast nodes that keep
        # an fp16 graph's inputs fp32 (KeyError 'graph_input_cast_0'), found by the conformance kit.
        precisions=("fp32", "int8"), graph_precisions=("int8",),
        symbolic_dims=True,
        accepted_domains=(),  # TVM's ONNX importer takes standard ops only
        compute_unit="cpu",  # LLVM CPU code (no GPU or NPU target is configured through chipfit)
        # Decoder LMs: prefill and decode over a static cache in one library (compiler/backends/tvm/decoder.py).
        decoder_precisions=("fp32",),
        decoder_families=("llama", "qwen2", "qwen3", "phi3", "gemma2", "gemma3_text", "mistral", "minicpm3"),
        tunable=True, device_timing=True)

    def lowers_onnx(self, model: TracedModel, precision: str) -> bool:
        # fp32 PyTorch models go through TVM's torch importer (and TVM's own fusion), the rest through ONNX.
        return not (precision == "fp32" and model.exported_program is not None)

    def versions(self) -> dict[str, str]:
        return {"apache-tvm": package_version("apache-tvm"), "apache-tvm-ffi": package_version("apache-tvm-ffi")}

    def resolve_options(self, target: TargetSpec, host: HostInfo) -> dict[str, Any]:
        return resolve(SCHEMA.resolve(target), host)

    def check_options(self, target: TargetSpec) -> None:
        options = self.resolve_options(target, detect_host())
        import tvm

        try:
            tvm.target.Target(dict(options["target"]))
        except Exception as exc:
            raise TargetError(
                f"{target.source_file}: backend_options.tvm.target {options['target']} is not a valid TVM target: {exc}"
            ) from exc
        from compiler.backends.tvm.options import mattr_contradictions

        wrong = mattr_contradictions(options["target"].get("mattr"), target.isa.features)
        if wrong:
            raise TargetError(f"{target.source_file}: backend_options.tvm.target.mattr contradicts isa.features "
                              f"({', '.join(target.isa.features) or 'none'}): {'; '.join(wrong)}; make them agree")

    def check_toolchain(self, target: TargetSpec) -> tuple[str, ...]:
        from compiler.backends.tvm.lower import toolchain_problems

        return toolchain_problems(target, self.resolve_options(target, detect_host()))

    def lower(self, job: LowerJob) -> Lowered:
        from compiler.backends.tvm import lower as _lower

        return _lower.lower(job.model, job.target, job.precision, job.workdir, dict(job.options))

    def tune(self, model: TracedModel, target: TargetSpec, trials: int, device=None,
             progress=lambda m: None):
        """MetaSchedule over the model's kernels for ``target`` (on ``device`` through RPC where given); the records
        are kept for every later build for that target (`compiler/backends/tvm/tuning.py`)."""
        from compiler.backends.tvm.lower import import_onnx, import_torch, check_cross_compiler
        from compiler.backends.tvm.tuning import tune
        from compiler.frontend import concretize

        options = self.resolve_options(target, detect_host())
        check_cross_compiler(target, options)
        static = concretize(model) if not model.signature.is_static else model
        mod = import_torch(static) if static.exported_program is not None else import_onnx(static.onnx_model)
        rpc = None
        if device is not None:
            host, port = device.address.rsplit(":", 1)
            rpc = (host, int(port), device.key)
        return tune(mod, dict(options["target"]), trials, rpc=rpc, cross_compiler=options["cross_compiler"],
                    progress=progress)

    def plan_run(self, artifact_dir: Path, options: Mapping[str, Any], signature: Signature, target: TargetSpec,
                 host: HostInfo) -> RunPlan:
        from compiler.backends.tvm import runner as _runner

        return _runner.plan_run(artifact_dir, options, signature, target, host)

    def lower_decoder(self, job: LowerJob) -> Lowered:
        from compiler.backends.tvm.decoder import lower_decoder

        return lower_decoder(job.model, job.target, job.precision, job.workdir, job.context,
                             job.request.llm.prefill_chunk, dict(job.options))

    def plan_generate(self, artifact_dir: Path, options: Mapping[str, Any], target: TargetSpec,
                      host: HostInfo, form: str = "main") -> GenerationPlan:
        from compiler.backends.tvm.decoder import TvmDecoderRunner
        from compiler.backends.tvm.runner import check_runs_here

        check_runs_here(options, target, host)
        layout = options["decoder"]
        return GenerationPlan(TvmDecoderRunner(artifact_dir, [tuple(s) for s in layout["cache_shapes"]],
                                               layout["chunk"], layout["context"]))

    def time_on_device(self, artifact_dir: Path, options: Mapping[str, Any], signature: Signature,
                       device: Device, runs: int) -> DeviceTiming:
        from compiler.backends.tvm.device import time_remote

        return time_remote(artifact_dir / "model.so", signature, device.address, device.key, runs=runs)


backend = TvmBackend()
