"""The graph kind: a traced model (ONNX graph, and the torch program where the source is PyTorch).

Per cell: the fusion stage (the target's rules, kept only if the artifact measures faster with them), the
precision stage (chipfit's quantizer on the graph, the backend's PT2E quantizer on the torch program, or the
calibration samples handed to a backend that quantizes itself), static shapes where the backend needs them,
the backend's ``lower(job)``, and verification against the float reference on the target's arithmetic.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from calibration import CalibrationSet
from compiler.artifact import Staging, hash_files
from compiler.build import inputs as input_stage
from compiler.build.cell import Built, Cell, Where
from compiler.build.context import BuildContext, BuildOptions, BuildRun
from compiler.build.kinds import Contender
from compiler.build.lowering import lower, make_job
from compiler.build.manifest import describe
from compiler.build.race import files_key, host_key
from compiler.errors import QuantizeError, RunError, UsageError
from compiler.frontend import concretize
from compiler.fusion_stage import FusionStage
from compiler.passes.cost import graph_cost
from compiler.passes.quantize import settings_for
from compiler.passes.quantize_torch import TORCH_METHODS
from compiler.precision import PrecisionStage
from compiler.reproducibility import content_digest
from compiler.speed import MARGIN, faster, race, remember
from compiler.verify import verify
from profiles.latency import LatencyStats, time_callable
from targets.backend import Backend, BuildData, Lowered, NotRunnable, RunPlan
from targets.files import utc_now
from targets.host import HostInfo
from targets.manifest import CalibrationRecord, FileRecord, Manifest, SpeedCheck
from targets.model import TracedModel
from targets.numerics import Numerics
from targets.request import BuildRequest
from targets.signature import run_batched, static_batch
from targets.spec import TargetSpec


def rewrites_graph(cell: Cell) -> bool:
    """chipfit's precision stage rewrites the ONNX graph the backend lowers."""
    return cell.precision in cell.backend.capabilities.graph_precisions


def rewrites_program(cell: Cell) -> bool:
    """chipfit's precision stage quantizes the torch program (PT2E, with the backend's quantizer)."""
    return cell.precision in cell.backend.capabilities.program_precisions


def quantizes_itself(cell: Cell) -> bool:
    """The backend quantizes this precision with its own tool, from the calibration samples."""
    return cell.precision in cell.backend.capabilities.calibrated_precisions


def calibrated(cell: Cell) -> bool:
    return (cell.precision == "int8" and (rewrites_graph(cell) or rewrites_program(cell))) or quantizes_itself(cell)


@dataclass(frozen=True)
class GraphInputs:
    """What every cell of one graph build uses, computed once (the input stage's result)."""

    calibration: CalibrationSet | None
    inputs: Mapping[str, np.ndarray]
    inputs_label: str
    labels: np.ndarray | None
    reference: Mapping[str, np.ndarray]
    stage: PrecisionStage | None
    fusion: FusionStage
    static: dict[str, TracedModel] = field(default_factory=dict)  # models made static, by graph identity
    warnings: tuple[str, ...] = ()  # about the verification itself, for every cell


@dataclass
class Variant:
    """One lowering of a cell's graph, checked: what the manifest of the artifact is made from."""

    model: TracedModel  # as lowered (fused, quantized, static)
    lowered: Lowered
    files: Mapping[str, FileRecord]
    numerics: Numerics
    latency: LatencyStats | None
    failed_stage: str
    run_plan: RunPlan | None  # None where the artifact cannot run here
    report: Mapping[str, Any] | None  # the precision stage's
    fusion: Mapping[str, Any] | None  # the fusion stage's
    seconds: float

    @property
    def fusion_fired(self) -> bool:
        return bool(self.fusion) and any(p.get("fired") for p in self.fusion.get("passes", ()))


class GraphKind:
    name = "graph"
    races = True
    races_all_backends = False  # a host build keeps every backend's graph side by side, for comparison

    def accepts(self, model: Any) -> bool:
        return isinstance(model, TracedModel)

    def check_model(self, model: TracedModel, ctx: BuildContext) -> None:
        return None

    def plan_target(self, model: TracedModel, request: BuildRequest, target: TargetSpec, precision: str,
                    options: BuildOptions) -> Mapping[str, Any]:
        return {"settings": settings_for(target, precision, request.quantization, options.force)}

    def candidates(self, model: TracedModel, backends: Sequence[Backend], precision: str, target: TargetSpec,
                   request: BuildRequest, ctx: BuildContext) -> tuple[list[Backend], str]:
        able = [b for b in backends if precision in b.capabilities.precisions]
        if not able:
            builds = "; ".join(f"{b.name} builds {'/'.join(b.capabilities.precisions)}" for b in backends)
            raise UsageError(f"target {target.id}: no backend of {', '.join(b.name for b in backends)} builds "
                             f"{precision} ({builds})")
        if len(backends) > 1 and not request.backend:
            for skipped in (b for b in backends if b not in able):
                ctx.progress(f"{target.id}: {skipped.name} " + (f"does not build {precision}" if
                             skipped.capabilities.precisions else "builds decoder LMs only")
                             + "; building with the others")
        if len(able) > 1 and not request.backend and model.exported_program is None:
            # a backend that lowers only torch programs cannot take an ONNX file; the others can
            torch_only = [b for b in able if not b.lowers_onnx(model, precision)]
            for b in torch_only:
                ctx.progress(f"{target.id}: {b.name} lowers torch programs and {model.source} is ONNX; skipping it")
            able = [b for b in able if b not in torch_only] or able
        return able, ""

    def check_backend(self, backend: Backend, cell_fields: Mapping[str, Any], target: TargetSpec) -> None:
        settings = cell_fields["settings"]
        if settings.precision in backend.capabilities.program_precisions and settings.method not in TORCH_METHODS:
            raise UsageError(f"--method {settings.method}: target {target.id} quantizes the torch program for "
                             f"{backend.name} with PyTorch's PT2E observers, which offer {', '.join(TORCH_METHODS)}")

    # -- the input stage ------------------------------------------------------------------------------------
    def prepare(self, model: TracedModel, cells: Sequence[Cell], options: BuildOptions, ctx: BuildContext
                ) -> GraphInputs:
        request = input_stage.shared_request([c.request for c in cells])
        built = [c for c in cells if c.backend is not None]
        calibration = input_stage.calibration_set(model, request, [c.target.id for c in built if calibrated(c)])
        inputs, inputs_label = input_stage.verification_inputs(model, request, calibration)
        reference = input_stage.reference_outputs(model, inputs, inputs_label)
        stage = None
        if any(rewrites_graph(c) or rewrites_program(c) or quantizes_itself(c) for c in built):
            # a backend quantizing with its own tool is judged on the same evaluation set as chipfit's int8
            evaluation = input_stage.evaluation_set(model, request, calibration, (inputs, inputs_label))
            stage = PrecisionStage(
                calibration=calibration,
                evaluation=evaluation,
                reference=input_stage.reference_outputs(model, evaluation.inputs, evaluation.origin),
                cache_dir=options.cache_dir or options.out_dir / ".cache" / "calibration",
                accuracy_budget=request.quantization.accuracy_budget,
                progress=ctx.progress,
                host_arithmetic=ctx.host.isa.int8_arithmetic,
            )
        fusion = FusionStage(inputs, replace(options.fusion, explain=request.fusion.explain),
                             options.out_dir / ".dumps" / model.name, ctx.progress)
        return GraphInputs(calibration, inputs, inputs_label, input_stage.verification_labels(model, inputs_label),
                           reference, stage, fusion,
                           warnings=input_stage.reference_warnings(reference, inputs_label))

    # -- one cell -------------------------------------------------------------------------------------------
    def lowering(self, model: TracedModel, cell: Cell) -> str:
        return f"lowering with {cell.backend.name} ({cell.precision})"

    def build_cell(self, model: TracedModel, cell: Cell, inputs: GraphInputs, run: BuildRun, stack: ExitStack,
                   where: Where) -> Built:
        start = time.perf_counter()
        ctx = run.ctx
        fused, fusion_report = model, None
        if cell.request.fusion.enabled and cell.backend.lowers_onnx(model, cell.precision):
            onnx_model, fusion_report = inputs.fusion.run(
                model.onnx_model, cell.target.fusions, cell.backend.capabilities.accepted_domains, cell.precision,
                cell.target.source_file, cell.dest.name)
            fused = replace(model, onnx_model=onnx_model)
        staging = stack.enter_context(Staging(cell.dest))
        chosen = self._variant(model, fused, fusion_report, cell, inputs, staging.path, run, start, where)
        commit, checks = staging, ()
        plain_staging = stack.enter_context(Staging(cell.dest))
        if chosen.fusion_fired and not _worth_racing(chosen):
            checks = (SpeedCheck("fusion", True, None, None, f"not measured: {_why_not_raced(chosen)}",
                                 "kept as the target declares it"),)
        if _worth_racing(chosen):
            # the rewrite stays only if the artifact runs faster with it, as the runtime loads it
            ctx.progress(f"{cell.target.id}: timing {cell.backend.name} with and without fusion")
            plain = self._variant(model, model, None, cell, inputs, plain_staging.path, run, start, where)
            check = _fusion_check(chosen, plain, inputs.inputs, ctx.host, cell.backend)
            checks = (check,)
            if not check.kept:
                why = (f"measured no faster with it ({check.with_ms:.4g} ms) than without it "
                       f"({check.without_ms:.4g} ms), as the runtime loads the artifact")
                chosen = replace(plain, fusion={**chosen.fusion, "applied": False, "dropped": why})
                commit = plain_staging
                ctx.progress(f"{cell.target.id}: fusion dropped for {cell.backend.name}: {check.with_ms:.3f} "
                             f"ms with it, {check.without_ms:.3f} ms without")
        cost = graph_cost(chosen.model.onnx_model, cell.precision, shapes_from=model.onnx_model)
        if chosen.fusion:
            fusion_record: Mapping[str, Any] = dict(chosen.fusion)
        elif not cell.backend.lowers_onnx(model, cell.precision):
            fusion_record = {"applied": False, "reason": "the backend lowers the torch program and fuses in its own compiler"}
        else:
            fusion_record = {"applied": False, "reason": "disabled (--no-fusion)"}
        calibration = inputs.calibration if calibrated(cell) else None
        manifest = describe(
            model, cell, chosen.lowered, chosen.files, chosen.numerics, run.versions,
            content_digest(commit.path, chosen.files, cell.backend.normalizers()), chosen.seconds, ctx.host,
            calibration=(CalibrationRecord(calibration.origin, calibration.digest, len(calibration),
                                           calibration.is_random) if calibration is not None else None),
            quantization=dict(chosen.report) if chosen.report else None, fusion=fusion_record, cost=cost,
            notes=tuple(chosen.lowered.notes) + inputs.warnings, speed_checks=checks, export=model.export)
        warnings = _memory_warnings(cell.target, chosen.files, cost)
        return Built(commit, manifest, chosen.failed_stage, chosen.latency, chosen.report, chosen.fusion,
                     warnings + (inputs.warnings if chosen.numerics.status != "not-run" else ()))

    def _variant(self, model: TracedModel, cell_model: TracedModel, fusion_report, cell: Cell, inputs: GraphInputs,
                 path: Path, run: BuildRun, start: float, where: Where) -> Variant:
        """Quantize (as the cell's precision asks), lower into ``path``, hash, and verify where it runs here."""
        report = None
        where.stage = "QUANTIZE"
        if rewrites_graph(cell):
            prepared = inputs.stage.prepare(cell.settings, cell_model.onnx_model)
            report = prepared.report
            cell_model = replace(cell_model, onnx_model=prepared.model, graph_precision=cell.precision,
                                 passes=prepared.passes)
        if not cell.backend.capabilities.symbolic_dims and not model.signature.is_static:
            cell_model = _static(cell_model, inputs)
        if rewrites_program(cell):
            quantizer = cell.backend.program_quantizer(cell.settings.method)
            prepared_program = inputs.stage.prepare_program(cell.settings, cell_model, quantizer)
            report = prepared_program.report
            cell_model = replace(cell_model, exported_program=prepared_program.program,
                                 graph_precision=cell.precision, passes=prepared_program.passes)
        if quantizes_itself(cell) and inputs.calibration is None:
            raise UsageError(f"{cell.backend.name} quantizes {cell.precision} from calibration samples: pass "
                             "--calibration PATH, or --calibration random")
        where.stage = "LOWER"
        job = make_job(cell.backend, cell_model, cell.target, cell.precision, cell.request, path, run.ctx.host,
                       _build_data(cell, inputs))
        lowered = lower(cell.backend, job)
        files = hash_files(path, lowered.files)
        seconds = time.perf_counter() - start
        numerics, latency, failed_stage, run_plan = _check(cell, path, lowered, inputs, run)
        if quantizes_itself(cell) and numerics.status == "verified" and run_plan is not None:
            report = _vendor_accuracy(cell, run_plan, lowered, inputs)
        return Variant(cell_model, lowered, files, numerics, latency, failed_stage, run_plan, report, fusion_report,
                       seconds)

    # -- the race -------------------------------------------------------------------------------------------
    def timer(self, cell: Cell, artifact: Path, manifest: Manifest, inputs: GraphInputs, host: HostInfo) -> Contender:
        run_plan = cell.backend.plan_run(artifact, manifest.backend.options, manifest.signature, cell.target, host)
        return Contender(partial(run_plan.runner.run, _timing_batch(manifest.signature, inputs.inputs)),
                         run_plan.proxy, run_plan.note, run_plan.representative)


def _vendor_accuracy(cell: Cell, run_plan: RunPlan, lowered: Lowered, inputs: GraphInputs) -> dict[str, Any]:
    """The accuracy of an artifact the backend quantized with its own tool, judged on the evaluation set as
    chipfit's own int8 is; over ``--accuracy-budget`` it fails (that tool keeps no layer in float for chipfit)."""
    stage = inputs.stage
    batch = static_batch(lowered.signature)
    outputs = run_batched(run_plan.runner.run, stage.evaluation.inputs, batch)
    accuracy = stage.accuracy({name: outputs[name] for name in stage.reference})
    tool = next((p["name"] for p in lowered.passes if "quantiz" in p.get("name", "") or "nncf" in p.get("name", "")),
                f"{cell.backend.name}'s quantizer")
    report: dict[str, Any] = {"settings": {"quantizer": tool, "method": "the backend's own"}, "accuracy": accuracy}
    budget = cell.request.quantization.accuracy_budget
    if budget is not None:
        what = "top-1 points" if stage.evaluation.labels is not None else "% top-1 disagreement with float"
        drop = stage.drop(accuracy)
        report["budget"] = {"limit": budget, "metric": what, "final_drop": drop}
        if drop > budget:
            raise QuantizeError(
                f"accuracy budget {budget} ({what}) is not met by {cell.backend.name}'s own int8 quantizer ({tool}): "
                f"the loss is {drop:.2f}, and it keeps no layer in float for chipfit. Raise the budget, give more "
                "representative calibration samples, or build with another --backend")
    return report


def _build_data(cell: Cell, inputs: GraphInputs) -> BuildData:
    """The samples a backend gets: calibration only where it quantizes this precision itself."""
    calibration = inputs.calibration if quantizes_itself(cell) else None
    if calibration is None:
        return BuildData(verify_inputs=inputs.inputs, verify_label=inputs.inputs_label)
    return BuildData(tuple(calibration.samples), calibration.origin, calibration.is_random, inputs.inputs,
                     inputs.inputs_label)


def _static(model: TracedModel, inputs: GraphInputs) -> TracedModel:
    """``model`` at static shapes, made once per graph and shared by the cells that need it."""
    key = f"{id(model.onnx_model)}:{id(model.exported_program)}"
    if key not in inputs.static:
        inputs.static[key] = concretize(model)
    return inputs.static[key]


def _worth_racing(variant: Variant) -> bool:
    """A fused artifact that runs here as the target runs it is timed against the unfused one."""
    return (variant.fusion_fired and variant.numerics.status == "verified" and variant.run_plan is not None
            and not variant.run_plan.proxy)


def _why_not_raced(variant: Variant) -> str:
    if variant.numerics.status != "verified":
        return f"the artifact is {variant.numerics.status} here"
    return "the artifact runs here only as a proxy, whose speed is not the target's"


def _timing_batch(signature, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    first = signature.inputs[0].shape[0] if signature.inputs[0].shape else 1
    return {k: v[: first if isinstance(first, int) else 1] for k, v in inputs.items()}


def _fusion_check(fused: Variant, plain: Variant, inputs: Mapping[str, np.ndarray], host: HostInfo,
                  backend: Backend) -> SpeedCheck:
    rule = (f"kept only if at least {MARGIN:.0%} faster than without it (within that, the unfused graph: the "
            "runtime's own optimizer gives the same)")
    if plain.numerics.status != "verified" or plain.run_plan is None:
        return SpeedCheck("fusion", True, None, None, f"not compared: the unfused artifact {plain.numerics.status}",
                          rule)

    def measure() -> dict:
        contenders = {}
        for name, v in (("fused", fused), ("plain", plain)):
            contenders[name] = partial(v.run_plan.runner.run, _timing_batch(v.lowered.signature, inputs))
        timed = race(contenders)
        return {"with_ms": round(timed["fused"].median_ms, 4), "without_ms": round(timed["plain"].median_ms, 4),
                "rounds": len(timed["fused"].round_medians_ms), "when": utc_now()}

    key = {"fused": files_key(fused.files, backend), "plain": files_key(plain.files, backend), **host_key(host)}
    figures, remembered = remember("fusion", key, measure)
    method = (f"measured on this host as the runtime loads the artifact, {figures['rounds']} interleaved rounds"
              + (f" (on {figures['when']}; the same artifacts on this machine keep that decision)" if remembered else ""))
    return SpeedCheck("fusion", faster(figures["with_ms"], figures["without_ms"]), figures["with_ms"],
                      figures["without_ms"], method, rule)


def _memory_warnings(target: TargetSpec, files: Mapping[str, FileRecord], cost) -> tuple[str, ...]:
    """A model larger than the target's memory builds (the spec may be conservative) but is flagged;
    `chipfit profile` then fails it."""
    capacity = target.hardware.memory_bytes
    if capacity is None:
        return ()
    need = max(sum(f.bytes for f in files.values()), cost.weight_bytes if cost else 0)
    if need > capacity:
        return (f"the artifact needs {need / 2**30:.2f} GB but target {target.id} has "
                f"{target.hardware.figures['memory_gb']} GB of memory ({target.source_file}: hardware.memory_gb)",)
    return ()


def _check(cell: Cell, path: Path, lowered: Lowered, inputs: GraphInputs, run: BuildRun
           ) -> tuple[Numerics, LatencyStats | None, str, RunPlan | None]:
    """(numerics, host latency, the stage that failed if verification failed, the run plan or None)."""
    try:
        run_plan = cell.backend.plan_run(path, lowered.options, lowered.signature, cell.target, run.ctx.host)
    except NotRunnable as exc:
        return Numerics("not-run", cell.precision, reason=str(exc), structure=lowered.structure), None, "", None
    tolerance = cell.target.tolerance(cell.precision)
    try:
        numerics = verify(run_plan, lowered.signature, inputs.inputs, inputs.reference, tolerance, cell.precision,
                          inputs.inputs_label, inputs.labels)
    except Exception as exc:
        error = RunError(f"running the artifact failed: {type(exc).__name__}: {exc}")
        return Numerics("failed", cell.precision, reason=str(error), runner=run_plan.runner.description,
                        proxy=run_plan.proxy, inputs=inputs.inputs_label), None, error.stage, None
    latency = None
    if run.options.measure_latency and not run_plan.proxy and numerics.status == "verified":
        batch = _timing_batch(lowered.signature, inputs.inputs)
        latency = time_callable(lambda: run_plan.runner.run(batch))
    return numerics, latency, "MISMATCH" if numerics.status == "failed" else "", run_plan
