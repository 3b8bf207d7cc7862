"""The one planner: every cell (target x backend) of a build, checked before any work.

A bad target name, a precision a target cannot run, missing calibration data, a bad backend option, a model no
backend of a target builds: each fails here (exit 2), for every kind of model, for a build, a release and the
conformance kit alike. Where a target has several backends that build the model and its kind races them, each is
a candidate built under ``<model>/.candidates``; ``build_all_backends`` targets keep every one, side by side.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

from compiler.build.cell import CANDIDATES, Cell
from compiler.build.context import BuildContext, BuildOptions
from compiler.build.kinds import ModelKind
from compiler.build.manifest import check_replaceable
from compiler.errors import UsageError
from targets.backend import Backend
from targets.request import BuildRequest, check_request
from targets.spec import TargetSpec


def plan(model: Any, kind: ModelKind, options: BuildOptions, ctx: BuildContext) -> list[Cell]:
    kind.check_model(model, ctx)
    requests = options.requests(model)
    if not requests:
        raise UsageError("no targets given: pass -t TARGET (see `chipfit targets`)")
    cells: list[Cell] = []
    model_dir = options.out_dir / model.name
    for request in requests:
        target = ctx.targets.get(request.target)
        precision, fields, backends = plan_target(kind, model, request, target, options, ctx)
        able, refusal = kind.candidates(model, backends, precision, target, request, ctx)
        cell_request = replace(request, precision=precision)
        if not able:
            cells.append(Cell(cell_request, target, None, precision, model_dir / target.id, refusal=refusal, **fields))
            continue
        keep_all = target.build_all_backends
        choose = (kind.races and len(able) > 1 and not request.backend
                  and (not keep_all or kind.races_all_backends))
        built = able if choose or keep_all or request.backend else able[:1]
        for backend in built:
            backend.check_options(target)
            kind.check_backend(backend, fields, target)
            # The first backend built (the only one, or the chosen one) owns <model>/<target>; with
            # build_all_backends the others sit beside it as <target>@<backend>.
            beside = model_dir / f"{target.id}@{backend.name}"
            dirname = target.id if backend is built[0] or choose else beside.name
            check_replaceable(model_dir / dirname, precision, options.force)
            if choose and keep_all:
                check_replaceable(beside, precision, options.force)
            dest = model_dir / CANDIDATES / beside.name if choose else model_dir / dirname
            cells.append(Cell(cell_request, target, backend, precision, dest, model_dir / dirname if choose else None,
                              beside if choose and keep_all else None, **fields))
    return cells


def plan_target(kind: ModelKind, model: Any, request: BuildRequest, target: TargetSpec, options: BuildOptions,
                ctx: BuildContext) -> tuple[str, Mapping[str, Any], list[Backend]]:
    """What the planner decides of one request for one target before it looks at the backends' candidates: the
    options within their bounds, ``--backend`` one of the target's, the precision, the kind's settings for the
    target (int8 scheme, int4 blocks, context and memory plan), and the backends that would build it. Needs of the
    model only what its kind's ``plan_target`` reads (the graph kind reads nothing of it), so the release driver
    checks a graph cell here before any model is loaded."""
    check_request(request, lambda o: o.cli_flag or o.name)
    if request.backend and request.backend not in target.backends:
        raise UsageError(f"--backend {request.backend}: target {target.id} is built by {', '.join(target.backends)}")
    names = [request.backend] if request.backend else list(target.backends)
    precision = request.precision or target.default_precision
    fields = kind.plan_target(model, request, target, precision, options)
    return precision, fields, [ctx.backends.get(name) for name in names]
