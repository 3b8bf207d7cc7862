"""`Comparison`: a baseline against a current set of profiles, one `Verdict` per cell and metric."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from targets.schema import check_version, from_json, to_json

COMPARISON_SCHEMA_VERSION = 1
#: verdict statuses; "regression" and "failed" fail the gate, "alarm" is reported
STATUSES = ("ok", "regression", "improvement", "alarm", "failed", "info")


@dataclass(frozen=True)
class Verdict:
    key: str  # model/target/backend/precision
    metric: str
    status: str  # one of STATUSES
    baseline: float | None
    current: float | None
    ratio: float | None
    interval: tuple[float, float] | None
    threshold: float
    test: str  # "bootstrap ratio of medians", "direct", ...
    note: str = ""
    unit: str = ""
    method: str = ""  # "measured" or "estimated" (or "" where neither applies)

    def to_dict(self) -> dict[str, Any]:
        return to_json(self)


@dataclass(frozen=True)
class Comparison:
    schema_version: int
    verdicts: tuple[Verdict, ...]
    added: tuple[str, ...]
    removed: tuple[str, ...]
    thresholds: Mapping[str, Any]

    @property
    def failed(self) -> bool:
        return any(v.status in ("regression", "failed") for v in self.verdicts)

    def to_dict(self) -> dict[str, Any]:
        return to_json(self)

    @staticmethod
    def from_dict(data: Any, origin: str = "<comparison>") -> "Comparison":
        check_version(data, COMPARISON_SCHEMA_VERSION, "comparison", origin)
        return from_json(Comparison, data, "", origin)
