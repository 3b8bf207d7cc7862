"""OpenVINO backend: an OpenVINO IR (`model.xml` + `model.bin`) for Intel CPUs, GPUs and NPUs, with NNCF int8."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from compiler.backends import (BACKEND_API_VERSION, BackendBase, Capabilities, Lowered, LowerJob, NotRunnable, RunPlan,
                               host_mismatch, package_version)
from compiler.backends.openvino.options import SCHEMA
from targets.model import TracedModel
from targets.host import HostInfo
from targets.signature import Signature
from targets.spec import TargetSpec


class OpenVinoBackend(BackendBase):
    name = "openvino"
    api_version = BACKEND_API_VERSION
    options_schema = SCHEMA
    capabilities = Capabilities(
        consumes="onnx", precisions=("fp32", "fp16", "int8"),
        # it lowers the float graph: fp16 and int8 are OpenVINO's own (save_model; NNCF from the build's samples)
        calibrated_precisions=("int8",),
        symbolic_dims=True,  # the IR keeps dynamic dims; `static_shapes` binds them (the NPU plugin needs that)
        accepted_domains=())  # OpenVINO's ONNX frontend takes the standard domain; it fuses in its own plugins

    def lowers_onnx(self, model: TracedModel, precision: str) -> bool:
        return True

    def versions(self) -> dict[str, str]:
        return {"openvino": package_version("openvino"), "nncf": package_version("nncf")}

    def lower(self, job: LowerJob) -> Lowered:
        from compiler.backends.openvino import lower as _lower

        return _lower.lower(job.model, job.target, job.precision, job.workdir, dict(job.options), job.data)

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
