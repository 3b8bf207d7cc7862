"""Model kinds: what differs between building a graph and building a decoder LM (and the multi-part models next).

A kind says how to plan a target for its models, which backends can build them, what its input stage reads,
how one cell is lowered and verified, how a candidate is timed for the backend race, and what its manifest
records. The planner, the cell loop, the race and the manifest writer are shared; nothing else branches on
the kind. `compiler.build.kind_of` picks the kind of a model.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

from compiler.build.cell import Built, Cell, Where
from compiler.build.context import BuildContext, BuildOptions, BuildRun
from targets.backend import Backend
from targets.host import HostInfo
from targets.manifest import Manifest
from targets.request import BuildRequest
from targets.spec import TargetSpec


@dataclass(frozen=True)
class Contender:
    """A candidate as the backend race times it."""

    call: Callable[[], object]  # one timed unit: a graph's batch, a decoder's prompt and continuation
    proxy: bool = False
    note: str = ""
    #: False where running it here swaps the target's accelerator for this CPU (an NPU provider's folder on the CPU
    #: provider): its time says nothing of the target's, so it is not raced
    representative: bool = True
    #: what the race reports besides the time of a call, read after the rounds (a decoder's TTFT and decode rate)
    figures: Callable[[], Mapping[str, float]] | None = None


class ModelKind(Protocol):
    name: str
    #: several backends of one target that build this kind race, and the fastest verified one ships; else the first
    #: in the target's order that builds it is the target's artifact
    races: bool
    #: on a ``build_all_backends`` target the candidates race too: the fastest owns ``<target>``, the others stay
    #: beside it as ``<target>@<backend>`` (else the first backend owns it and nothing is timed)
    races_all_backends: bool

    def accepts(self, model: Any) -> bool: ...

    def check_model(self, model: Any, ctx: BuildContext) -> None:
        """Refuse (UsageError) a model no installed backend can build, before any target is planned."""
        ...

    def plan_target(self, model: Any, request: BuildRequest, target: TargetSpec, precision: str,
                    options: BuildOptions) -> Mapping[str, Any]:
        """What this kind decides per target (`Cell` fields: settings, or context and memory plan); refuses a
        request the target cannot honour (UsageError)."""
        ...

    def candidates(self, model: Any, backends: Sequence[Backend], precision: str, target: TargetSpec,
                   request: BuildRequest, ctx: BuildContext) -> tuple[list[Backend], str]:
        """The backends of ``backends`` that build ``model`` at ``precision``, and why none does where none does."""
        ...

    def check_backend(self, backend: Backend, cell_fields: Mapping[str, Any], target: TargetSpec) -> None:
        """Refuse (UsageError) a backend that cannot honour this cell's settings, before any work."""
        ...

    def prepare(self, model: Any, cells: Sequence[Cell], options: BuildOptions, ctx: BuildContext) -> Any:
        """The input stage: what every cell is calibrated and verified on, read once."""
        ...

    def lowering(self, model: Any, cell: Cell) -> str:
        """What the progress line says while the cell is lowered."""
        ...

    def build_cell(self, model: Any, cell: Cell, inputs: Any, run: BuildRun, stack: ExitStack,
                   where: Where) -> Built:
        """Lower, hash and verify ``cell`` in a staging folder entered on ``stack``; the manifest describes it."""
        ...

    def timer(self, cell: Cell, artifact: Path, manifest: Manifest, inputs: Any, host: HostInfo) -> Contender:
        """For the race (kinds whose ``races`` is true): the call timed, and how it runs here."""
        ...
