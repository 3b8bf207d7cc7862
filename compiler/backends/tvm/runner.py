"""Run a TVM artifact on this machine through the Relax virtual machine."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from compiler.backends import NotRunnable, RunnerBase, RunPlan, host_mismatch
from targets.signature import Signature
from targets.host import HostInfo
from targets.spec import TargetSpec


class TvmRunner(RunnerBase):
    def __init__(self, library: Path, signature: Signature) -> None:
        import tvm
        from tvm import relax

        self._tvm = tvm
        self._vm = relax.VirtualMachine(tvm.runtime.load_module(str(library)), tvm.cpu())
        self._signature = signature
        self.description = f"tvm {tvm.__version__} relax VM on this host ({library.name})"

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [self._tvm.runtime.tensor(np.ascontiguousarray(inputs[t.name])) for t in self._signature.inputs]
        result = self._vm["main"](*args)
        outputs = [result] if hasattr(result, "numpy") else list(result)
        return {t.name: o.numpy() for t, o in zip(self._signature.outputs, outputs)}


def check_runs_here(options: Mapping[str, Any], target: TargetSpec, host: HostInfo) -> None:
    """`NotRunnable` unless this host can load the target's library."""
    mismatch = host_mismatch(target, host)
    if mismatch:
        raise NotRunnable(mismatch)
    machine = options.get("elf_machine")
    if machine and machine != host.arch:
        raise NotRunnable(f"the library is built for {machine}; this host is {host.arch}")


def plan_run(artifact_dir: Path, options: Mapping[str, Any], signature: Signature, target: TargetSpec,
             host: HostInfo) -> RunPlan:
    check_runs_here(options, target, host)
    return RunPlan(TvmRunner(artifact_dir / "model.so", signature))
