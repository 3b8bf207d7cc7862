"""Run an ExecuTorch program in ExecuTorch's own runtime (its Python bindings), as an app loads it."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from compiler.backends import RunnerBase
from targets.signature import Signature


def _portable_lib():
    from executorch.extension.pybindings import portable_lib

    return portable_lib


class ExecuTorchRunner(RunnerBase):
    def __init__(self, program: Path, signature: Signature, threads: int = 0) -> None:
        from executorch.runtime import Runtime

        import executorch

        self._signature = signature
        self._method = Runtime.get().load_program(program).load_method("forward")
        if threads:
            self.set_threads(threads)
        version = getattr(executorch, "__version__", "")
        self.description = f"executorch {version} runtime, XNNPACK delegate, on this host ({program.name})".replace(
            "executorch  ", "executorch ")

    def set_threads(self, threads: int) -> bool:
        # XNNPACK runs on ExecuTorch's process-wide thread pool
        _portable_lib()._unsafe_reset_threadpool(max(1, threads))
        return True

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        names = [t.name for t in self._signature.inputs]
        batch = len(inputs[names[0]])
        static = self._signature.inputs[0].shape[0] if self._signature.inputs[0].shape else 1
        step = static if isinstance(static, int) and static > 0 else batch
        pieces: list[list[np.ndarray]] = []
        # the program is static-shaped: a batch of samples runs one program-batch at a time
        for start in range(0, batch, step):
            tensors = [torch.from_numpy(np.ascontiguousarray(inputs[n][start:start + step])) for n in names]
            outputs = self._method.execute(tensors)
            pieces.append([o.detach().numpy().copy() for o in outputs])
        return {t.name: np.concatenate([p[i] for p in pieces]) for i, t in enumerate(self._signature.outputs)}
