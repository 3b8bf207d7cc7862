"""Complete records (manifests) for tests that care about a few fields."""

from __future__ import annotations

from typing import Any, Mapping

from targets.manifest import (MANIFEST_SCHEMA_VERSION, BackendRef, FileRecord, Manifest, ModelRef, TargetRef)
from targets.numerics import Numerics
from targets.request import BuildRequest, ModelSource
from targets.signature import Signature


def make_manifest(files: Mapping[str, FileRecord] | None = None, **fields: Any) -> Manifest:
    """A manifest with every field filled: ``fields`` over defaults for a model ``m`` on target ``t``."""
    base: dict[str, Any] = dict(
        schema_version=MANIFEST_SCHEMA_VERSION, chipfit_version="test", toolchain={},
        request=BuildRequest(ModelSource("m.onnx", "m"), "t"), model=ModelRef("m", "m.onnx", "onnx", "0" * 64),
        target=TargetRef("t", "T", "v", "0" * 64, "t.toml", "none"), backend=BackendRef("b", {}), precision="fp32",
        passes=(), calibration=None, quantization=None, fusion={}, fallbacks=(), signature=Signature((), ()),
        files=dict(files or {}), reproducibility=None, primary_file=next(iter(files or {"model.bin": 0})),
        numerics=Numerics("not-run", "fp32", reason="test"), cost=None, notes=(), build_seconds=0.0)
    base.update(fields)
    return Manifest(**base)
