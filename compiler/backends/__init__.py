"""Backends: one folder each (``tvm/``, ``onnxruntime/``, ``coreml/``), the same files in each.

Every backend folder holds ``__init__.py`` (exports ``backend``), ``lower.py``, ``runner.py``,
``options.py`` and a ``README.md``; backends register through the ``chipfit.backends`` entry point
group, in-tree and third-party alike. The protocol they implement is `targets.backend.Backend`,
re-exported here so that a plugin imports everything it needs from one place.
"""

from __future__ import annotations

from targets.backend import (
    BACKEND_API_VERSION,
    Backend,
    BackendBase,
    BuildData,
    DecoderForm,
    DecoderRunner,
    Device,
    DeviceTiming,
    Generation,
    GenerationPlan,
    Lowered,
    Normalizer,
    NotRunnable,
    OptionField,
    OptionSchema,
    RunnerBase,
    Runner,
    RunPlan,
    calibrated_precisions,
    code_fingerprint,
    host_mismatch,
    package_version,
)
from targets.registry import backend_registry

__all__ = [
    "BACKEND_API_VERSION",
    "Backend",
    "BackendBase",
    "DecoderForm",
    "DecoderRunner",
    "Device",
    "DeviceTiming",
    "Generation",
    "GenerationPlan",
    "Lowered",
    "Normalizer",
    "NotRunnable",
    "OptionField",
    "OptionSchema",
    "RunPlan",
    "Runner",
    "RunnerBase",
    "backend_registry",
    "calibrated_precisions",
    "code_fingerprint",
    "host_mismatch",
    "package_version",
]
