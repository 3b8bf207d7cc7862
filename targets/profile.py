"""`Profile`: what was measured (or estimated) of one artifact, with its raw samples and provenance.

Written as ``profile.json`` beside the artifact's manifest by `profiles.profile`; read by compare,
the release index and the reports through `Profile.from_dict`. Units are in the field names.
Every figure says how it was had: ``measured:<runner>[:<meter>]`` or ``estimated:<model>``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from targets.schema import check_version, from_json, to_json

PROFILE_NAME = "profile.json"
PROFILE_SCHEMA_VERSION = 2


@dataclass(frozen=True)
class LatencySummary:
    runs: int
    latency_ms_p50: float
    latency_ms_p90: float
    latency_ms_p99: float
    latency_ms_mean: float
    latency_ms_min: float
    cv: float
    median_ci_ms: tuple[float, float]
    noisy: bool


@dataclass(frozen=True)
class Profile:
    schema_version: int
    artifact: str
    artifact_digest: str  # sha256 of the artifact's manifest.json
    model: str
    target: str
    backend: str
    precision: str
    host: Mapping[str, Any]
    tool_versions: Mapping[str, str]
    built_with: Mapping[str, str]
    settings: Mapping[str, Any]  # the ProfileRequest's measurement form
    weight_mb: float
    artifact_mb: float
    #: the artifact's verification against the float reference (from its manifest): the accuracy compare gates
    numerics_status: str
    min_cosine: float | None
    # --- the measurement (what `reuse` keeps) ---
    measured_at: str
    runner: str  # "host", "rpc:<key>" or "estimate"
    runner_description: str
    cpus: tuple[int, ...]
    latency: LatencySummary | None
    latency_samples_ms: tuple[float, ...]
    latency_groups: tuple[int, ...]  # samples per runner process
    peak_memory_mb: float | None
    runner_baseline_mb: float | None
    per_op: tuple[Mapping[str, Any], ...]
    per_op_source: str
    energy_samples_mj: tuple[float, ...]
    energy_groups: tuple[int, ...]
    energy_detail: Mapping[str, Any] | None
    energy_error: str
    not_measured_because: str
    #: decoder LMs: time to first token, prefill and decode rates at KV depths, energy per token, roofline
    llm: Mapping[str, Any] | None
    # --- the figures reported, each with its method ---
    reused_measurement: bool
    latency_ms_p50: float | None
    latency_method: str
    energy_mj: float | None
    energy_method: str
    estimate: Mapping[str, Any] | None
    #: the estimate at a fixed efficiency: moves only with the artifact or the spec; compare gates on it
    estimate_fixed: Mapping[str, Any] | None
    estimate_vs_measured: float | None
    memory_capacity_mb: float | None
    memory_error: str

    @property
    def key(self) -> str:
        return f"{self.model}/{self.target}/{self.backend}/{self.precision}"

    @property
    def measured(self) -> bool:
        return self.latency_method.startswith("measured")

    def to_dict(self) -> dict[str, Any]:
        return to_json(self)

    @staticmethod
    def from_dict(data: Any, origin: str = "<profile>") -> "Profile":
        check_version(data, PROFILE_SCHEMA_VERSION, "profile", origin,
                      "Re-profile it with this chipfit (`chipfit profile`)")
        return from_json(Profile, data, "", origin)

    def replace(self, **changes: Any) -> "Profile":
        return dataclasses.replace(self, **changes)


#: the fields a runner measured: kept as they are when a profile of the same artifact is reused
MEASURED_FIELDS = ("measured_at", "runner", "runner_description", "cpus", "latency", "latency_samples_ms",
                   "latency_groups", "peak_memory_mb", "runner_baseline_mb", "per_op", "per_op_source",
                   "energy_samples_mj", "energy_groups", "energy_detail", "energy_error", "not_measured_because", "llm")
