"""The build: one model x several targets -> verified artifacts, through one pipeline for every kind of model.

    plan (`plan`) -> input stage (the kind's ``prepare``: calibration, samples, evaluation set, reference)
      -> cell loop (`cells`: staging, the kind's lowering through one `LowerJob` per cell, verification,
         commit or ``<target>.failed``, failures classified by error type)
      -> backend race (`race`: the fastest verified candidate ships) -> manifests (`manifest`, typed)

Every cell is planned first, so that a bad target name, a precision a target cannot run, missing calibration
data or a bad backend option fails before any work (exit 2). A model *kind* (`kinds.graph`, `kinds.decoder`)
says how its models are planned, referenced, lowered, verified and described; nothing else branches on it.
"""

from __future__ import annotations

from typing import Any

from compiler.build.cells import build_cells
from compiler.build.context import BuildContext, BuildOptions, BuildRun, Progress, print_progress
from compiler.build.kinds import ModelKind
from compiler.build.kinds.decoder import DecoderKind
from compiler.build.kinds.vision_language import VisionLanguageKind
from compiler.build.kinds.graph import GraphKind
from compiler.build.manifest import check_replaceable
from compiler.build.plan import plan, plan_target
from compiler.build.result import CellResult, exit_code
from compiler.errors import UsageError
from compiler.toolchain import toolchain_versions

#: every kind of model chipfit builds; a model's kind is the first that accepts it
# the first that accepts a model is its kind: a vision-language model is a decoder with more
KINDS: tuple[ModelKind, ...] = (VisionLanguageKind(), DecoderKind(), GraphKind())


def kind_of(model: Any) -> ModelKind:
    for kind in KINDS:
        if kind.accepts(model):
            return kind
    raise UsageError(f"{type(model).__name__}: not a model chipfit builds (a traced graph or a decoder LM)")


def plan_cells(model: Any, options: BuildOptions, ctx: BuildContext | None = None) -> list:
    """The cells a build of ``model`` would make, checked (UsageError before any work), without building them."""
    return plan(model, kind_of(model), options, ctx or BuildContext())


def check_graph_target(request: Any, target: Any, options: BuildOptions, ctx: BuildContext) -> None:
    """The planner's checks of a graph cell that need no traced model (options within their bounds, ``--backend``,
    the precision stage's settings for the target: int8 scheme, activation type, int4 block size), so a release
    refuses them before any model is loaded or built."""
    plan_target(GraphKind(), None, request, target, options, ctx)


def build(model: Any, options: BuildOptions, ctx: BuildContext | None = None) -> list[CellResult]:
    """Build, verify and write every cell; returns one result per cell (never raises for one bad cell).

    ``model`` is a `TracedModel` (a graph) or a `DecoderModel` (a Hugging Face decoder LM folder)."""
    ctx = ctx or BuildContext()
    kind = kind_of(model)
    cells = plan(model, kind, options, ctx)
    inputs = kind.prepare(model, cells, options, ctx)
    versions = toolchain_versions(sorted({c.backend for c in cells if c.backend}, key=lambda b: b.name))
    return build_cells(model, kind, cells, inputs, BuildRun(options, ctx, versions))


__all__ = ["BuildContext", "BuildOptions", "CellResult", "KINDS", "Progress", "build", "check_graph_target",
           "check_replaceable", "exit_code", "kind_of", "plan_cells", "print_progress"]
