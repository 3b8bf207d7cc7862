"""`ReleaseIndex`: ``dist/index.json``, what a release built, from what, and how each artifact verified and measured.

Written by the release driver; read by the release summary, ``chipfit release --json`` and
``chipfit compare`` (which fails the gate on cells that errored, failed or vanished).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from targets.schema import check_version, from_json, to_json

INDEX_NAME = "index.json"
INDEX_SCHEMA_VERSION = 2
#: cell statuses: "built", "cached", "partial" (some backends' artifacts kept, others failed),
#: "failed" (verification failed), "error" (could not be built)
CELL_STATUSES = ("built", "cached", "partial", "failed", "error")


@dataclass(frozen=True)
class NumericsSummary:
    status: str
    proxy: bool
    reason: str
    min_cosine: float | None
    max_abs_error: float | None


@dataclass(frozen=True)
class ProfileSummary:
    runner: str
    latency_ms_p50: float | None
    latency_method: str
    energy_mj: float | None
    energy_method: str
    peak_memory_mb: float | None
    artifact_mb: float
    reused_measurement: bool
    llm: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ArtifactEntry:
    path: str  # relative to dist/
    model: str
    target: str
    backend: str
    precision: str
    manifest_sha256: str
    content_digest: str | None
    byte_identical_expected: bool | None
    size_bytes: int
    numerics: NumericsSummary
    toolchain: Mapping[str, str]
    profile: ProfileSummary | None = None


@dataclass(frozen=True)
class ReproducibilityCheck:
    ok: bool
    artifact: str
    detail: str


@dataclass(frozen=True)
class CellEntry:
    model: str
    precision: str
    target: str
    status: str  # one of CELL_STATUSES
    seconds: float
    key: str
    components: Mapping[str, str]
    cache_note: str
    message: str
    stage: str  # the build stage that failed, if one did
    log: str | None
    artifacts: tuple[ArtifactEntry, ...]
    failed_backends: tuple[str, ...]  # backends of a partial cell that did not produce an artifact
    reproducible: tuple[ReproducibilityCheck, ...] | None

    @property
    def label(self) -> str:
        return f"{self.model}/{self.precision}/{self.target}"


@dataclass(frozen=True)
class ReleaseIndex:
    schema_version: int
    release: str
    release_file: str
    release_file_sha256: str
    created: str
    chipfit_version: str
    host: Mapping[str, Any]
    cache: str
    seconds: float
    thresholds: Mapping[str, Any]
    summary: Mapping[str, Any]
    cells: tuple[CellEntry, ...]
    profile: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return to_json(self)

    @staticmethod
    def from_dict(data: Any, origin: str = "<index>") -> "ReleaseIndex":
        check_version(data, INDEX_SCHEMA_VERSION, "release index", origin,
                      "Run the release again with this chipfit")
        return from_json(ReleaseIndex, data, "", origin)
