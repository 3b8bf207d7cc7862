"""How an artifact's outputs compare with the float reference: the record a manifest carries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from targets.schema import to_json
from targets.spec import Tolerance

#: numerics statuses: run here and within tolerance / outside it / could not run here
STATUSES = ("verified", "failed", "not-run")
#: how the numerics column names an execution other than the artifact's own runtime
EXECUTION_LABELS = {"qdq": "QDQ semantics", "emulated": "emulated int16 pairs", "simulator": "vendor simulator"}


@dataclass(frozen=True)
class OutputError:
    output: str
    max_abs_error: float
    max_abs_reference: float
    cosine: float
    sqnr_db: float | None  # None: outputs identical (no noise)

    def to_dict(self) -> dict:
        return to_json(self)


def within(error: OutputError, tolerance: Tolerance) -> bool:
    bound = tolerance.atol + tolerance.rtol * error.max_abs_reference
    return error.max_abs_error <= bound and error.cosine >= tolerance.min_cosine


@dataclass(frozen=True)
class Numerics:
    status: str  # one of STATUSES
    precision: str
    reason: str = ""
    runner: str = ""
    proxy: bool = False
    inputs: str = ""
    tolerance: Tolerance | None = None
    outputs: tuple[OutputError, ...] = ()
    structure: Mapping[str, Any] | None = None
    #: Task accuracy on labelled verification samples: top-1 of the artifact and of the float model.
    task: Mapping[str, Any] | None = None
    #: Language models: greedy generation against the reference and teacher-forced agreement.
    generation: Mapping[str, Any] | None = None
    #: which execution computed the outputs: native, qdq (Q/DQ as written) or emulated (the target's int8
    #: arithmetic), chosen from the target's and this host's ISAs
    execution: str = "native"

    @property
    def _head(self) -> str:
        head = {"verified": "ok", "failed": "FAILED"}[self.status]
        label = EXECUTION_LABELS.get(self.execution)
        if label:
            return f"{head} ({label})"
        return head + (" (proxy)" if self.proxy else "")

    @property
    def passed(self) -> bool:
        return self.status != "failed"

    @property
    def min_cosine(self) -> float | None:
        return min((o.cosine for o in self.outputs), default=None)

    @property
    def max_abs_error(self) -> float | None:
        return max((o.max_abs_error for o in self.outputs), default=None)

    def to_dict(self) -> dict[str, Any]:
        return to_json(self)

    def summary(self) -> str:
        if self.status == "not-run":
            return f"not run here: {self.reason}"
        if self.generation:
            return f"{self._head} {self.generation.get('summary', '')}".rstrip()
        if not self.outputs:
            return f"FAILED: {self.reason}"
        head = self._head
        return f"{head} cos {self.min_cosine:.6f} max|err| {self.max_abs_error:.2e}"
