"""The one manifest writer: every kind's artifact described through the typed `Manifest`, and later changes to a
written manifest (the backend choice) made with ``replace`` on what `read_manifest` gives, never as raw JSON."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

from compiler import __version__
from compiler.build.cell import Cell
from compiler.errors import UsageError
from targets.backend import Lowered
from targets.errors import ChipfitError
from targets.files import write_text_atomic
from targets.host import HostInfo
from targets.manifest import (MANIFEST_NAME, MANIFEST_SCHEMA_VERSION, BackendChoice, BackendRef, FileRecord,
                              Manifest, ModelRef, Reproducibility, TargetRef, read_manifest)
from targets.numerics import Numerics
from targets.request import ProfileRequest
from targets.signature import Signature


def describe(model: Any, cell: Cell, lowered: Lowered, files: Mapping[str, FileRecord], numerics: Numerics,
             versions: Mapping[str, str], reproducibility: Reproducibility | None, seconds: float, host: HostInfo,
             **kind_fields: Any) -> Manifest:
    """The manifest of ``cell``'s artifact; ``kind_fields`` are what the model's kind adds (calibration,
    quantization, fusion, cost, llm, speed checks, notes beyond the backend's)."""
    target = cell.target
    fields: dict[str, Any] = dict(calibration=None, quantization=None, fusion={}, cost=None,
                                  notes=tuple(lowered.notes))
    fields.update(kind_fields)
    return Manifest(
        schema_version=MANIFEST_SCHEMA_VERSION,
        chipfit_version=__version__,
        toolchain=dict(versions),
        request=replace(cell.request, profile=ProfileRequest()),  # profiling settings are not the artifact's
        model=ModelRef(model.name, model.source, model.source_kind, model.source_digest),
        target=TargetRef(target.id, target.name, target.vendor, target.digest, target.source_file, target.reach.kind),
        backend=BackendRef(cell.backend.name, dict(lowered.options)),
        precision=cell.precision,
        passes=tuple(dict(p) for p in lowered.passes),
        fallbacks=tuple(lowered.fallbacks),
        signature=lowered.signature if lowered.signature else Signature((), ()),
        files=dict(files),
        reproducibility=reproducibility,
        primary_file=lowered.files[0],
        numerics=numerics,
        build_seconds=round(seconds, 3),
        host=host.facts(),
        **fields,
    )


def record_choice(artifact: Path, choice: BackendChoice) -> None:
    """The target's backend choice added to the chosen candidate's manifest (atomically)."""
    path = artifact / MANIFEST_NAME
    manifest = replace(read_manifest(path), backend_choice=choice)
    write_text_atomic(path, json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n")


def check_replaceable(dest: Path, precision: str, force: bool) -> None:
    """An artifact of another precision already at ``dest`` is not replaced silently (`--force` replaces it)."""
    if force or not (dest / MANIFEST_NAME).is_file():
        return
    try:
        existing = read_manifest(dest / MANIFEST_NAME).precision
    except ChipfitError:
        return  # not readable as a manifest of this chipfit: nothing it says can be kept
    if existing != precision:
        raise UsageError(f"{dest} holds a {existing} artifact and this build makes {precision}: give another output "
                         "folder (-o), or --force to replace it")
