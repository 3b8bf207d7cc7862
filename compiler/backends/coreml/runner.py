"""Run a Core ML package: only possible on macOS, where coremltools can call Core ML."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from compiler.backends import RunnerBase
from targets.signature import Signature


class CoreMLRunner(RunnerBase):
    def __init__(self, package: Path, options: Mapping[str, Any], signature: Signature) -> None:
        import coremltools as ct

        units = options["compute_units"]
        self._model = ct.models.MLModel(str(package), compute_units=ct.ComputeUnit[units])
        self._outputs = [o.name for o in signature.outputs]
        self.description = f"Core ML ({units}) on this Mac"

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = self._model.predict(dict(inputs))
        return {name: np.asarray(result[name]) for name in self._outputs}
