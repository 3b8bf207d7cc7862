"""Model kinds: what differs between building a graph and building a decoder LM (and the multi-part models next).

A kind says how to plan a target for its models, which backends can build them, what its input stage reads,
how one cell is lowered and verified, how a candidate is timed for the backend race, and what its manifest
records. The planner, the cell loop, the race and the manifest writer are shared; nothing else branches on
the kind. `compiler.build.kind_of` picks the kind of a model.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

from compiler.build.cell import Built, Cell, Where
from compiler.build.context import BuildContext, BuildOptions, BuildRun
from targets.backend import Backend
from targets.host import HostInfo
from targets.manifest import Manifest
from targets.request import BuildRequest
from targets.spec import TargetSpec


class ModelKind(Protocol):
    name: str
    #: several backends of one target that build this kind race, and the fastest verified one ships; else the first
    #: in the target's order that builds it is the target's artifact
    races: bool

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

    def timer(self, cell: Cell, artifact: Path, manifest: Manifest, inputs: Any, host: HostInfo
              ) -> tuple[Callable[[], object], bool, str]:
        """For the race (kinds whose ``races`` is true): (the call timed, whether it runs as a proxy, the proxy's
        note)."""
        ...
