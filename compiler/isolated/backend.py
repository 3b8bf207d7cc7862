"""`IsolatedBackend`: the base of a backend whose vendor SDK runs in its own environment, across a process boundary.

A vendor subclasses it and declares: the `Environment` its SDK needs, the SDK script run inside it (a file that
imports only the SDK and the standard library: ``main(request, folder) -> status``), the layout of the
calibration arrays it takes, and how its artifacts run here (`runner_description`, `proxy_note`). chipfit does
the rest: the hand-off folder (`compiler.isolated.handoff`), the timeout, the environment's versions in the
manifest and the build cache key, and a runner.

The hand-off folder is kept in the artifact as ``sdk/``: a vendor simulator that can run only a model built in
the same session (Rockchip's cannot load its own ``.rknn``) is re-run from it on inputs other than the
verification inputs, whose outputs the build recorded.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnx

from compiler.errors import LowerError, RunError
from compiler.frontend.onnx_file import signature_from_onnx
from compiler.isolated.environment import Environment, EnvironmentState, inspect_environment
from compiler.isolated.handoff import (LOG, load_outputs, run_isolated, save_arrays, save_samples, to_layout,
                                       write_request)
from targets.model import TracedModel
from targets.backend import (BackendBase, Capabilities, Lowered, LowerJob, Normalizer, NotRunnable, RunnerBase,
                             RunPlan, code_fingerprint)
from targets.host import HostInfo
from targets.signature import Signature
from targets.spec import TargetSpec

#: the hand-off folder, kept in the artifact
SDK = "sdk"


def isolated_capabilities(precisions: tuple[str, ...], calibrated_precisions: tuple[str, ...] = (),
                          compute_unit: str = "", build_resources: bool = False) -> Capabilities:
    """An isolated backend's capabilities: it takes the ONNX graph at static shapes (vendor compilers do; chipfit
    binds symbolic dims first), standard ops only, and quantizes ``calibrated_precisions`` with the SDK's own tool."""
    return Capabilities(consumes="onnx", precisions=precisions, calibrated_precisions=calibrated_precisions,
                        symbolic_dims=False, compute_unit=compute_unit, build_resources=build_resources,
                        isolated=True)


class IsolatedBackend(BackendBase):
    """Lowering and running through the SDK script in the backend's own environment.

    A subclass declares ``capabilities`` with `isolated_capabilities` (ONNX in, static shapes, claimed isolated)."""

    environment: Environment
    sdk_script: Path
    calibration_layout = "NCHW"
    #: calibration samples handed over (they are kept in the artifact's sdk/ folder for re-runs)
    max_calibration_samples = 64
    timeout_s = 600.0
    runner_description = "the vendor's runtime in its isolated environment"
    proxy_note = ""  # where the runner is a proxy (a simulator): what it checks and what it does not
    #: artifact files whose bytes vary between builds of the same input, with why (see `Normalizer`)
    artifact_normalizers: Mapping[str, Normalizer] = {}

    # -- what a subclass may override -------------------------------------------------------------------------
    def prepare_graph(self, model: onnx.ModelProto) -> onnx.ModelProto:
        """The ONNX graph as the SDK takes it (e.g. an older opset), with chipfit's newer onnx package."""
        return model

    # -- the environment --------------------------------------------------------------------------------------
    def environment_state(self) -> EnvironmentState:
        return inspect_environment(self.environment)

    def _fix(self) -> str:
        return f"run `chipfit toolchain install {self.name}`"

    def _not_ready(self, state: EnvironmentState) -> str:
        return (f"backend {self.name}'s isolated environment at {state.path} is not ready "
                f"({'; '.join(state.problems)}): {self._fix()}")

    def versions(self) -> dict[str, str]:
        state = self.environment_state()
        prefix = f"env:{self.environment.name}"
        if not state.complete:
            return {prefix: f"not ready ({'; '.join(state.problems)}): {self._fix()}"}
        return {f"{prefix}:python": state.python,
                **{f"{prefix}:{p}": state.packages.get(p, "missing") for p in self.environment.reported}}

    def fingerprint(self) -> dict[str, str]:
        """The plugin's code (its SDK script included: it sits in the same folder) and every package of the
        environment: a changed version anywhere in it changes the build cache key."""
        state = self.environment_state()
        return {**code_fingerprint(self),
                f"env:{self.environment.name}:packages": state.packages_digest() if state.exists else "not installed"}

    def check_toolchain(self, target: TargetSpec) -> tuple[str, ...]:
        state = self.environment_state()
        return () if state.complete else (self._not_ready(state),)

    def normalizers(self) -> Mapping[str, Normalizer]:
        return {LOG: (None, "the SDK's log (timestamps, progress bars)"), **self.artifact_normalizers}

    def lowers_onnx(self, model: TracedModel, precision: str) -> bool:
        return True

    # -- lowering ---------------------------------------------------------------------------------------------
    def lower(self, job: LowerJob) -> Lowered:
        model, target, precision, workdir, data = job.model, job.target, job.precision, job.workdir, job.data
        state = self.environment_state()
        if not state.complete:
            raise LowerError(self._not_ready(state))
        folder = workdir / SDK
        folder.mkdir(parents=True, exist_ok=True)
        graph = self.prepare_graph(model.onnx_model)
        onnx.save(graph, folder / "model.onnx")
        signature = signature_from_onnx(graph)
        calibration = None
        if precision in self.capabilities.calibrated_precisions:
            if not data.calibration:
                raise LowerError(f"backend {self.name} quantizes {precision} with its SDK's own quantizer and needs "
                                 "chipfit's calibration samples (build through chipfit's build driver, with "
                                 "--calibration where the model bundles none)")
            calibration = {"layout": self.calibration_layout, "origin": data.calibration_origin,
                           "samples": save_samples(folder / "calibration", data.calibration_batched(), self.calibration_layout,
                                                   self.max_calibration_samples)}
        options = dict(job.options)
        request = {"backend": self.name, "target": {"id": target.id, "options": options}, "precision": precision,
                   "model": "model.onnx", "batch": _static_batch(signature),
                   "inputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype,
                               "layout": self.calibration_layout if len(t.shape) == 4 else ""}
                              for t in signature.inputs],
                   "outputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in signature.outputs],
                   "calibration": calibration, "verify": None, "artifact_dir": "artifact", "outputs_dir": "outputs"}
        if data.verify_inputs is not None:
            request["verify"] = {"label": data.verify_label, "inputs": save_arrays(
                folder / "verify", {k: to_layout(np.asarray(v), self.calibration_layout)
                                    for k, v in data.verify_inputs.items()})}
        write_request(folder, request)
        status = run_isolated(state, self.sdk_script, folder, self.timeout_s,
                              f"{self.name} building {model.name} for {target.id} ({precision})", LowerError)
        produced = []
        for rel in status.get("files", []):
            (workdir / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(folder / "artifact" / rel), workdir / rel)
            produced.append(rel)
        if not produced:
            raise LowerError(f"{self.name}: the SDK script returned no artifact files (log: {folder / LOG})")
        shutil.rmtree(folder / "artifact", ignore_errors=True)
        kept = sorted(p.relative_to(workdir).as_posix() for p in folder.rglob("*") if p.is_file())
        step = {"name": f"{self.name}-sdk", "environment": self.environment.name, **status.get("settings", {})}
        notes = (f"built by {self.name}'s SDK in its isolated environment ({state.path}, Python {state.python}); "
                 f"the hand-off (graph, calibration, verification inputs and outputs, log) is kept in {SDK}/",
                 *status.get("notes", []))
        return Lowered(files=tuple(produced) + tuple(kept), signature=signature, options=options,
                       passes=tuple(model.passes) + (step,), notes=notes)

    # -- running here -----------------------------------------------------------------------------------------
    def plan_run(self, artifact_dir: Path, options: Mapping[str, Any], signature: Signature, target: TargetSpec,
                 host: HostInfo) -> RunPlan:
        state = self.environment_state()
        if not state.complete:
            raise NotRunnable(self._not_ready(state))
        if not (artifact_dir / SDK / "request.json").is_file():
            raise NotRunnable(f"{artifact_dir} keeps no {SDK}/ hand-off folder, which {self.name}'s runner needs")
        return RunPlan(IsolatedRunner(self, state, artifact_dir), proxy=bool(self.proxy_note), note=self.proxy_note)


class IsolatedRunner(RunnerBase):
    """Outputs computed in the backend's environment: those the build recorded on its verification inputs
    (computed in the same SDK session that wrote the artifact), and for any other inputs a fresh run of the SDK
    script on the artifact's kept hand-off folder with those inputs."""

    def __init__(self, backend: IsolatedBackend, state: EnvironmentState, artifact_dir: Path) -> None:
        self._backend, self._state, self._dir = backend, state, artifact_dir / SDK
        self.description = f"{backend.runner_description} (isolated environment {state.name})"
        self._request = json.loads((self._dir / "request.json").read_text())
        self._outputs = [o["name"] for o in self._request["outputs"]]
        self._recorded: dict[str, dict[str, np.ndarray]] = {}
        status_file = self._dir / "status.json"
        verify = self._request.get("verify")
        if verify and status_file.is_file():
            inputs = {name: np.load(self._dir / rel) for name, rel in verify["inputs"].items()}
            outputs = load_outputs(self._dir, json.loads(status_file.read_text()))
            for i in range(_rows(inputs)):
                self._recorded[_row_key(inputs, i)] = {k: v[i] for k, v in outputs.items()}

    def _layout(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {t["name"]: to_layout(np.asarray(inputs[t["name"]]), self._backend.calibration_layout)
                for t in self._request["inputs"]}

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        given = self._layout(inputs)
        keys = [_row_key(given, i) for i in range(_rows(given))]
        if keys and all(k in self._recorded for k in keys):
            return {name: np.stack([self._recorded[k][name] for k in keys]) for name in self._outputs}
        return self._rerun(given)

    def _rerun(self, given: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with tempfile.TemporaryDirectory(prefix=f"chipfit-{self._backend.name}-run-") as tmp:
            folder = Path(tmp)
            shutil.copy2(self._dir / "model.onnx", folder / "model.onnx")
            if (self._dir / "calibration").is_dir():
                shutil.copytree(self._dir / "calibration", folder / "calibration")
            request = {k: v for k, v in self._request.items() if k != "schema_version"}
            request["verify"] = {"label": "inputs given to the runner", "inputs": save_arrays(folder / "verify", given)}
            write_request(folder, request)
            status = run_isolated(self._state, self._backend.sdk_script, folder, self._backend.timeout_s,
                                  f"{self._backend.name} running on new inputs", RunError)
            return load_outputs(folder, status)


def _rows(arrays: Mapping[str, np.ndarray]) -> int:
    """Samples along axis 0 (a scalar input, as some ONNX node tests have, makes one sample of the whole)."""
    return min((len(a) if np.ndim(a) else 1) for a in arrays.values()) if arrays else 0


def _row_key(arrays: Mapping[str, np.ndarray], i: int) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        array = np.asarray(arrays[name])
        row = np.ascontiguousarray(array[i] if array.ndim else array)
        h.update(f"{name}\0{row.dtype}\0{row.shape}\0".encode() + row.tobytes())
    return h.hexdigest()


def _static_batch(signature: Signature) -> int:
    first = signature.inputs[0].shape[0] if signature.inputs and signature.inputs[0].shape else 1
    return first if isinstance(first, int) else 1
