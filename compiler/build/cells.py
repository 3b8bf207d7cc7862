"""The one cell loop: each planned cell built by its model's kind in a staging folder, committed into place with
its manifest (or kept as ``<target>.failed`` where verification failed), classified by the type of the error it
raised where it could not be built. A cell that fails is reported and the others still build."""

from __future__ import annotations

import time
import traceback
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Sequence

from compiler.artifact import FAILED_SUFFIX
from compiler.build.cell import Cell, Where
from compiler.build.context import BuildRun
from compiler.build.kinds import ModelKind
from compiler.build.race import choose_backend
from compiler.build.result import CellResult
from compiler.errors import ChipfitError, stage_of


def build_cells(model: Any, kind: ModelKind, cells: Sequence[Cell], inputs: Any, run: BuildRun) -> list[CellResult]:
    progress = run.ctx.progress
    results: list[CellResult] = []
    groups: dict[Path, list[tuple[Cell, CellResult]]] = {}
    for n, cell in enumerate(cells, 1):
        if cell.backend is None:
            results.append(CellResult(cell.target.id, "-", cell.precision, "error", message=cell.refusal, stage="LOWER"))
            progress(f"[{n}/{len(cells)}] {cell.target.id}: {cell.refusal}")
            continue
        progress(f"[{n}/{len(cells)}] {cell.target.id}: {kind.lowering(model, cell)}")
        result = build_cell(model, kind, cell, inputs, run)
        progress(f"[{n}/{len(cells)}] {cell.target.id}: {result.status}")
        if cell.chosen_dest is None:
            results.append(result)
        else:
            groups.setdefault(cell.chosen_dest, []).append((cell, result))
    for group in groups.values():
        results += choose_backend(group, kind, inputs, run.ctx.host, progress)
    return results


def build_cell(model: Any, kind: ModelKind, cell: Cell, inputs: Any, run: BuildRun) -> CellResult:
    start = time.perf_counter()
    base = dict(target=cell.target.id, backend=cell.backend.name, precision=cell.precision)
    where = Where()
    try:
        with ExitStack() as stack:
            built = kind.build_cell(model, cell, inputs, run, stack, where)
            manifest, numerics = built.manifest, built.numerics
            common = dict(numerics=numerics, size_bytes=manifest.size_bytes, build_seconds=manifest.build_seconds,
                          quantization=built.quantization, fusion=built.fusion, fallbacks=manifest.fallbacks)
            if numerics.status == "failed":
                failed = built.staging.commit(manifest, cell.dest.with_name(cell.dest.name + FAILED_SUFFIX))
                reason = f" ({numerics.reason})" if numerics.reason else ""
                return CellResult(**base, status="failed", artifact=str(failed), **common,
                                  message=f"verification failed{reason}; artifact kept for inspection at {failed}",
                                  stage=built.failed_stage)
            dest = built.staging.commit(manifest)
    except ChipfitError as exc:
        return CellResult(**base, status="error", build_seconds=time.perf_counter() - start, message=str(exc),
                          stage=stage_of(exc, where.stage), traceback=_traceback(exc),
                          unsupported_op=getattr(exc, "op", ""))
    except Exception as exc:  # a bug must not take the other cells down
        return CellResult(**base, status="error", build_seconds=time.perf_counter() - start,
                          message=f"{type(exc).__name__}: {exc}", stage=where.stage, traceback=_traceback(exc))
    return CellResult(**base, status=numerics.status, artifact=str(dest), latency=built.latency,
                      warnings=built.warnings, **common)


def _traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))
