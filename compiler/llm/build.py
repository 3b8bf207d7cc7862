"""Build decoder LMs: one Hugging Face model folder x targets -> artifacts that generate text, verified.

Planning comes first and refuses before any work (exit 2): a context beyond the model's positions, a
target whose memory cannot hold the weights (or the asked context), an architecture no backend lowers.
Each target is built by those of its backends that declare the model's family and the precision
(`Backend.decoder_families`, `decoder_precisions`); a target none of whose backends can says why in its
row. The memory plan (weights + KV cache at the context + workspace, against the target's memory) is made
from the checkpoint before lowering and again from the artifact's files after; both go in the manifest.
Every artifact that can run here generates text and is verified against transformers (`compiler.llm.verify`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from compiler import __version__
from compiler.artifact import FAILED_SUFFIX, Staging, hash_files
from compiler.backends import Backend, NotRunnable
from compiler.errors import ChipfitError, LowerError, UsageError, stage_of
from compiler.llm import DecoderModel
from compiler.reproducibility import content_digest
from compiler.llm.verify import DEFAULT_PROMPTS, PromptCase, reference_cases, verify_generation
from compiler.toolchain import toolchain_versions
from targets.decoder import LanguageModelRecord, MemoryPlan, plan_memory
from targets.manifest import MANIFEST_SCHEMA_VERSION, BackendRef, Manifest, ModelRef, TargetRef
from targets.numerics import Numerics
from targets.request import BuildRequest, ProfileRequest, check_request
from targets.signature import Signature
from targets.spec import TargetSpec

#: the context a decoder is built for when none is asked: the model's own limit, capped here (phones rarely
#: hold more, and the cache grows with it), and further by what the target's memory holds
DEFAULT_CONTEXT = 4096
DEFAULT_CHUNK = 64


@dataclass(frozen=True)
class DecoderCell:
    request: BuildRequest
    target: TargetSpec
    backend: Backend | None  # None: no backend of the target lowers this decoder (``refusal`` says why)
    precision: str
    context: int
    plan: MemoryPlan
    dest: Path
    refusal: str = ""


def plan_decoder(model: DecoderModel, options, ctx) -> list[DecoderCell]:
    from compiler.build import check_replaceable

    spec = model.spec
    loaded, broken = ctx.backends.load_all()
    families = {name: list(b.decoder_families) for name, b in loaded.items() if b.decoder_families}
    if not any(spec.model_type in f for f in families.values()):
        supported = sorted({f for fs in families.values() for f in fs})
        raise UsageError(f"{model.source}: {spec.architecture} (model_type {spec.model_type!r}) is lowered by no "
                         f"backend; decoder families supported: {', '.join(supported) or 'none'}"
                         + "".join(f"; {error}" for error in broken.values()))
    cells = []
    for request in options.requests(model):
        check_request(request, lambda o: o.cli_flag or o.name)
        target = ctx.targets.get(request.target)
        precision = request.precision or target.default_precision
        if precision not in target.precisions:
            raise UsageError(f"target {target.id} runs {', '.join(target.precisions)}, not {precision} "
                             f"({target.source_file}: supports.precisions)")
        asked = request.llm.context
        if asked is not None and asked > spec.max_positions:
            raise UsageError(f"--context {asked}: {model.name} handles at most {spec.max_positions} positions "
                             "(config.json max_position_embeddings)")
        capacity = target.hardware.memory_bytes
        block = request.quantization.block_size or (target.quantization.int4_block_sizes[0]
                                                    if target.quantization and target.quantization.int4_block_sizes else 32)
        context = asked or min(spec.max_positions, DEFAULT_CONTEXT)
        plan = plan_memory(spec, context, precision, capacity, block_size=block)
        if not plan.fits:
            gib = 2 ** 30
            if plan.max_context_that_fits is None:
                raise UsageError(
                    f"target {target.id} cannot hold {model.name} at {precision}: the weights alone need "
                    f"{plan.weight_bytes / gib:.2f} GiB (+ workspace), the target has {capacity / gib:.2f} GiB "
                    f"({target.source_file}: hardware.memory_gb); try a smaller precision (--precision int4)")
            if asked is not None:
                raise UsageError(
                    f"--context {asked}: on target {target.id} weights {plan.weight_bytes / gib:.2f} GiB + KV cache "
                    f"{plan.kv_cache_bytes / gib:.2f} GiB + workspace {plan.workspace_bytes / gib:.2f} GiB = "
                    f"{plan.total_bytes / gib:.2f} GiB exceed its {capacity / gib:.2f} GiB; the largest context that "
                    f"fits is {plan.max_context_that_fits} tokens")
            context = plan.max_context_that_fits
            plan = plan_memory(spec, context, precision, capacity, block_size=block)
        names = [request.backend] if request.backend else list(target.backends)
        if request.backend and request.backend not in target.backends:
            raise UsageError(f"--backend {request.backend}: target {target.id} is built by {', '.join(target.backends)}")
        backends = [ctx.backends.get(n) for n in names]
        able = [b for b in backends if spec.model_type in b.decoder_families and precision in b.decoder_precisions]
        if able and target.build_all_backends and not request.backend:
            for skipped in (b for b in backends if b not in able):
                ctx.progress(f"{target.id}: {skipped.name} lowers no {spec.model_type} decoder at {precision}; "
                             f"building with {', '.join(b.name for b in able)}")
        if not target.build_all_backends and not request.backend:
            able = able[:1]
        cell_request = replace(request, precision=precision)
        model_dir = options.out_dir / model.name
        if not able:
            why = "; ".join(f"{b.name} lowers " + (f"{'/'.join(b.decoder_families)} at {'/'.join(b.decoder_precisions)}"
                                                    if b.decoder_families else "no decoder LMs") for b in backends)
            cells.append(DecoderCell(cell_request, target, None, precision, context, plan, model_dir / target.id,
                                     refusal=f"no backend of target {target.id} lowers {spec.model_type} at "
                                             f"{precision} ({why})"))
            continue
        for backend in able:
            # the first backend that lowers this decoder owns build/<model>/<target>; others sit beside it
            dirname = target.id if backend is able[0] else f"{target.id}@{backend.name}"
            check_replaceable(model_dir / dirname, precision, options.force)
            cells.append(DecoderCell(cell_request, target, backend, precision, context, plan, model_dir / dirname))
    return cells


def _prompts(request: BuildRequest) -> list[str]:
    """Verification prompts: one per line of ``--samples`` (a .txt file), else the fixed ones."""
    if request.data.samples:
        path = Path(request.data.samples)
        if path.suffix != ".txt" or not path.is_file():
            raise UsageError(f"--samples {path}: a decoder LM is verified on prompts: give a .txt file, one per line")
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not lines:
            raise UsageError(f"--samples {path}: no prompts in it")
        return lines[:8]
    return list(DEFAULT_PROMPTS)


def build_decoder(model: DecoderModel, options, ctx) -> list:
    from compiler.build import CellResult

    cells = plan_decoder(model, options, ctx)
    ctx.progress(f"reference: transformers eager on {len(_prompts(cells[0].request))} prompt(s)")
    cases = reference_cases(model, _prompts(cells[0].request))
    versions = toolchain_versions(sorted({c.backend for c in cells if c.backend}, key=lambda b: b.name))
    results = []
    for n, cell in enumerate(cells, 1):
        backend = cell.backend.name if cell.backend else "-"
        if cell.backend is None:
            results.append(CellResult(cell.target.id, backend, cell.precision, "error", message=cell.refusal,
                                      stage="LOWER"))
            ctx.progress(f"[{n}/{len(cells)}] {cell.target.id}: {cell.refusal}")
            continue
        ctx.progress(f"[{n}/{len(cells)}] {cell.target.id}: lowering {model.spec.architecture} with {backend} "
                     f"({cell.precision}, context {cell.context})")
        results.append(_build_cell(model, cell, cases, versions, ctx))
        ctx.progress(f"[{n}/{len(cells)}] {cell.target.id}: {results[-1].status}")
    return results


def _build_cell(model: DecoderModel, cell: DecoderCell, cases: Sequence[PromptCase], versions, ctx):
    from compiler.build import CellResult

    start = time.perf_counter()
    base = dict(target=cell.target.id, backend=cell.backend.name, precision=cell.precision)
    where = "LOWER"
    try:
        with Staging(cell.dest) as staging:
            try:
                lowered = cell.backend.lower_decoder(model, cell.target, cell.precision, staging.path, cell.context,
                                                     cell.request.llm.prefill_chunk)
            except ChipfitError:
                raise
            except Exception as exc:
                raise LowerError(f"{cell.backend.name} could not lower {model.name} for {cell.target.id}: "
                                 f"{type(exc).__name__}: {exc}") from exc
            files = hash_files(staging.path, lowered.files)
            seconds = time.perf_counter() - start
            form = lowered.decoder
            weights = sum(f.bytes for rel, f in files.items() if _is_weight_file(rel))
            plan = plan_memory(model.spec, form.context, cell.precision, cell.target.hardware.memory_bytes,
                               kv_bytes_per_element=form.kv_bytes_per_element,
                               chunk=form.prefill_chunk or 128, weight_bytes=weights or None,
                               windowed=form.windowed_cache,
                               basis="weights from the artifact's files; KV cache and workspace computed")
            where = "RUN"
            numerics = _verify(cell, lowered, staging.path, form.name, cases, ctx)
            others = []
            for extra in lowered.extra_decoder_forms:
                checked = _verify(cell, lowered, staging.path, extra.name, cases, ctx)
                others.append({"name": extra.name, "cache_form": extra.cache_form, "programs": list(extra.programs),
                               "runtime": extra.runtime, "prefill_chunk": extra.prefill_chunk,
                               "numerics": checked.to_dict()})
                if checked.status == "failed" and numerics.status != "failed":
                    numerics = replace(numerics, status="failed",
                                       reason=f"the {extra.name} form failed: {checked.reason}")
            if others:
                numerics = replace(numerics, generation={**(numerics.generation or {}), "other_forms": {
                    o["name"]: o["numerics"].get("generation", {}).get("summary") or o["numerics"].get("reason")
                    for o in others}})
            manifest = _manifest(model, cell, lowered, files, numerics, plan, seconds, versions,
                                 content_digest(staging.path, files, cell.backend.normalizers()), tuple(others))
            if numerics.status == "failed":
                failed = staging.commit(manifest, cell.dest.with_name(cell.dest.name + FAILED_SUFFIX))
                return CellResult(**base, status="failed", artifact=str(failed), numerics=numerics,
                                  size_bytes=sum(f.bytes for f in files.values()), build_seconds=seconds,
                                  message=f"verification failed ({numerics.reason}); kept at {failed}",
                                  stage="RUN" if numerics.reason.startswith("running") else "MISMATCH")
            dest = staging.commit(manifest)
    except ChipfitError as exc:
        return CellResult(**base, status="error", build_seconds=time.perf_counter() - start, message=str(exc),
                          stage=stage_of(exc, where))
    except Exception as exc:
        return CellResult(**base, status="error", build_seconds=time.perf_counter() - start,
                          message=f"{type(exc).__name__}: {exc}", stage=where)
    warnings = () if plan.fits else (f"after lowering, the artifact needs {plan.total_bytes / 2**30:.2f} GiB at "
                                     f"context {plan.context}; target {cell.target.id} has "
                                     f"{(plan.capacity_bytes or 0) / 2**30:.2f} GiB",)
    return CellResult(**base, status=numerics.status, artifact=str(dest), size_bytes=sum(f.bytes for f in files.values()),
                      build_seconds=seconds, numerics=numerics, warnings=warnings)


def _verify(cell: DecoderCell, lowered, path: Path, form: str, cases, ctx) -> Numerics:
    """Generate with one form of the artifact and compare with the reference (not-run where it cannot run here)."""
    try:
        plan = cell.backend.plan_generate(path, lowered.options, cell.target, ctx.host, form)
    except NotRunnable as exc:
        return Numerics("not-run", cell.precision, reason=str(exc), structure=lowered.structure)
    ctx.progress(f"{cell.target.id}: generating from {len(cases)} prompts to verify"
                 + (f" ({form} form)" if form != "main" else ""))
    try:
        return verify_generation(plan, cases, cell.precision, cell.target.tolerance(cell.precision))
    except Exception as exc:  # the artifact was built; running it failed: kept for inspection
        return Numerics("failed", cell.precision, reason=f"running the artifact failed: {type(exc).__name__}: {exc}",
                        runner=plan.runner.description, proxy=plan.proxy)


def _is_weight_file(rel: str) -> bool:
    name = Path(rel).name
    return name.endswith((".data", ".bin", ".onnx", ".so", ".weights", ".pte")) and not name.startswith("tokenizer")


def _manifest(model: DecoderModel, cell: DecoderCell, lowered, files, numerics: Numerics, plan: MemoryPlan,
              seconds: float, versions, reproducibility, others: tuple = ()) -> Manifest:
    target, form = cell.target, lowered.decoder
    record = LanguageModelRecord(
        decoder=model.spec, context=form.context, cache_form=form.cache_form, prefill_chunk=form.prefill_chunk,
        programs=form.programs, runtime=form.runtime, memory_plan=plan, weight_precisions=dict(form.weight_precisions),
        tokenizer_files=form.tokenizer_files, trust_remote_code=model.trust_remote_code,
        generation=dict(form.generation), windowed_cache=form.windowed_cache, other_forms=others)
    return Manifest(
        schema_version=MANIFEST_SCHEMA_VERSION, chipfit_version=__version__, toolchain=versions,
        request=replace(cell.request, profile=ProfileRequest()),
        model=ModelRef(model.name, model.source, model.source_kind, model.source_digest),
        target=TargetRef(target.id, target.name, target.vendor, target.digest, target.source_file, target.reach.kind),
        backend=BackendRef(cell.backend.name, dict(lowered.options)), precision=cell.precision,
        passes=tuple(dict(p) for p in lowered.passes), calibration=None, quantization=None,
        fusion={"applied": False, "reason": f"the decoder is laid out by {form.runtime}'s own builder"},
        fallbacks=tuple(lowered.fallbacks), signature=lowered.signature if lowered.signature else Signature((), ()),
        files=dict(files), reproducibility=reproducibility, primary_file=lowered.files[0], numerics=numerics, cost=None,
        notes=tuple(lowered.notes), build_seconds=round(seconds, 3), llm=record)
