"""The one channel into a backend: a `LowerJob` made from a cell, handed to ``lower`` or ``lower_decoder``.

Every caller that lowers (the build's cells, the conformance kit's op battery) goes through here, so a
backend's own failure is always a `LowerError` naming the backend, the model and the target.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from compiler.errors import ChipfitError, LowerError
from targets.backend import Backend, BuildData, Lowered, LowerJob
from targets.host import HostInfo
from targets.model import DecoderModel, TracedModel
from targets.request import BuildRequest
from targets.spec import TargetSpec


def make_job(backend: Backend, model: TracedModel | DecoderModel, target: TargetSpec, precision: str,
             request: BuildRequest, workdir: Path, host: HostInfo, data: BuildData = BuildData(),
             context: int | None = None, weight_method: str = "", int8_share: float = 0.0) -> LowerJob:
    return LowerJob(model=model, target=target, precision=precision, options=backend.resolve_options(target, host),
                    request=request, workdir=workdir, host=host, data=data, context=context,
                    weight_method=weight_method, int8_share=int8_share)


def lower(backend: Backend, job: LowerJob, entry: Callable[[LowerJob], Lowered] | None = None) -> Lowered:
    """``backend`` lowers ``job`` through ``entry`` (its ``lower``, or the method the model's kind uses, e.g.
    `DecoderLowering.lower_decoder`)."""
    try:
        return (entry or backend.lower)(job)
    except ChipfitError:
        raise
    except Exception as exc:  # a backend's own failure is this cell's LOWER failure
        raise LowerError(f"{backend.name} could not lower {job.model.name} for {job.target.id}: "
                         f"{type(exc).__name__}: {exc}") from exc
