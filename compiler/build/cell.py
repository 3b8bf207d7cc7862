"""`Cell`: one target x backend of a build, as planned; `Built`: what its kind made of it, ready to commit."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from compiler.artifact import Staging
from compiler.passes.quantize import QuantSettings
from profiles.latency import LatencyStats
from targets.backend import Backend
from targets.decoder import MemoryPlan
from targets.manifest import Manifest
from targets.numerics import Numerics
from targets.request import BuildRequest
from targets.spec import TargetSpec

#: where a target's backend candidates are built before one is chosen (inside the model's output folder)
CANDIDATES = ".candidates"


@dataclass(frozen=True)
class Cell:
    request: BuildRequest  # with the precision resolved
    target: TargetSpec
    backend: Backend | None  # None: no backend of the target lowers this model (``refusal`` says why)
    precision: str
    dest: Path
    #: a candidate among the target's backends: where the chosen one goes (``dest`` is then a candidate's place)
    chosen_dest: Path | None = None
    #: where this candidate stays if another is chosen (``<target>@<backend>`` on a build_all_backends target);
    #: None: a losing candidate is removed
    kept_dest: Path | None = None
    refusal: str = ""
    #: graphs: the precision stage's settings for the target
    settings: QuantSettings | None = None
    #: decoder LMs: the context the cache holds and the memory plan made for it from the checkpoint
    context: int | None = None
    memory: MemoryPlan | None = None


@dataclass
class Where:
    """The stage a cell is in: an error that names none of its own belongs to it."""

    stage: str = "LOWER"


@dataclass
class Built:
    """A cell's artifact in its staging folder with its manifest: what the cell loop commits."""

    staging: Staging
    manifest: Manifest
    failed_stage: str = ""  # where verification failed: RUN (the artifact did not run) or MISMATCH
    latency: LatencyStats | None = None
    quantization: Mapping[str, Any] | None = None
    fusion: Mapping[str, Any] | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def numerics(self) -> Numerics:
        return self.manifest.numerics
