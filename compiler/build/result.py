"""`CellResult`: what became of one build cell (target x backend), for the table, the release and CI."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from profiles.latency import LatencyStats
from targets.manifest import BackendChoice
from targets.numerics import Numerics
from targets.schema import to_json


@dataclass(frozen=True)
class CellResult:
    target: str
    backend: str
    precision: str
    status: str  # "verified", "not-run", "failed" (verification) or "error" (could not build)
    artifact: str = ""
    size_bytes: int = 0
    build_seconds: float = 0.0
    numerics: Numerics | None = None
    latency: LatencyStats | None = None
    quantization: Mapping[str, Any] | None = None
    fusion: Mapping[str, Any] | None = None
    fallbacks: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    message: str = ""
    #: the build stage that failed (from the type of the error it raised): LOAD, LOWER, QUANTIZE, RUN, MISMATCH
    stage: str = ""
    traceback: str = ""
    unsupported_op: str = ""  # the op a backend could not lower, when that is why the cell failed
    choice: BackendChoice | None = None  # the target's backend candidates and why this one was chosen

    @property
    def ok(self) -> bool:
        return self.status in ("verified", "not-run")

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "backend": self.backend,
            "precision": self.precision,
            "status": self.status,
            "stage": self.stage,
            "artifact": self.artifact,
            "size_bytes": self.size_bytes,
            "build_seconds": round(self.build_seconds, 3),
            "numerics": self.numerics.to_dict() if self.numerics else None,
            "host_latency": (
                {"latency_ms_p50": self.latency.latency_ms_p50, "runs": self.latency.runs, "cv": self.latency.cv}
                if self.latency
                else None
            ),
            "quantization": dict(self.quantization) if self.quantization else None,
            "fusion": dict(self.fusion) if self.fusion else None,
            "fallbacks": list(self.fallbacks),
            "warnings": list(self.warnings),
            "message": self.message,
            "traceback": self.traceback,
            "backend_choice": to_json(self.choice) if self.choice else None,
        }


def exit_code(results: Sequence[CellResult]) -> int:
    return 0 if all(r.ok for r in results) else 1
