"""ExecuTorch backend: a `.pte` program with the XNNPACK delegate, from the torch program."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from compiler.backends import (BACKEND_API_VERSION, BackendBase, Capabilities, Lowered, LowerJob, NotRunnable,
                               ProgramQuantizer, RunPlan, host_mismatch, package_version)
from compiler.backends.executorch.options import SCHEMA
from targets.model import TracedModel
from targets.host import HostInfo
from targets.signature import Signature
from targets.spec import TargetSpec


class ExecuTorchBackend(BackendBase):
    name = "executorch"
    api_version = BACKEND_API_VERSION
    options_schema = SCHEMA
    capabilities = Capabilities(
        consumes="torch", precisions=("fp32", "int8"),
        program_precisions=("int8",),  # PT2E with XNNPACK's quantizer, so every int8 op is an XNNPACK kernel
        compute_unit="cpu",  # XNNPACK is a CPU library
        symbolic_dims=False)  # XNNPACK programs are planned at static shapes

    def lowers_onnx(self, model: TracedModel, precision: str) -> bool:
        return False  # lowers the torch program; XNNPACK fuses what it takes

    def versions(self) -> dict[str, str]:
        return {"executorch": package_version("executorch"), "torchao": package_version("torchao")}

    def lower(self, job: LowerJob) -> Lowered:
        from compiler.backends.executorch import lower as _lower

        return _lower.lower(job.model, job.target, job.precision, job.workdir, dict(job.options))

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
