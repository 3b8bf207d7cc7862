"""Complete `Profile` records for tests that care about a few fields."""

from __future__ import annotations

from typing import Any

import numpy as np

from targets.profile import PROFILE_SCHEMA_VERSION, LatencySummary, Profile

_TUPLES = ("latency_samples_ms", "latency_groups", "energy_samples_mj", "energy_groups", "cpus", "per_op")


def make_profile(**fields: Any) -> Profile:
    """A profile with every field filled: ``fields`` (None for a tuple field means empty) over defaults."""
    samples = fields.get("latency_samples_ms")
    base: dict[str, Any] = {
        "schema_version": PROFILE_SCHEMA_VERSION, "artifact": "a", "artifact_digest": "0" * 64, "model": "m",
        "target": "host", "backend": "onnxruntime", "precision": "fp32", "host": {}, "tool_versions": {},
        "built_with": {}, "settings": {}, "weight_mb": 1.0, "artifact_mb": 1.0, "numerics_status": "verified",
        "min_cosine": None, "measured_at": "", "runner": "host", "runner_description": "", "cpus": (),
        "latency": None, "latency_samples_ms": (), "latency_groups": (), "peak_memory_mb": None,
        "runner_baseline_mb": None, "per_op": (), "per_op_source": "", "energy_samples_mj": (), "energy_groups": (),
        "energy_detail": None, "energy_error": "", "not_measured_because": "", "llm": None,
        "reused_measurement": False, "latency_ms_p50": float(np.median(samples)) if samples else None,
        "latency_method": "measured:host", "energy_mj": None, "energy_method": "", "estimate": None,
        "estimate_fixed": None, "estimate_vs_measured": None, "memory_capacity_mb": None, "memory_error": "",
    }
    for key, value in fields.items():
        if key not in base:
            raise KeyError(f"Profile has no field {key!r}")
        if key in _TUPLES:
            value = tuple(value) if value is not None else ()
        base[key] = value
    if isinstance(base["latency"], dict):
        base["latency"] = LatencySummary(**base["latency"])
    return Profile(**base)
