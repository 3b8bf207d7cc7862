"""The decoder kind: a Hugging Face decoder LM folder -> artifacts that generate text, verified.

Planning refuses before any work (exit 2): a context beyond the model's positions, a target whose memory cannot
hold the weights (or the asked context), an architecture no backend lowers. Each target is built by the backends
that declare the model's family and the precision (`Capabilities.decoder_families`, ``decoder_precisions``); a
target none of whose backends can says why in its row. The memory plan (weights + KV cache at the context +
workspace, against the target's memory) is made from the checkpoint before lowering and again from the
artifact's files after; both go in the manifest. Every artifact that can run here generates text and is verified
against transformers (`compiler.llm.verify`), each form it carries on its own.

Where several backends of a target lower the model, each builds, verifies and is timed generating a typical turn
(`TYPICAL_PROMPT` tokens of prompt, then `TYPICAL_NEW` tokens; interleaved rounds, the same rule and memory of
decisions as graphs): the fastest verified one ships as ``<target>``, with its time to first token and decode
rate in the manifest's backend choice. On a ``build_all_backends`` target (the host) the others stay beside it.
A backend whose toolchain is not installed is left out with a note where others remain; asked for by
``--backend``, or the only one, it is refused before any work with the command that installs it.
"""

from __future__ import annotations

import shutil
import statistics
import time
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from compiler.artifact import Staging, hash_files
from compiler.build import inputs as input_stage
from compiler.build.cell import Built, Cell, Where
from compiler.build.context import BuildContext, BuildOptions, BuildRun
from compiler.build.kinds import Contender
from compiler.build.lowering import lower, make_job
from compiler.build.manifest import describe
from compiler.errors import QuantizeError, RunError, UsageError
from compiler.llm.verify import PromptCase, ReferencePerplexity, reference_cases, verify_generation
from compiler.reproducibility import content_digest
from targets.backend import (Backend, BuildData, DecoderRunner, Generation, GenerationPlan, Lowered,
                             NotRunnable)
from targets.host import HostInfo
from targets.manifest import Manifest
from targets.decoder import LanguageModelRecord, MemoryPlan, plan_memory
from targets.model import DecoderModel
from targets.numerics import Numerics
from targets.request import BuildRequest
from targets.spec import TargetSpec

#: the context a decoder is built for when none is asked: the model's own limit, capped here (phones rarely
#: hold more, and the cache grows with it), and further by what the target's memory holds
DEFAULT_CONTEXT = 4096
#: the turn a decoder race times: a prompt of this many tokens (at most half the context), then this many more
TYPICAL_PROMPT = 128
TYPICAL_NEW = 32
#: a weight quantization method must lower the held-out perplexity by more than this to beat an earlier one
PERPLEXITY_TIE = 0.002
#: under ``--accuracy-budget``, the shares of the matmuls kept in int8, tried in turn until the budget is met
INT8_SHARES = (0.25, 0.5, 1.0)


@dataclass(frozen=True)
class DecoderInputs:
    """What every cell of one decoder build is verified and calibrated on (read once, `DecoderKind.prepare`)."""

    cases: tuple[PromptCase, ...]  # the verification prompts with the reference's greedy tokens and logits
    reference: ReferencePerplexity  # the float model's perplexity on the held-out text
    calibration: tuple[tuple[int, ...], ...]  # token ids the data-aware weight methods calibrate on
    calibration_origin: str
    #: vision-language models: the image prompts with transformers' greedy continuations (`compiler.vlm.verify`)
    images: tuple[Any, ...] = ()


class DecoderKind:
    name = "decoder"
    races = True
    races_all_backends = True  # the host ships its fastest decoder runtime, the others beside it

    def accepts(self, model: Any) -> bool:
        return isinstance(model, DecoderModel)

    #: what the refusals call the models of this kind
    what = "decoder"

    def family(self, model: DecoderModel) -> str:
        return model.spec.model_type

    def families(self, backend: Backend) -> tuple[str, ...]:
        """The families of this kind ``backend`` lowers."""
        return tuple(backend.capabilities.decoder_families)

    def check_model(self, model: DecoderModel, ctx: BuildContext) -> None:
        spec = model.spec
        loaded, broken = ctx.backends.load_all()
        families = {name: list(self.families(b)) for name, b in loaded.items() if self.families(b)}
        if not any(self.family(model) in f for f in families.values()):
            supported = sorted({f for fs in families.values() for f in fs})
            raise UsageError(f"{model.source}: {spec.architecture} (model_type {self.family(model)!r}) is lowered by "
                             f"no backend; {self.what} families supported: {', '.join(supported) or 'none'}"
                             + "".join(f"; {error}" for error in broken.values()))

    def plan_target(self, model: DecoderModel, request: BuildRequest, target: TargetSpec, precision: str,
                    options: BuildOptions) -> Mapping[str, Any]:
        spec = model.spec
        if precision not in target.precisions:
            raise UsageError(f"target {target.id} runs {', '.join(target.precisions)}, not {precision} "
                             f"({target.source_file}: supports.precisions)")
        q = target.quantization
        block = request.quantization.block_size or (q.int4_block_sizes[0] if q and q.int4_block_sizes else 32)
        context, memory = plan_context(spec, model.name, target, precision, request.llm.context, block,
                                       self.extra_weight_bytes(model, precision))
        return {"context": context, "memory": memory}

    def extra_weight_bytes(self, model: DecoderModel, precision: str) -> int:
        """Weights besides the decoder's the memory plan counts (a vision encoder)."""
        return 0

    def candidates(self, model: DecoderModel, backends: Sequence[Backend], precision: str, target: TargetSpec,
                   request: BuildRequest, ctx: BuildContext) -> tuple[list[Backend], str]:
        family = self.family(model)
        able = [b for b in backends if family in self.families(b) and precision in b.capabilities.decoder_precisions]
        missing = {b.name: b.check_toolchain(target) for b in able}
        missing = {name: problems for name, problems in missing.items() if problems}
        if missing and (request.backend or len(missing) == len(able)):
            raise UsageError("; ".join(p for problems in missing.values() for p in problems))
        for name, problems in missing.items():
            ctx.progress(f"{target.id}: leaving {name} out: {'; '.join(problems)}")
        able = [b for b in able if b.name not in missing]
        asked = request.quantization.weight_method
        if asked is not None:
            offering = [b for b in able if asked in b.capabilities.decoder_weight_methods.get(precision, ())]
            if not offering:
                offered = {b.name: b.capabilities.decoder_weight_methods.get(precision, ()) for b in able}
                raise UsageError(f"--weight-method {asked}: no backend of target {target.id} quantizes {precision} "
                                 "decoder weights that way; "
                                 + ("; ".join(f"{name}: {', '.join(m)}" for name, m in offered.items() if m)
                                    or f"none offers a choice at {precision}"))
            for skipped in (b for b in able if b not in offering):
                ctx.progress(f"{target.id}: leaving {skipped.name} out: it has no weight method {asked} at {precision}")
            able = offering
        kv_cache = request.llm.kv_cache
        if kv_cache is not None:
            keeping = [b for b in able if kv_cache in b.capabilities.decoder_kv_caches]
            if not keeping:
                offered = {b.name: b.capabilities.decoder_kv_caches for b in able}
                raise UsageError(f"--kv-cache {kv_cache}: no backend of target {target.id} writes a {kv_cache} KV "
                                 "cache; " + ("; ".join(f"{name}: {', '.join(k)}" for name, k in offered.items() if k)
                                              or "none offers a choice (build without --kv-cache)"))
            for skipped in (b for b in able if b not in keeping):
                ctx.progress(f"{target.id}: leaving {skipped.name} out: its KV cache cannot be {kv_cache}")
            able = keeping
        if able and target.build_all_backends and not request.backend:
            for skipped in (b for b in backends if b not in able):
                ctx.progress(f"{target.id}: {skipped.name} lowers no {family} {self.what} at {precision}; "
                             f"building with {', '.join(b.name for b in able)}")
        if able:
            return able, ""
        why = "; ".join(f"{b.name} lowers " + (
            f"{'/'.join(self.families(b))} at {'/'.join(b.capabilities.decoder_precisions)}"
            if self.families(b) else f"no {self.what} models") for b in backends)
        return [], f"no backend of target {target.id} lowers {family} at {precision} ({why})"

    def check_backend(self, backend: Backend, cell_fields: Mapping[str, Any], target: TargetSpec) -> None:
        return None

    # -- the input stage ------------------------------------------------------------------------------------
    def prepare(self, model: DecoderModel, cells: Sequence[Cell], options: BuildOptions, ctx: BuildContext
                ) -> DecoderInputs:
        request = input_stage.shared_request([c.request for c in cells])
        prompts = input_stage.prompts(request)
        calibration, origin = input_stage.decoder_calibration(model, request)
        ctx.progress(f"reference: transformers eager on {len(prompts)} prompt(s) and held-out text")
        text = input_stage.held_out(model, min((c.context for c in cells), default=DEFAULT_CONTEXT))
        return DecoderInputs(tuple(reference_cases(model, prompts)), ReferencePerplexity.of(model, text),
                             calibration, origin)

    # -- one cell -------------------------------------------------------------------------------------------
    def lowering(self, model: DecoderModel, cell: Cell) -> str:
        return (f"lowering {model.spec.architecture} with {cell.backend.name} ({cell.precision}, context "
                f"{cell.context})")

    def build_cell(self, model: DecoderModel, cell: Cell, inputs: DecoderInputs, run: BuildRun,
                   stack: ExitStack, where: Where) -> Built:
        start = time.perf_counter()
        staging = stack.enter_context(Staging(cell.dest))
        methods = weight_methods(cell.backend, cell.precision, cell.request)
        budget = accuracy_budget(cell)
        if len(methods) <= 1 and budget is None:
            lowered = self._lower(model, cell, inputs, run, staging.path, methods[0] if methods else "")
            where.stage = "RUN"
            numerics, failed_stage = self.verify_form(cell, lowered, staging.path, lowered.decoder.name, inputs, run)
            weight_choice = None
        else:
            lowered, numerics, failed_stage, weight_choice = self._weight_race(model, cell, inputs, run, staging,
                                                                                methods or ("",), budget, where)
        files = hash_files(staging.path, lowered.files)
        seconds = time.perf_counter() - start
        form = lowered.decoder
        weights = sum(f.bytes for rel, f in files.items()
                      if (rel in form.weight_files if form.weight_files else _is_weight_file(rel)))
        memory = plan_memory(model.spec, form.context, cell.precision, cell.target.hardware.memory_bytes,
                             kv_bytes_per_element=form.kv_bytes_per_element, chunk=form.prefill_chunk or 128,
                             weight_bytes=weights or None, windowed=form.windowed_cache,
                             basis="weights from the artifact's files; KV cache and workspace computed")
        where.stage = "RUN"
        others = []
        for extra in lowered.extra_decoder_forms:
            checked, stage = self.verify_form(cell, lowered, staging.path, extra.name, inputs, run)
            others.append({"name": extra.name, "cache_form": extra.cache_form, "programs": list(extra.programs),
                           "runtime": extra.runtime, "prefill_chunk": extra.prefill_chunk,
                           "numerics": checked.to_dict()})
            if checked.status == "failed" and numerics.status != "failed":
                numerics = replace(numerics, status="failed", reason=f"the {extra.name} form failed: {checked.reason}")
                failed_stage = stage
        if others:
            numerics = replace(numerics, generation={**(numerics.generation or {}), "other_forms": {
                o["name"]: o["numerics"].get("generation", {}).get("summary") or o["numerics"].get("reason")
                for o in others}})
        record = LanguageModelRecord(
            decoder=model.spec, context=form.context, cache_form=form.cache_form, prefill_chunk=form.prefill_chunk,
            programs=form.programs, runtime=form.runtime, memory_plan=memory,
            weight_precisions=dict(form.weight_precisions), tokenizer_files=form.tokenizer_files,
            trust_remote_code=model.trust_remote_code, generation=dict(form.generation),
            windowed_cache=form.windowed_cache, other_forms=tuple(others), weight_choice=weight_choice,
            vision=self.vision_record(model, form, memory))
        manifest = describe(
            model, cell, lowered, files, numerics, run.versions,
            content_digest(staging.path, files, cell.backend.normalizers()), seconds, run.ctx.host,
            fusion={"applied": False, "reason": f"the decoder is laid out by {form.runtime}'s own builder"},
            llm=record)
        warnings = () if memory.fits else (f"after lowering, the artifact needs {memory.total_bytes / 2**30:.2f} GiB at "
                                           f"context {memory.context}; target {cell.target.id} has "
                                           f"{(memory.capacity_bytes or 0) / 2**30:.2f} GiB",)
        return Built(staging, manifest, failed_stage, warnings=warnings)

    def verify_form(self, cell: Cell, lowered: Lowered, path: Path, form: str, inputs: DecoderInputs, run: BuildRun
                    ) -> tuple[Numerics, str]:
        """Generate with one form of the artifact and compare with the reference (`verify_decoder`)."""
        return verify_decoder(cell, lowered, path, form, inputs, run)

    def vision_record(self, model: DecoderModel, form: Any, memory: MemoryPlan) -> Any:
        return None

    def _lower(self, model: DecoderModel, cell: Cell, inputs: DecoderInputs, run: BuildRun, workdir: Path,
               method: str, int8_share: float = 0.0) -> Lowered:
        data = BuildData(calibration=tuple({"input_ids": np.asarray([ids], dtype=np.int64)}
                                           for ids in inputs.calibration),
                         calibration_origin=inputs.calibration_origin) if method else BuildData()
        job = make_job(cell.backend, model, cell.target, cell.precision, cell.request, workdir, run.ctx.host,
                       data=data, context=cell.context, weight_method=method, int8_share=int8_share)
        return lower(cell.backend, job, cell.backend.lower_decoder)

    def _weight_race(self, model: DecoderModel, cell: Cell, inputs: DecoderInputs, run: BuildRun,
                     staging: Staging, methods: Sequence[str], budget: float | None, where: Where
                     ) -> tuple[Lowered, Numerics, str, dict[str, Any]]:
        """Each weight quantization method the backend offers, lowered and verified on its own; the lowest
        perplexity on the held-out text ships (an earlier, cheaper method wins a tie within `PERPLEXITY_TIE`;
        a verified one beats any that failed). Under ``budget`` (% perplexity increase over float) a best variant
        over it is lowered again with `INT8_SHARES` of its matmuls in int8, in turn, until one is within it; none
        within it fails the cell. The shipped files are moved into ``staging``."""
        tried: list[tuple[str, float, Lowered, Numerics, str]] = []
        workdirs: list[Path] = []  # named after the staging directory, so a killed build's are swept with it

        def attempt(method: str, share: float = 0.0) -> int:
            label = (method or "default").replace("+", "-") + (f".int8-{share:g}" if share else "")
            workdir = staging.path.parent / f"{staging.path.name}.{label}"
            workdirs.append(workdir)
            workdir.mkdir()
            run.ctx.progress(f"{cell.target.id}: {cell.backend.name} {cell.precision} weights by "
                             f"{method or 'its own method'}" + (f", {share:.0%} of the matmuls int8" if share else ""))
            where.stage = "LOWER"
            lowered = self._lower(model, cell, inputs, run, workdir, method, share)
            where.stage = "RUN"
            numerics, failed = self.verify_form(cell, lowered, workdir, lowered.decoder.name, inputs, run)
            tried.append((method, share, lowered, numerics, failed))
            return len(tried) - 1

        try:
            for method in methods:
                attempt(method)
            best = 0
            for i in range(1, len(tried)):
                if _better(tried[i][3], tried[best][3]):
                    best = i
            budget_record = None
            if budget is not None:
                best, budget_record = self._meet_budget(cell, inputs, tried, best, budget, attempt)
            method, share, lowered, numerics, failed = tried[best]
            for rel in lowered.files:
                (staging.path / rel).parent.mkdir(parents=True, exist_ok=True)
                (workdirs[best] / rel).replace(staging.path / rel)
        finally:
            for workdir in workdirs:
                shutil.rmtree(workdir, ignore_errors=True)
        variants = []
        for m, s, low, checked, _ in tried:
            generation = checked.generation or {}
            variants.append({"method": m or "the backend's own", "int8_share": s, "status": checked.status,
                             "reason": checked.reason,
                             "perplexity": (generation.get("perplexity") or {}).get("artifact"),
                             "token_agreement": generation.get("token_agreement"),
                             "min_cosine": round(min((e.cosine for e in checked.outputs), default=1.0), 6),
                             "passes": [p for p in low.passes if p.get("weight_method") or p.get("int8_share")]})
        choice = {"chosen": method or "the backend's own", "int8_share": share,
                  "by": "lowest perplexity on held-out text among verified variants "
                        f"(ties within {PERPLEXITY_TIE:.1%}: the earlier, data-free first)"
                        + ("; then the fewest int8 matmuls within --accuracy-budget" if budget is not None else ""),
                  "reference_perplexity": round(inputs.reference.value, 4), "calibration": inputs.calibration_origin,
                  "held_out": inputs.reference.text.origin, "variants": variants,
                  **({"budget": budget_record} if budget_record else {})}
        return lowered, numerics, failed, choice

    def _meet_budget(self, cell: Cell, inputs: DecoderInputs, tried: list, best: int, budget: float,
                     attempt: Any) -> tuple[int, dict[str, Any]]:
        """The variant that ships under ``budget``: ``best`` where it is within it, else the first int8 share of
        the best method that can keep matmuls in int8 which is; a `QuantizeError` naming the figures if none is."""
        metric = "% held-out perplexity increase over float"
        record: dict[str, Any] = {"limit": budget, "metric": metric}
        increase = _increase(tried[best][3])
        if increase is None:
            return best, {**record, "checked": False,
                          "why": f"the artifact does not run here: {tried[best][3].reason or 'no perplexity'}"}
        if tried[best][3].status == "verified" and increase <= budget:
            return best, {**record, "increase": round(increase, 3), "met_by": "int4 alone"}
        backups = cell.backend.capabilities.decoder_int8_backup
        # a method that failed token agreement may pass it with int8 layers: its perplexity ranks it all the same
        able = sorted((i for i, t in enumerate(tried) if t[0] in backups), key=lambda i: _perplexity(tried[i][3]))
        if not able:
            raise QuantizeError(
                f"accuracy budget {budget} ({metric}) is not met by {cell.backend.name}'s int4 weights: "
                f"{tried[best][0] or 'its method'} raises perplexity {increase:.2f} %"
                + (f", and it keeps matmuls in int8 only with {', '.join(backups)}" if backups else
                   ", and it keeps no matmul in int8 for chipfit")
                + ". Raise the budget, build int8 (--precision int8), or build with another --backend")
        method = tried[able[0]][0]
        for share in INT8_SHARES:
            i = attempt(method, share)
            increase_i = _increase(tried[i][3])
            if tried[i][3].status == "verified" and increase_i is not None and increase_i <= budget:
                layers = next((p.get("int8_layers") for p in tried[i][2].passes if p.get("int8_layers")), None)
                return i, {**record, "increase": round(increase_i, 3), "met_by": f"{share:.0%} of the matmuls int8",
                           "int4_increase": round(increase, 3), "int8_layers": layers or []}
        closest = min((_increase(t[3]) for t in tried if _increase(t[3]) is not None), default=increase)
        raise QuantizeError(
            f"accuracy budget {budget} ({metric}) is not met by {cell.backend.name} at int4 even with every matmul "
            f"int8 by {method}: the closest variant raises perplexity {closest:.2f} %. Raise the budget, give "
            "--calibration prompts like the text the model will see, or build int8 (--precision int8)")

    # -- the race -------------------------------------------------------------------------------------------
    def timer(self, cell: Cell, artifact: Path, manifest: Manifest, inputs: DecoderInputs, host: HostInfo
              ) -> Contender:
        plan = cell.backend.plan_generate(artifact, manifest.backend.options, cell.target, host)
        context = manifest.llm.context if manifest.llm else TYPICAL_PROMPT + TYPICAL_NEW + 1
        turn = TypicalTurn(plan.runner, inputs.cases, context)
        return Contender(turn, plan.proxy, plan.note, plan.representative, turn.figures)


class TypicalTurn:
    """One timed call of the decoder race: the prompt, then `TYPICAL_NEW` greedy tokens; keeps every generation
    for the time to first token and the decode rate."""

    def __init__(self, runner: DecoderRunner, cases: Sequence[PromptCase], context: int) -> None:
        length = max(1, min(TYPICAL_PROMPT, context // 2))
        pool = [t for case in cases for t in case.ids] or [0]
        self.prompt = [pool[i % len(pool)] for i in range(length)]  # the reference prompts, repeated
        self.new = max(1, min(TYPICAL_NEW, context - length - 1))
        self.runner = runner
        self.generations: list[Generation] = []

    def __call__(self) -> Generation:
        generation = self.runner.generate(self.prompt, self.new)
        self.generations.append(generation)
        return generation

    def figures(self) -> dict[str, float]:
        done = [g for g in self.generations if g.token_s]
        if not done:
            return {}
        ttft = statistics.median(g.prefill_s for g in done)
        decode = statistics.median(len(g.token_s) / sum(g.token_s) for g in done)
        return {"prompt_tokens": len(self.prompt), "ttft_ms": round(ttft * 1e3, 3),
                "prefill_tok_s": round(len(self.prompt) / ttft, 1), "decode_tok_s": round(decode, 1)}


def weight_methods(backend: Backend, precision: str, request: BuildRequest) -> tuple[str, ...]:
    """The weight quantization methods a cell lowers with: the one asked (``--weight-method``), else each the
    backend offers at the precision."""
    offered = tuple(backend.capabilities.decoder_weight_methods.get(precision, ()))
    asked = request.quantization.weight_method
    if asked is None:
        return offered
    return (asked,) if asked in offered else ()


def accuracy_budget(cell: Cell) -> float | None:
    """``--accuracy-budget`` for a decoder: the held-out perplexity increase over float it may have, in percent
    (int4 only: int8 weights are the fallback that meets it)."""
    return cell.request.quantization.accuracy_budget if cell.precision == "int4" else None


def _perplexity(n: Numerics) -> float:
    value = ((n.generation or {}).get("perplexity") or {}).get("artifact")
    return float("inf") if value is None else value


def _increase(n: Numerics) -> float | None:
    ratio = ((n.generation or {}).get("perplexity") or {}).get("ratio")
    return None if ratio is None else (ratio - 1.0) * 100.0


def _better(candidate: Numerics, best: Numerics) -> bool:
    if (candidate.status == "verified") != (best.status == "verified"):
        return candidate.status == "verified"
    return _perplexity(candidate) < _perplexity(best) * (1 - PERPLEXITY_TIE)


def verify_decoder(cell: Cell, lowered: Lowered, path: Path, form: str, inputs: DecoderInputs, run: BuildRun,
                   then: Callable[[GenerationPlan, Numerics], tuple[Numerics, str]] | None = None
                   ) -> tuple[Numerics, str]:
    """Generate with one form of the artifact and compare with the reference (not-run where it cannot run here);
    with the stage that failed where it failed. ``then`` checks more on the same loaded runtime (a vision-language
    artifact's image prompts), given the text's numerics."""
    cases = inputs.cases
    try:
        plan = cell.backend.plan_generate(path, lowered.options, cell.target, run.ctx.host, form)
    except NotRunnable as exc:
        return Numerics("not-run", cell.precision, reason=str(exc), structure=lowered.structure), ""
    run.ctx.progress(f"{cell.target.id}: generating from {len(cases)} prompts to verify"
                     + (f" ({form} form)" if form != "main" else ""))
    try:
        numerics = verify_generation(plan, cases, cell.precision, cell.target.tolerance(cell.precision),
                                     inputs.reference)
    except Exception as exc:  # the artifact was built; running it failed: kept for inspection
        error = RunError(f"running the artifact failed: {type(exc).__name__}: {exc}")
        return Numerics("failed", cell.precision, reason=str(error), runner=plan.runner.description,
                        proxy=plan.proxy), error.stage
    stage = "MISMATCH" if numerics.status == "failed" else ""
    if then is None:
        return numerics, stage
    numerics, more = then(plan, numerics)
    return numerics, stage or more


def _is_weight_file(rel: str) -> bool:
    name = Path(rel).name
    return name.endswith((".data", ".bin", ".onnx", ".so", ".weights", ".pte")) and not name.startswith("tokenizer")


def plan_context(spec, name: str, target: TargetSpec, precision: str, asked: int | None, block: int = 32,
                 extra_weight_bytes: int = 0) -> tuple[int, MemoryPlan]:
    """The context a build of ``spec`` plans for ``target`` (``asked``, else the model's positions up to
    `DEFAULT_CONTEXT`, shrunk to what fits the target's memory) and its memory plan; a UsageError naming the
    figures where the model or the asked context cannot fit. `chipfit plan` and the build both use it.
    ``extra_weight_bytes``: weights beside the decoder's (a vision encoder), counted with them."""
    if asked is not None and asked > spec.max_positions:
        raise UsageError(f"--context {asked}: {name} handles at most {spec.max_positions} positions "
                         "(config.json max_position_embeddings)")
    capacity = target.hardware.memory_bytes
    context = asked or min(spec.max_positions, DEFAULT_CONTEXT)
    weights = spec.weight_bytes(precision, block) + extra_weight_bytes
    basis = "estimated from the checkpoint's shapes" + (" (with the vision encoder)" if extra_weight_bytes else "")
    memory = plan_memory(spec, context, precision, capacity, block_size=block, weight_bytes=weights, basis=basis)
    if not memory.fits:
        gib = 2 ** 30
        if memory.max_context_that_fits is None:
            raise UsageError(
                f"target {target.id} cannot hold {name} at {precision}: the weights alone need "
                f"{memory.weight_bytes / gib:.2f} GiB (+ workspace), the target has {capacity / gib:.2f} GiB "
                f"({target.source_file}: hardware.memory_gb); try a smaller precision (--precision int4)")
        if asked is not None:
            raise UsageError(
                f"--context {asked}: on target {target.id} weights {memory.weight_bytes / gib:.2f} GiB + KV cache "
                f"{memory.kv_cache_bytes / gib:.2f} GiB + workspace {memory.workspace_bytes / gib:.2f} GiB = "
                f"{memory.total_bytes / gib:.2f} GiB exceed its {capacity / gib:.2f} GiB; the largest context that "
                f"fits is {memory.max_context_that_fits} tokens")
        context = memory.max_context_that_fits
        memory = plan_memory(spec, context, precision, capacity, block_size=block, weight_bytes=weights, basis=basis)
    return context, memory
