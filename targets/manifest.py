"""`Manifest`: what an artifact directory holds, how it was made, and how it verified.

Every artifact is a directory with the backend's files and ``manifest.json``. The manifest is written
once, by the build, through `Manifest.to_dict`; every reader (inspect, profile, release, compare,
conformance) gets it through `read_artifact` as a typed object, so a renamed or missing key is an
error naming the key, never a silent ``None``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from targets.cost import GraphCost
from targets.decoder import LanguageModelRecord
from targets.errors import SchemaError, UsageError
from targets.export import ExportRecord
from targets.files import sha256_file
from targets.host import HostFacts
from targets.numerics import Numerics
from targets.request import BuildRequest
from targets.schema import check_version, from_json, to_json
from targets.signature import Signature

MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA_VERSION = 3
STAGING_MARK = ".staging-"
#: a build whose verification failed is kept beside its place as ``<target>.failed``, for inspection
FAILED_SUFFIX = ".failed"


@dataclass(frozen=True)
class ModelRef:
    name: str
    source: str
    source_kind: str  # "pytorch", "onnx" or "huggingface"
    source_digest: str


@dataclass(frozen=True)
class TargetRef:
    id: str
    name: str
    vendor: str
    spec_digest: str
    spec_file: str
    reach: str


@dataclass(frozen=True)
class BackendRef:
    name: str
    options: Mapping[str, Any]  # resolved, as the backend used them


@dataclass(frozen=True)
class FileRecord:
    sha256: str
    bytes: int


@dataclass(frozen=True)
class CalibrationRecord:
    origin: str
    digest: str
    samples: int
    random: bool


@dataclass(frozen=True)
class Reproducibility:
    content_digest: str
    byte_identical_expected: bool
    normalized: Mapping[str, str]  # file -> how it was normalised before hashing
    excluded: Mapping[str, str]  # file -> why it is left out of the content digest


@dataclass(frozen=True)
class SpeedCheck:
    """A rewrite chipfit made, kept only if the artifact measured faster with it than without it."""

    rewrite: str  # e.g. "fusion"
    kept: bool
    with_ms: float | None  # median latency with the rewrite, as the runtime loads the artifact
    without_ms: float | None
    method: str  # how the figures were obtained ("measured on this host, 5 interleaved rounds"), or why not
    rule: str = ""  # the decision rule applied


@dataclass(frozen=True)
class Candidate:
    """One backend a target could ship, as built and timed for the choice."""

    backend: str
    status: str  # verified, not-run, failed, error
    latency_ms: float | None = None
    method: str = ""  # "measured on this host", "measured on this host as a proxy: ...", or why not timed
    note: str = ""
    #: figures the race took besides the time of a call (a decoder's ttft_ms, decode_tok_s, prefill_tok_s)
    figures: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class BackendChoice:
    """Why this artifact's backend is the target's primary one: every candidate with its figure."""

    chosen: str
    rule: str
    candidates: tuple[Candidate, ...]


@dataclass(frozen=True)
class Manifest:
    schema_version: int
    chipfit_version: str
    toolchain: Mapping[str, str]
    request: BuildRequest  # what was asked for
    model: ModelRef
    target: TargetRef
    backend: BackendRef
    precision: str
    passes: tuple[Mapping[str, Any], ...]
    calibration: CalibrationRecord | None
    quantization: Mapping[str, Any] | None  # the accuracy report of the precision stage
    fusion: Mapping[str, Any]  # the fusion stage's record, or why it did not apply
    fallbacks: tuple[str, ...]
    signature: Signature
    files: Mapping[str, FileRecord]
    reproducibility: Reproducibility | None
    primary_file: str
    numerics: Numerics
    cost: GraphCost | None
    notes: tuple[str, ...]
    build_seconds: float
    #: decoder LMs: architecture, KV-cache layout, context, memory plan and the programs' forms
    llm: LanguageModelRecord | None = None
    #: rewrites kept or dropped by measurement (fusion), with both figures
    speed_checks: tuple[SpeedCheck, ...] = ()
    #: for a target with several backends: the candidates and why this one is primary
    backend_choice: BackendChoice | None = None
    #: the machine that built and verified the artifact (its ISA decides which execution verified it)
    host: HostFacts | None = None
    #: a model exported from a framework's folder (optimum): the exporter, task, processor and reference check
    export: ExportRecord | None = None

    @property
    def size_bytes(self) -> int:
        return sum(f.bytes for f in self.files.values())

    def to_dict(self) -> dict[str, Any]:
        return to_json(self)

    @staticmethod
    def from_dict(data: Any, origin: str = "<manifest>") -> "Manifest":
        check_version(data, MANIFEST_SCHEMA_VERSION, "manifest", origin,
                      "Rebuild the artifact with this chipfit (`chipfit build`)")
        return from_json(Manifest, data, "", origin)


@dataclass(frozen=True)
class Artifact:
    path: Path
    manifest: Manifest

    @property
    def target(self) -> str:
        return self.manifest.target.id

    @property
    def backend(self) -> str:
        return self.manifest.backend.name

    @property
    def size_bytes(self) -> int:
        return self.manifest.size_bytes

    @property
    def digest(self) -> str:
        """sha256 of manifest.json, which holds every file's sha256: the artifact's identity."""
        return sha256_file(self.path / MANIFEST_NAME)

    def file_problems(self) -> list[str]:
        """Files that are missing or whose sha256 differs from the manifest's."""
        problems = []
        for rel, meta in self.manifest.files.items():
            path = self.path / rel
            if not path.is_file():
                problems.append(f"{rel}: missing")
            elif sha256_file(path) != meta.sha256:
                problems.append(f"{rel}: sha256 differs from the manifest (modified or corrupt)")
        return problems


def read_manifest(path: Path) -> Manifest:
    try:
        data = json.loads(Path(path).read_text())
    except ValueError as exc:
        raise SchemaError(f"{path}: not valid JSON ({exc})") from exc
    return Manifest.from_dict(data, str(path))


def read_artifact(path: str | Path) -> Artifact:
    path = Path(path)
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.is_file():
        if STAGING_MARK in path.name:
            raise UsageError(f"{path}: an unfinished build's staging directory, not an artifact (safe to delete)")
        raise UsageError(f"{path}: not a chipfit artifact (no {MANIFEST_NAME}); give build/<model>/<target>")
    return Artifact(path, read_manifest(manifest_path))


def find_artifacts(root: str | Path) -> list[Artifact]:
    """Every artifact at or under ``root`` (staging and failed directories excluded)."""
    root = Path(root)
    if (root / MANIFEST_NAME).is_file():
        return [read_artifact(root)]
    found = []
    for manifest in sorted(root.rglob(MANIFEST_NAME)):
        directory = manifest.parent
        if any(STAGING_MARK in part or part.startswith(".") or part.endswith(FAILED_SUFFIX)
               for part in directory.relative_to(root).parts):
            continue
        found.append(read_artifact(directory))
    return found
