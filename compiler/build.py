"""The build driver: one traced model x several targets -> verified artifacts.

Every cell (target x backend) is planned first, so that a bad target name, a
precision a target cannot run, missing calibration data or a bad backend option
fails before any work (exit 2). Then each cell is lowered in a staging
directory, run against the float reference where it can run here, and renamed
into place with its manifest. A cell that fails is reported and the others
still build; a failed verification is kept as ``<target>.failed`` for
inspection, never in the place of a good artifact.
"""

from __future__ import annotations

import json
import sys
import time
from functools import partial
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from calibration import CalibrationSet
from calibration.readers import CalibrationError, from_arrays, load_labels, load_samples, random_samples
from compiler import __version__
from compiler.artifact import FAILED_SUFFIX, Staging, hash_files, swap_into
from compiler.backends import Backend, BuildData, NotRunnable, calibrated_precisions
from compiler.errors import BuildError, ChipfitError, LowerError, RunError, UsageError, stage_of
from compiler.frontend import concretize
from compiler.fusion_stage import FusionOptions, FusionStage
from compiler.passes.cost import graph_cost
from compiler.passes.quantize import QuantSettings, settings_for
from compiler.passes.quantize_torch import TORCH_METHODS
from compiler.precision import EvalSet, PrecisionStage
from compiler.reproducibility import content_digest
from compiler.speed import MARGIN, faster, race, remember
from compiler.toolchain import toolchain_versions
from compiler.traced import TracedModel
from compiler.verify import verify
from profiles.latency import LatencyStats, time_callable
from targets.host import HostInfo, detect_host
from targets.manifest import (MANIFEST_SCHEMA_VERSION, BackendChoice, BackendRef, CalibrationRecord, Candidate,
                              FileRecord, Manifest, ModelRef, SpeedCheck, TargetRef, read_artifact)
from targets.numerics import Numerics
from targets.registry import EntryPointRegistry, backend_registry, target_registry
from targets.request import BuildRequest, ModelSource, ProfileRequest, check_request
from targets.files import utc_now
from targets.request import digest_json
from targets.schema import to_json
from targets.signature import run_batched, seeded_inputs, static_batch
from targets.spec import TargetSpec

VERIFY_SAMPLES = 16
#: where a target's backend candidates are built before one is chosen (inside the model's output folder)
CANDIDATES = ".candidates"
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Cell:
    request: BuildRequest
    target: TargetSpec
    backend: Backend
    settings: QuantSettings
    dest: Path
    #: a candidate among the target's backends: where the chosen one goes (``dest`` is then a candidate's place)
    chosen_dest: Path | None = None

    @property
    def precision(self) -> str:
        return self.settings.precision

    @property
    def rewrites_graph(self) -> bool:
        return self.precision in self.backend.graph_precisions

    @property
    def rewrites_program(self) -> bool:
        return self.precision in self.backend.program_precisions

    @property
    def quantizes_itself(self) -> bool:
        """The backend quantizes this precision with its own tool, from the calibration samples."""
        return self.precision in calibrated_precisions(self.backend)

    @property
    def calibrated(self) -> bool:
        return self.precision == "int8" and (self.rewrites_graph or self.rewrites_program or self.quantizes_itself)


@dataclass(frozen=True)
class CellResult:
    target: str
    backend: str
    precision: str
    status: str  # "verified", "not-run", "failed" (verification) or "error" (could not build)
    artifact: str = ""
    size_bytes: int = 0
    build_seconds: float = 0.0
    numerics: Numerics | None = None
    latency: LatencyStats | None = None
    quantization: Mapping[str, Any] | None = None
    fusion: Mapping[str, Any] | None = None
    fallbacks: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    message: str = ""
    #: the build stage that failed (from the type of the error it raised): LOAD, LOWER, QUANTIZE, RUN, MISMATCH
    stage: str = ""
    traceback: str = ""
    unsupported_op: str = ""  # the op a backend could not lower, when that is why the cell failed
    choice: "BackendChoice | None" = None  # the target's backend candidates and why this one was chosen

    @property
    def ok(self) -> bool:
        return self.status in ("verified", "not-run")

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "backend": self.backend,
            "precision": self.precision,
            "status": self.status,
            "stage": self.stage,
            "artifact": self.artifact,
            "size_bytes": self.size_bytes,
            "build_seconds": round(self.build_seconds, 3),
            "numerics": self.numerics.to_dict() if self.numerics else None,
            "host_latency": (
                {"latency_ms_p50": self.latency.latency_ms_p50, "runs": self.latency.runs, "cv": self.latency.cv}
                if self.latency
                else None
            ),
            "quantization": dict(self.quantization) if self.quantization else None,
            "fusion": dict(self.fusion) if self.fusion else None,
            "fallbacks": list(self.fallbacks),
            "warnings": list(self.warnings),
            "message": self.message,
            "traceback": self.traceback,
            "backend_choice": to_json(self.choice) if self.choice else None,
        }


class BuildOptions:
    """One model for several targets: the build requests, and how this invocation runs.

    ``settings`` are request options by their public names (``precision="int8"``,
    ``calibration="samples/"``, ``method="mse"``, ``fusion=False``...; see `targets.request`); each target
    gets a `BuildRequest` made from them. Or give the ``requests`` themselves (a release worker does).
    ``cache_dir`` (calibration statistics), ``measure_latency`` and ``fusion`` dumps change no artifact.
    """

    def __init__(self, targets: Sequence[str] = (), out_dir: Path | str = "build", *,
                 requests: Sequence[BuildRequest] = (), cache_dir: Path | None = None, measure_latency: bool = True,
                 fusion: FusionOptions | bool | None = None, profile: ProfileRequest | None = None,
                 force: bool = False, **settings: Any) -> None:
        self.targets = tuple(targets) or tuple(r.target for r in requests)
        # absolute: child processes (onnxruntime-genai's builder, isolated backends) run in other folders
        self.out_dir = Path(out_dir).absolute()
        self.cache_dir = Path(cache_dir).absolute() if cache_dir is not None else None
        self.measure_latency = measure_latency
        self.force = force  # replace an artifact of another precision at the same place
        # ``fusion`` is the request option (a bool), or FusionOptions: that option plus where to dump graphs
        self.fusion = fusion if isinstance(fusion, FusionOptions) else FusionOptions()
        if isinstance(fusion, FusionOptions):
            settings.setdefault("fusion", fusion.enabled)
            settings.setdefault("explain_fusion", fusion.explain)
        elif fusion is not None:
            settings["fusion"] = fusion
        self._settings = settings
        self._profile = profile or ProfileRequest()
        self._requests = tuple(requests)

    def requests(self, model: TracedModel) -> list[BuildRequest]:
        if self._requests:
            return list(self._requests)
        base = BuildRequest(ModelSource(model.source, model.name), "", profile=self._profile)
        template = base.with_options(**self._settings)
        return [replace(template, target=t) for t in self.targets]


@dataclass
class BuildContext:
    """What a build needs besides its options; made fresh per build, passed explicitly."""

    targets: EntryPointRegistry[TargetSpec] = field(default_factory=target_registry)
    backends: EntryPointRegistry[Backend] = field(default_factory=backend_registry)
    host: HostInfo = field(default_factory=detect_host)
    progress: Progress = lambda message: None


def plan(model: TracedModel, options: BuildOptions, ctx: BuildContext) -> list[Cell]:
    requests = options.requests(model)
    if not requests:
        raise UsageError("no targets given: pass -t TARGET (see `chipfit targets`)")
    cells: list[Cell] = []
    model_dir = options.out_dir / model.name
    for request in requests:
        check_request(request, lambda o: o.cli_flag or o.name)
        target = ctx.targets.get(request.target)
        if request.backend:
            if request.backend not in target.backends:
                raise UsageError(
                    f"--backend {request.backend}: target {target.id} is built by {', '.join(target.backends)}"
                )
            names = [request.backend]
        else:
            names = list(target.backends)
        precision = request.precision or target.default_precision
        settings = settings_for(target, precision, request.quantization, options.force)
        backends = [ctx.backends.get(name) for name in names]
        able = [b for b in backends if precision in b.precisions]
        if not able:
            builds = "; ".join(f"{b.name} builds {'/'.join(b.precisions)}" for b in backends)
            raise UsageError(f"target {target.id}: no backend of {', '.join(names)} builds {precision} ({builds})")
        for skipped in (b for b in backends if b not in able and len(backends) > 1 and not request.backend
                        and precision not in b.precisions):
            ctx.progress(f"{target.id}: {skipped.name} does not build {precision}; building with the others")
        if len(able) > 1 and not request.backend and model.exported_program is None:
            # a backend that lowers only torch programs cannot take an ONNX file; the others can
            torch_only = [b for b in able if not b.lowers_onnx(model, precision)]
            for b in torch_only:
                ctx.progress(f"{target.id}: {b.name} lowers torch programs and {model.source} is ONNX; skipping it")
            able = [b for b in able if b not in torch_only] or able
        # Several backends and no --backend: each is a candidate, and the fastest verified one becomes the
        # target's artifact (build_all_backends targets keep every one, side by side).
        choose = len(able) > 1 and not request.backend and not target.build_all_backends
        built = able if not request.backend else backends
        for backend in built:
            if precision not in backend.precisions:
                raise UsageError(f"backend {backend.name} does not build {precision} (it builds {', '.join(backend.precisions)})")
            backend.check_options(target)
            if precision in backend.program_precisions and settings.method not in TORCH_METHODS:
                raise UsageError(f"--method {settings.method}: target {target.id} quantizes the torch program for "
                                 f"{backend.name} with PyTorch's PT2E observers, which offer {', '.join(TORCH_METHODS)}")
            # The first backend built (the only one, or the chosen one) owns build/<model>/<target>; with
            # build_all_backends the others sit beside it as <target>@<backend>.
            dirname = target.id if backend is built[0] or choose else f"{target.id}@{backend.name}"
            check_replaceable(model_dir / dirname, precision, options.force)
            dest = model_dir / CANDIDATES / f"{target.id}@{backend.name}" if choose else model_dir / dirname
            cells.append(Cell(replace(request, precision=precision), target, backend, settings, dest,
                              model_dir / dirname if choose else None))
    return cells


def check_replaceable(dest: Path, precision: str, force: bool) -> None:
    """An artifact of another precision already at ``dest`` is not replaced silently (`--force` replaces it)."""
    if force or not (dest / "manifest.json").is_file():
        return
    import json

    try:
        existing = json.loads((dest / "manifest.json").read_text()).get("precision")
    except ValueError:
        return
    if existing and existing != precision:
        raise UsageError(f"{dest} holds a {existing} artifact and this build makes {precision}: give another output "
                         "folder (-o), or --force to replace it")


def _shared_data(cells: Sequence[Cell]) -> BuildRequest:
    """The request whose data settings the whole build uses (every cell of one build shares them)."""
    first = cells[0].request
    for cell in cells[1:]:
        if (cell.request.data, cell.request.model) != (first.data, first.model):
            raise ValueError("one build takes one model and one set of samples; build the others separately")
    return first


def _tokenizer(request: BuildRequest) -> Path | None:
    return Path(request.data.tokenizer) if request.data.tokenizer else None


def _calibration(model: TracedModel, request: BuildRequest, cells: Sequence[Cell]) -> CalibrationSet | None:
    needed = any(c.calibrated for c in cells)
    calibration = request.data.calibration
    try:
        if calibration == "random":
            return random_samples(model.signature.concretized())
        if calibration:
            return load_samples(calibration, model.signature, limit=256, tokenizer=_tokenizer(request))
        if needed and model.samples:
            arrays = {t.name: model.samples[t.name] for t in model.signature.inputs}
            return from_arrays(arrays, model.signature, f"bundled samples of {model.source}")
    except CalibrationError as exc:
        raise UsageError(f"--calibration: {exc}") from exc
    if needed:
        int8 = sorted({c.target.id for c in cells if c.precision == "int8"})
        raise UsageError(
            f"target(s) {', '.join(int8)} build int8, which needs calibration samples: pass --calibration PATH "
            "(a .npz keyed by input name, or a folder of .npy/.npz files), or --calibration random to accept "
            "ranges computed from random data"
        )
    return None


def _verification_inputs(
    model: TracedModel, request: BuildRequest, calibration: CalibrationSet | None
) -> tuple[dict[str, np.ndarray], str]:
    if request.data.samples:
        try:
            samples = load_samples(request.data.samples, model.signature, limit=VERIFY_SAMPLES,
                                   tokenizer=_tokenizer(request))
        except CalibrationError as exc:
            raise UsageError(f"--samples: {exc}") from exc
        return samples.batched(), f"{len(samples)} samples from {request.data.samples}"
    if calibration is not None and not calibration.is_random:
        chosen = calibration.batched(limit=VERIFY_SAMPLES)
        return chosen, f"{len(next(iter(chosen.values())))} calibration samples from {calibration.origin}"
    if model.samples:
        arrays = {t.name: model.samples[t.name][:VERIFY_SAMPLES] for t in model.signature.inputs}
        return arrays, f"{VERIFY_SAMPLES} bundled samples of {model.source}"
    return seeded_inputs(model.signature, seed=0), "seeded random inputs (seed 0; symbolic dims = 2)"


def _evaluation_set(model: TracedModel, request: BuildRequest, calibration: CalibrationSet | None,
                    verification: tuple[dict[str, np.ndarray], str]) -> EvalSet:
    """What quantized graphs are judged on: --eval, else the bundled labelled samples, else verification inputs."""
    if request.data.eval:
        try:
            samples = load_samples(request.data.eval, model.signature, tokenizer=_tokenizer(request))
            labels = load_labels(request.data.eval, len(samples))
        except CalibrationError as exc:
            raise UsageError(f"--eval: {exc}") from exc
        return EvalSet(samples.batched(), labels, f"{len(samples)} samples from {request.data.eval}"
                       + ("" if labels is not None else " (no labels: agreement with float only)"))
    if model.samples and "label" in model.samples:
        arrays = {t.name: model.samples[t.name] for t in model.signature.inputs}
        return EvalSet(arrays, np.asarray(model.samples["label"]), f"{len(model.samples['label'])} labelled samples of {model.source}")
    if calibration is not None and not calibration.is_random:
        arrays = calibration.batched(limit=64)
        return EvalSet(arrays, None, f"{len(next(iter(arrays.values())))} calibration samples (no labels)")
    return EvalSet(verification[0], None, verification[1] + " (no labels)")


def _manifest(model: TracedModel, cell: Cell, lowered, files: Mapping[str, FileRecord], numerics: Numerics,
              calibration: CalibrationSet | None, report: Mapping[str, Any] | None, seconds: float,
              versions: dict[str, str], cost=None, fusion: Mapping[str, Any] | None = None,
              reproducibility=None, extra_notes: Sequence[str] = (), speed_checks: Sequence[SpeedCheck] = (),
              host: HostInfo | None = None) -> Manifest:
    target = cell.target
    if fusion:
        fusion_record: Mapping[str, Any] = dict(fusion)
    elif not cell.backend.lowers_onnx(model, cell.precision):
        fusion_record = {"applied": False, "reason": "the backend lowers the torch program and fuses in its own compiler"}
    else:
        fusion_record = {"applied": False, "reason": "disabled (--no-fusion)"}
    uses_calibration = calibration is not None and cell.calibrated
    return Manifest(
        schema_version=MANIFEST_SCHEMA_VERSION,
        chipfit_version=__version__,
        toolchain=versions,
        request=replace(cell.request, profile=ProfileRequest()),  # profiling settings are not the artifact's
        model=ModelRef(model.name, model.source, model.source_kind, model.source_digest),
        target=TargetRef(target.id, target.name, target.vendor, target.digest, target.source_file, target.reach.kind),
        backend=BackendRef(cell.backend.name, dict(lowered.options)),
        precision=cell.precision,
        passes=tuple(dict(p) for p in lowered.passes),
        calibration=(CalibrationRecord(calibration.origin, calibration.digest, len(calibration), calibration.is_random)
                     if uses_calibration else None),
        quantization=dict(report) if report else None,
        fusion=fusion_record,
        fallbacks=tuple(lowered.fallbacks),
        signature=lowered.signature,
        files=dict(files),
        reproducibility=reproducibility,
        primary_file=lowered.files[0],
        numerics=numerics,
        cost=cost,
        notes=tuple(lowered.notes) + tuple(extra_notes),
        build_seconds=round(seconds, 3),
        speed_checks=tuple(speed_checks),
        host=host.facts() if host is not None else None,
    )


@dataclass(frozen=True)
class _Shared:
    """What every cell of one build uses, computed once."""

    calibration: CalibrationSet | None
    inputs: Mapping[str, np.ndarray]
    inputs_label: str
    labels: np.ndarray | None
    reference: Mapping[str, np.ndarray]
    versions: dict[str, str]
    stage: PrecisionStage | None
    fusion: FusionStage
    static: dict[str, TracedModel] = field(default_factory=dict)  # models made static, by graph identity
    warnings: tuple[str, ...] = ()  # about the verification itself, for every cell


def _reference(model: TracedModel, inputs: Mapping[str, np.ndarray], label: str) -> dict[str, np.ndarray]:
    try:
        return run_batched(model.reference, inputs, static_batch(model.signature))
    except Exception as exc:
        raise BuildError(
            f"the float reference of {model.source} could not run on {label}: {type(exc).__name__}: {exc}"
        ) from exc


def build(model, options: BuildOptions, ctx: BuildContext | None = None) -> list[CellResult]:
    """Build, verify and write every cell; returns one result per cell (never raises for one bad cell).

    ``model`` is a `TracedModel` (a graph) or a `DecoderModel` (a Hugging Face decoder LM folder)."""
    ctx = ctx or BuildContext()
    from compiler.llm import DecoderModel

    if isinstance(model, DecoderModel):
        from compiler.llm.build import build_decoder

        return build_decoder(model, options, ctx)
    cells = plan(model, options, ctx)
    request = _shared_data(cells)
    calibration = _calibration(model, request, cells)
    inputs, inputs_label = _verification_inputs(model, request, calibration)
    reference = _reference(model, inputs, inputs_label)
    stage = None
    if any(c.rewrites_graph or c.rewrites_program for c in cells):
        evaluation = _evaluation_set(model, request, calibration, (inputs, inputs_label))
        stage = PrecisionStage(
            calibration=calibration,
            evaluation=evaluation,
            reference=_reference(model, evaluation.inputs, evaluation.origin),
            cache_dir=options.cache_dir or options.out_dir / ".cache" / "calibration",
            accuracy_budget=request.quantization.accuracy_budget,
            progress=ctx.progress,
            host_arithmetic=ctx.host.isa.int8_arithmetic,
        )
    labels = None
    if model.samples and "label" in model.samples and inputs_label.startswith(f"{VERIFY_SAMPLES} bundled"):
        labels = np.asarray(model.samples["label"][:VERIFY_SAMPLES])
    fusion = FusionStage(inputs, replace(options.fusion, explain=request.fusion.explain),
                         options.out_dir / ".dumps" / model.name, ctx.progress)
    shared = _Shared(calibration, inputs, inputs_label, labels, reference,
                     toolchain_versions(sorted({c.backend for c in cells}, key=lambda b: b.name)), stage, fusion,
                     warnings=_reference_warnings(reference, inputs_label))
    results: list[CellResult] = []
    groups: dict[Path, list[tuple[Cell, CellResult]]] = {}
    for n, cell in enumerate(cells, 1):
        ctx.progress(f"[{n}/{len(cells)}] {cell.target.id}: lowering with {cell.backend.name} ({cell.precision})")
        result = _build_cell(model, cell, shared, options, ctx)
        ctx.progress(f"[{n}/{len(cells)}] {cell.target.id}: {result.status}")
        if cell.chosen_dest is None:
            results.append(result)
        else:
            groups.setdefault(cell.chosen_dest, []).append((cell, result))
    for group in groups.values():
        results += _choose_backend(group, shared, ctx, options)
    return results


def _choose_backend(group: Sequence[tuple[Cell, CellResult]], shared: _Shared, ctx: BuildContext,
                    options: BuildOptions) -> list[CellResult]:
    """The fastest verified candidate becomes the target's artifact; the manifest keeps every candidate's figure.

    Candidates run as the target's runtime loads them: on this host where the target is this host, else on the
    stated proxy (the same file on this CPU). A later backend in the target's order wins only by more than the
    noise margin, so two backends within the noise give the same choice in every build."""
    final = group[0][0].chosen_dest
    target = group[0][0].target
    verified = [(c, r) for c, r in group if r.status == "verified"]
    eligible = verified or [(c, r) for c, r in group if r.status == "not-run"]
    failed_dirs = {r.backend: Path(r.artifact) for _, r in group if r.status == "failed" and r.artifact}
    for backend, path in failed_dirs.items():  # a failed candidate is kept for inspection beside the artifact
        swap_into(path, final.with_name(f"{target.id}@{backend}{FAILED_SUFFIX}"))
    if not eligible:
        _remove_candidates(final)
        return [replace(r, artifact=str(final.with_name(f"{target.id}@{r.backend}{FAILED_SUFFIX}")))
                if r.backend in failed_dirs else r for _, r in group]
    figures: dict[str, tuple[float | None, str]] = {}
    runners: dict[str, Callable[[], object]] = {}
    for cell, result in eligible:
        if result.status != "verified":
            figures[cell.backend.name] = (None, f"not timed: {result.numerics.reason if result.numerics else ''}")
            continue
        manifest = read_artifact(Path(result.artifact)).manifest
        run_plan = cell.backend.plan_run(Path(result.artifact), manifest.backend.options, manifest.signature, target,
                                         ctx.host)
        runners[cell.backend.name] = partial(run_plan.runner.run, _timing_batch(manifest.signature, shared.inputs))
        figures[cell.backend.name] = (None, "measured on this host" if not run_plan.proxy else
                                      f"measured on this host as a proxy ({run_plan.note.removeprefix('proxy: ')})")
    if len(runners) > 1:  # a decision, not a profile: made whatever --no-latency says, and remembered
        def measure() -> dict:
            ctx.progress(f"{target.id}: timing {', '.join(runners)} against each other")
            return {"ms": {name: round(timed.median_ms, 4) for name, timed in race(runners).items()}, "when": utc_now()}

        key = {"target": target.digest, **_host_key(ctx.host),
               "candidates": {c.backend.name: _files_key(read_artifact(Path(r.artifact)).manifest.files, c.backend)
                              for c, r in eligible if c.backend.name in runners}}
        timed, remembered = remember("backend", key, measure)
        kept = f" (on {timed['when']}; the same candidates on this machine keep that decision)" if remembered else ""
        for name, ms in timed["ms"].items():
            figures[name] = (ms, figures[name][1] + ", interleaved rounds" + kept)
    winner = eligible[0]
    for cell, result in eligible[1:]:
        ms, best = figures[cell.backend.name][0], figures[winner[0].backend.name][0]
        if ms is not None and best is not None and faster(ms, best):
            winner = (cell, result)
    timed = sum(figures[c.backend.name][0] is not None for c, _ in eligible) > 1
    rule = (f"the fastest verified candidate; a later one in the target's order ({', '.join(target.backends)}) "
            f"must be at least {MARGIN:.0%} faster" if timed else
            "the first eligible candidate in the target's order (" + ", ".join(target.backends) + "): "
            + ("only one was verified" if len(verified) == 1 else "none could be timed here"))
    if not verified:
        rule += "; no candidate could be verified here, so none was timed"
    candidates = []
    for cell, result in group:
        ms, method = figures.get(cell.backend.name, (None, ""))
        note = "" if result.status in ("verified", "not-run") else result.message
        candidates.append(Candidate(cell.backend.name, result.status, ms, method or f"not eligible: {result.status}",
                                    note))
    choice = BackendChoice(winner[0].backend.name, rule, tuple(candidates))
    source = Path(winner[1].artifact)
    _record_choice(source, choice)
    swap_into(source, final)
    _remove_candidates(final)
    others = ", ".join(f"{c.backend} ({'%.3f ms' % c.latency_ms if c.latency_ms is not None else c.status})"
                       for c in candidates if c.backend != choice.chosen)
    ms = figures[choice.chosen][0]
    ctx.progress(f"{target.id}: chose {choice.chosen}" + (f" ({ms:.3f} ms)" if ms is not None else "")
                 + f" over {others}")
    return [replace(winner[1], artifact=str(final), choice=choice)]


def _record_choice(artifact: Path, choice: BackendChoice) -> None:
    from targets.files import write_text_atomic
    from targets.manifest import MANIFEST_NAME

    path = artifact / MANIFEST_NAME
    data = json.loads(path.read_text())
    data["backend_choice"] = to_json(choice)
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _remove_candidates(final: Path) -> None:
    import shutil

    folder = final.parent / CANDIDATES
    for path in folder.glob(f"{final.name}@*"):
        shutil.rmtree(path, ignore_errors=True)
    try:
        folder.rmdir()
    except OSError:
        pass  # another target's candidates are still there


#: below this, reference outputs are noise-sized: an absolute tolerance passes anything against them
NEAR_ZERO = 1e-6


def _reference_warnings(reference: Mapping[str, np.ndarray], label: str) -> tuple[str, ...]:
    largest = max((float(np.max(np.abs(v))) if np.asarray(v).size else 0.0 for v in reference.values()), default=0.0)
    if largest >= NEAR_ZERO:
        return ()
    return (f"the float reference's outputs on {label} are near zero (largest |value| {largest:.3g}): the tolerance "
            "check cannot tell a good artifact from a bad one on them; give --samples with inputs the model was made "
            "for (real images, token ids) so verification means something",)


def _static(model: TracedModel, shared: _Shared) -> TracedModel:
    """``model`` at static shapes, made once per graph and shared by the cells that need it."""
    key = f"{id(model.onnx_model)}:{id(model.exported_program)}"
    if key not in shared.static:
        shared.static[key] = concretize(model)
    return shared.static[key]


@dataclass
class _Variant:
    """One lowering of a cell's graph, checked: what the manifest of the artifact is made from."""

    model: TracedModel  # as lowered (fused, quantized, static)
    lowered: Any
    files: Mapping[str, FileRecord]
    numerics: Numerics
    latency: LatencyStats | None
    failed_stage: str
    run_plan: Any  # RunPlan, or None where the artifact cannot run here
    report: Mapping[str, Any] | None  # the precision stage's
    fusion: Mapping[str, Any] | None  # the fusion stage's
    seconds: float

    @property
    def fusion_fired(self) -> bool:
        return bool(self.fusion) and any(p.get("fired") for p in self.fusion.get("passes", ()))


@dataclass
class _Where:
    """The stage a cell is in: an error that names none of its own belongs to it."""

    stage: str = "LOWER"


def _lower_variant(model: TracedModel, cell_model: TracedModel, fusion_report, cell: Cell, shared: _Shared,
                   path: Path, ctx: BuildContext, options: BuildOptions, start: float, where: _Where) -> _Variant:
    """Quantize (as the cell's precision asks), lower into ``path``, hash, and verify where it runs here."""
    report = None
    where.stage = "QUANTIZE"
    try:
        if cell.rewrites_graph:
            prepared = shared.stage.prepare(cell.settings, cell_model.onnx_model)
            report = prepared.report
            cell_model = replace(cell_model, onnx_model=prepared.model, graph_precision=cell.precision,
                                 passes=prepared.passes)
        if not cell.backend.symbolic_dims and not model.signature.is_static:
            cell_model = _static(cell_model, shared)
        if cell.rewrites_program:
            prepared_program = shared.stage.prepare_program(cell.settings, cell_model, cell.backend.program_quantizer)
            report = prepared_program.report
            cell_model = replace(cell_model, exported_program=prepared_program.program,
                                 graph_precision=cell.precision, passes=prepared_program.passes)
        if cell.quantizes_itself:
            if shared.calibration is None:
                raise UsageError(f"{cell.backend.name} quantizes {cell.precision} from calibration samples: pass "
                                 "--calibration PATH, or --calibration random")
            cell_model = replace(cell_model, calibration=shared.calibration)
        where.stage = "LOWER"
        lower_with_data = getattr(cell.backend, "lower_with_data", None)  # an optional hook of the protocol
        if lower_with_data is not None:
            lowered = lower_with_data(cell_model, cell.target, cell.precision, path, _build_data(cell, shared))
        else:
            lowered = cell.backend.lower(cell_model, cell.target, cell.precision, path)
    except ChipfitError:
        raise
    except Exception as exc:  # a backend's own failure is this cell's LOWER failure
        raise LowerError(f"{cell.backend.name} could not lower {model.name} for {cell.target.id}: "
                         f"{type(exc).__name__}: {exc}") from exc
    files = hash_files(path, lowered.files)
    seconds = time.perf_counter() - start
    numerics, latency, failed_stage, run_plan = _check(cell, path, lowered, shared, ctx, options)
    return _Variant(cell_model, lowered, files, numerics, latency, failed_stage, run_plan, report, fusion_report,
                    seconds)


def _build_data(cell: Cell, shared: _Shared) -> BuildData:
    """The samples a backend taking `BuildData` gets: calibration only where it quantizes itself."""
    calibration = shared.calibration if cell.quantizes_itself else None
    return BuildData(calibration.batched() if calibration is not None else None,
                     calibration.origin if calibration is not None else "", shared.inputs, shared.inputs_label)


def _build_cell(model: TracedModel, cell: Cell, shared: _Shared, options: BuildOptions, ctx: BuildContext) -> CellResult:
    start = time.perf_counter()
    base = dict(target=cell.target.id, backend=cell.backend.name, precision=cell.precision)
    where = _Where()
    try:
        fused, fusion_report = model, None
        if cell.request.fusion.enabled and cell.backend.lowers_onnx(model, cell.precision):
            onnx_model, fusion_report = shared.fusion.run(
                model.onnx_model, cell.target.fusions, cell.backend.accepted_domains, cell.precision,
                cell.target.source_file, cell.dest.name)
            fused = replace(model, onnx_model=onnx_model)
        with Staging(cell.dest) as staging:
            chosen = _lower_variant(model, fused, fusion_report, cell, shared, staging.path, ctx, options, start,
                                    where)
            commit, checks = staging, ()
            with Staging(cell.dest) as plain_staging:
                if chosen.fusion_fired and not _worth_racing(chosen, options):
                    checks = (SpeedCheck("fusion", True, None, None, f"not measured: {_why_not_raced(chosen, options)}",
                                         "kept as the target declares it"),)
                if _worth_racing(chosen, options):
                    # the rewrite stays only if the artifact runs faster with it, as the runtime loads it
                    ctx.progress(f"{cell.target.id}: timing {cell.backend.name} with and without fusion")
                    plain = _lower_variant(model, model, None, cell, shared, plain_staging.path, ctx, options,
                                           start, where)
                    check = _fusion_check(chosen, plain, shared.inputs, ctx.host, cell.backend)
                    checks = (check,)
                    if not check.kept:
                        why = (f"measured no faster with it ({check.with_ms:.4g} ms) than without it "
                               f"({check.without_ms:.4g} ms), as the runtime loads the artifact")
                        chosen = replace(plain, fusion={**chosen.fusion, "applied": False, "dropped": why})
                        commit = plain_staging
                        ctx.progress(f"{cell.target.id}: fusion dropped for {cell.backend.name}: {check.with_ms:.3f} "
                                     f"ms with it, {check.without_ms:.3f} ms without")
                cost = graph_cost(chosen.model.onnx_model, cell.precision, shapes_from=model.onnx_model)
                warnings = _memory_warnings(cell.target, chosen.files, cost)
                manifest = partial(_manifest, model, cell, chosen.lowered, chosen.files, calibration=shared.calibration,
                                   report=chosen.report, seconds=chosen.seconds, versions=shared.versions, cost=cost,
                                   fusion=chosen.fusion, speed_checks=checks,
                                   reproducibility=content_digest(commit.path, chosen.files,
                                                                  cell.backend.normalizers()),
                                   extra_notes=shared.warnings, host=ctx.host)
                numerics = chosen.numerics
                size = sum(f.bytes for f in chosen.files.values())
                if numerics.status == "failed":
                    failed = commit.commit(manifest(numerics=numerics),
                                           cell.dest.with_name(cell.dest.name + FAILED_SUFFIX))
                    return CellResult(**base, status="failed", artifact=str(failed), numerics=numerics,
                                      size_bytes=size, build_seconds=chosen.seconds, quantization=chosen.report,
                                      fusion=chosen.fusion, fallbacks=tuple(chosen.lowered.fallbacks),
                                      message=f"verification failed; artifact kept for inspection at {failed}",
                                      stage=chosen.failed_stage)
                dest = commit.commit(manifest(numerics=numerics))
    except ChipfitError as exc:
        return CellResult(**base, status="error", build_seconds=time.perf_counter() - start, message=str(exc),
                          stage=stage_of(exc, where.stage),
                          traceback=_traceback(exc), unsupported_op=getattr(exc, "op", ""))
    except Exception as exc:  # a bug must not take the other cells down
        return CellResult(**base, status="error", build_seconds=time.perf_counter() - start,
                          message=f"{type(exc).__name__}: {exc}", stage=where.stage, traceback=_traceback(exc))
    return CellResult(**base, status=numerics.status, artifact=str(dest), size_bytes=size,
                      build_seconds=chosen.seconds, numerics=numerics, latency=chosen.latency,
                      quantization=chosen.report, fusion=chosen.fusion, fallbacks=tuple(chosen.lowered.fallbacks),
                      warnings=warnings + (shared.warnings if numerics.status != "not-run" else ()))


def _worth_racing(variant: _Variant, options: BuildOptions) -> bool:
    """A fused artifact that runs here as the target runs it is timed against the unfused one."""
    return (variant.fusion_fired and variant.numerics.status == "verified" and variant.run_plan is not None
            and not variant.run_plan.proxy)


def _why_not_raced(variant: _Variant, options: BuildOptions) -> str:
    if variant.numerics.status != "verified":
        return f"the artifact is {variant.numerics.status} here"
    return "the artifact runs here only as a proxy, whose speed is not the target's"


def _timing_batch(signature, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    first = signature.inputs[0].shape[0] if signature.inputs[0].shape else 1
    return {k: v[: first if isinstance(first, int) else 1] for k, v in inputs.items()}


def _host_key(host: HostInfo) -> dict[str, Any]:
    # the ISA class too: a choice measured where int8 runs on VNNI is not replayed where it does not
    return {"cpu": host.model_name, "cores": host.cores, "arch": host.arch, "isa": host.isa.label}


def _files_key(files: Mapping[str, FileRecord], backend: Backend) -> str:
    """The artifact's identity for a remembered decision: its files, less those whose bytes vary per build
    (e.g. model.ort, which the backend's normalizers leave out of the content digest)."""
    excluded = {name for name, (normalize, _) in backend.normalizers().items() if normalize is None}
    return digest_json({name: f.sha256 for name, f in files.items() if name not in excluded})


def _fusion_check(fused: _Variant, plain: _Variant, inputs: Mapping[str, np.ndarray], host: HostInfo,
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

    key = {"fused": _files_key(fused.files, backend), "plain": _files_key(plain.files, backend), **_host_key(host)}
    figures, remembered = remember("fusion", key, measure)
    method = (f"measured on this host as the runtime loads the artifact, {figures['rounds']} interleaved rounds"
              + (f" (on {figures['when']}; the same artifacts on this machine keep that decision)" if remembered else ""))
    return SpeedCheck("fusion", faster(figures["with_ms"], figures["without_ms"]), figures["with_ms"],
                      figures["without_ms"], method, rule)


def _traceback(exc: BaseException) -> str:
    import traceback

    return "".join(traceback.format_exception(exc))


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


def _check(cell: Cell, path: Path, lowered, shared: _Shared, ctx: BuildContext,
           options: BuildOptions) -> tuple[Numerics, LatencyStats | None, str, Any]:
    """(numerics, host latency, the stage that failed if verification failed, the run plan or None)."""
    inputs = shared.inputs
    try:
        run_plan = cell.backend.plan_run(path, lowered.options, lowered.signature, cell.target, ctx.host)
    except NotRunnable as exc:
        return Numerics("not-run", cell.precision, reason=str(exc), structure=lowered.structure), None, "", None
    tolerance = cell.target.tolerance(cell.precision)
    try:
        numerics = verify(run_plan, lowered.signature, inputs, shared.reference, tolerance, cell.precision,
                          shared.inputs_label, shared.labels)
    except Exception as exc:
        error = RunError(f"running the artifact failed: {type(exc).__name__}: {exc}")
        return Numerics("failed", cell.precision, reason=str(error), runner=run_plan.runner.description,
                        proxy=run_plan.proxy, inputs=shared.inputs_label), None, error.stage, None
    latency = None
    if options.measure_latency and not run_plan.proxy and numerics.status == "verified":
        batch = _timing_batch(lowered.signature, inputs)
        latency = time_callable(lambda: run_plan.runner.run(batch))
    return numerics, latency, "MISMATCH" if numerics.status == "failed" else "", run_plan


def exit_code(results: Sequence[CellResult]) -> int:
    return 0 if all(r.ok for r in results) else 1


def print_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
