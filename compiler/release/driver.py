"""The release driver: every model x precision x target cell, cached, in worker processes, into ``dist/``.

1. **plan**: read the release file, resolve targets (ids or spec files) and precisions, and compute
   each cell's cache key. Anything wrong (a target that does not build a precision, int8 without
   calibration data, a threshold for a target not in the release) stops here, before any work.
2. **build**: under the key's lock, a verified cache entry is used as is; otherwise the cell goes to the
   executor (`compiler.release.executor`: this machine's worker processes, ``jobs`` at once, or a Dask
   cluster), which builds it with ``python -m compiler.release.worker`` and commits it to the cache. A
   worker that fails or crashes is reported in its cell; the others go on.
3. **fill dist/**: each cell's artifacts are copied to ``dist/<model>/<precision>/<target>[@backend]``
   by atomic rename; artifacts of cells no longer in the release are removed.
4. **check** (``--check-reproducible``): every cell is built a second time, outside the cache, and
   compared file by file (or by content digest where the format embeds nondeterminism).
5. **profile** every artifact in ``dist/`` (measurements already taken of the same artifact on this
   host are kept), then write ``dist/index.json`` and ``dist/summary.md``.

A killed run leaves complete cache entries and complete dist artifacts only; run it again to resume.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from compiler import __version__
from compiler.artifact import FAILED_SUFFIX, MANIFEST_NAME, STAGING_MARK, swap_into
from compiler.errors import UsageError
from compiler.frontend import is_decoder_folder
from compiler.release.cache import CacheEntry, cache_key, digest_source_code, key_components, toolchain_of
from compiler.release.cache_at import open_cache
from compiler.release.config import ModelEntry, ReleaseConfig
from compiler.release.executor import CellBuild, CellTask, Executor, untar
from compiler.release.executors import make_executor
from compiler.release.pool import Spawn
from compiler.release.summary import summary_markdown
from compiler.reproducibility import compare_builds
from targets.files import file_lock, sha256_file, utc_now, write_text_atomic
from targets.manifest import read_artifact, read_manifest
from targets.release_index import (INDEX_NAME, INDEX_SCHEMA_VERSION, ArtifactEntry, CellEntry, NumericsSummary,
                                   ProfileSummary, ReleaseIndex, ReproducibilityCheck)
from targets.backend import build_resources
from targets.request import BuildRequest, digest_json
from targets.spec import TargetError, TargetSpec, load_spec

SUMMARY_NAME = "summary.md"
REPORT_NAME = "report.html"
LOCK_NAME = ".release.lock"
Progress = Callable[[str], None]


@dataclass(frozen=True)
class ReleaseOptions:
    out_dir: Path
    cache_dir: Path | str  # a folder, or an fsspec URL (``s3://bucket/prefix``, ``file:///shared/cache``)
    jobs: int = 1
    check_reproducible: bool = False
    profile: bool = True
    cell_timeout_s: float = 1800.0
    #: after the release, the cache is pruned to this size, least recently used entries first (None: no cap)
    cache_max_bytes: int | None = None
    #: where cache misses are built: "local" (worker processes here) or "dask" (a cluster)
    executor: str = "local"
    #: the Dask scheduler's address (None: a local cluster of ``jobs`` workers on 127.0.0.1)
    scheduler: str | None = None


@dataclass(frozen=True)
class CellPlan:
    model: ModelEntry
    target: TargetSpec
    spec_file: str | None
    precision: str
    request: BuildRequest  # everything the worker needs to build the cell
    components: Mapping[str, str]
    key: str
    #: the toolchain the key was computed for: {"digest", "fingerprint", "source"} (a worker checks its own)
    toolchain: Mapping[str, Any] = field(default_factory=dict)
    #: what a worker must offer to build the cell (from its backends; used by the Dask executor)
    resources: Mapping[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.model.name}/{self.precision}/{self.target.id}"

    @property
    def slug(self) -> str:
        return self.label.replace("/", "_")


@dataclass
class CellOutcome:
    cell: CellPlan
    status: str  # "built", "cached", "failed" (verification failed) or "error" (could not build)
    seconds: float = 0.0
    artifacts: list[ArtifactEntry] = field(default_factory=list)
    message: str = ""
    cache_note: str = ""
    log: str | None = None
    reproducible: list[ReproducibilityCheck] | None = None
    stage: str = ""
    failed_backends: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status in ("built", "cached") and all(r.ok for r in self.reproducible or [])


@dataclass
class ReleaseReport:
    config: ReleaseConfig
    outcomes: list[CellOutcome]
    profile_errors: dict[str, str] = field(default_factory=dict)
    profile_fit: dict[str, Any] | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes) and not self.profile_errors


# --- plan ------------------------------------------------------------------------------------------


def _resolve_targets(config: ReleaseConfig, registry) -> tuple[Any, dict[str, tuple[TargetSpec, str | None]]]:
    refs = list(dict.fromkeys(list(config.targets) + [t for m in config.models for t in m.targets]))
    specs: dict[str, tuple[TargetSpec, str | None]] = {}
    extra = {}
    for ref in refs:
        if ref.endswith(".toml"):
            spec = load_spec(ref)
            extra[spec.id] = spec
            specs[ref] = (spec, ref)
    if extra:
        registry = registry.including(extra, str(config.file))
    for ref in refs:
        if ref not in specs:
            try:
                specs[ref] = (registry.get(ref), None)
            except TargetError as exc:
                raise UsageError(f"{config.file}: targets: {exc}") from None
    return registry, specs


def plan_release(config: ReleaseConfig, registry=None) -> list[CellPlan]:
    """Every cell of the release with its cache key; raises `UsageError` for anything that cannot be built."""
    return _plan(config, registry)[1]


def _plan(config: ReleaseConfig, registry=None) -> tuple[Any, list[CellPlan]]:
    """The registry with the release's spec-file targets, and the cells."""

    from compiler.backends import backend_registry
    from targets.host import detect_host
    from targets.registry import target_registry

    registry, specs = _resolve_targets(config, registry or target_registry())
    ids = {spec.id for spec, _ in specs.values()}
    for target_id in config.target_options:
        if target_id not in ids:
            raise UsageError(f"{config.file}: target.{target_id}: no such target in this release "
                             f"(targets: {', '.join(sorted(ids))})")
    for target_id in config.target_thresholds:
        if target_id not in ids:
            raise UsageError(f"{config.file}: thresholds.target.{target_id}: no such target in this release "
                             f"(targets: {', '.join(sorted(ids))})")
    backends, host = backend_registry(), detect_host()
    signatures: dict[str, Any] = {}
    source_code = digest_source_code()
    toolchains: dict[tuple[str, ...], dict[str, Any]] = {}
    cells: list[CellPlan] = []
    for n, model in enumerate(config.models):
        for ref in model.targets or config.targets:
            spec, spec_file = specs[ref]
            for requested in model.precisions:
                precision = spec.default_precision if requested == "default" else requested
                if precision not in spec.precisions:
                    raise UsageError(
                        f"{config.file}: model[{n}] ({model.name}): target {spec.id} does not build {precision} "
                        f"(it builds {', '.join(spec.precisions)}); list the targets for this model with "
                        f"`targets = [...]` in its [[model]] table")
                if precision == "int8" and not model.options.data.calibration and model.path != "example":
                    raise UsageError(f"{config.file}: model[{n}] ({model.name}) builds int8 for {spec.id}, which needs "
                                     "calibration samples: add `calibration = \"PATH\"` (or \"random\") to the model")
                if any(c.model is model and c.target.id == spec.id and c.precision == precision for c in cells):
                    continue  # "default" and an explicit precision that coincide
                request = replace(model.options, target=spec.id, spec_file=spec_file, precision=precision,
                                  profile=config.profile)
                backend = config.target_options.get(spec.id, {}).get("backend")
                if backend and not request.backend:
                    request = replace(request, backend=backend)
                if request.backend and request.backend not in spec.backends:
                    raise UsageError(f"{config.file}: model[{n}] ({model.name}): backend {request.backend!r}: target "
                                     f"{spec.id} is built by {', '.join(spec.backends)}")
                request = _scoped_data(request, precision)
                if is_decoder_folder(model.path):
                    _check_decoder(model, request, registry, n, config.file)
                else:
                    _check_graph(model, spec, request, registry, n, config.file)
                    _check_data(model, request, n, config.file, signatures)
                try:
                    used = [backends.get(b) for b in spec.backends]
                    if spec.backends not in toolchains:
                        fingerprint = toolchain_of(used)
                        toolchains[spec.backends] = {"digest": digest_json(fingerprint), "fingerprint": fingerprint,
                                                     "source": source_code}
                    toolchain = toolchains[spec.backends]
                    components = key_components(request, spec, used, host, toolchain["digest"], source_code)
                    building = [b for b in used if not request.backend or b.name == request.backend]
                    resources = build_resources(building, spec)
                except TargetError as exc:
                    raise UsageError(f"target {spec.id}: {exc}") from None
                cells.append(CellPlan(model, spec, spec_file, precision, request, components, cache_key(components),
                                      toolchain, resources))
    return registry, cells


def _scoped_data(request: BuildRequest, precision: str) -> BuildRequest:
    """Only the data a cell reads enters its request (and so its cache key). An int8 cell reads the calibration
    samples; another cell reads them only as its verification (and evaluation) inputs, i.e. when the model has no
    ``samples``; the evaluation samples only the cells whose precision stage reports accuracy (not fp32)."""
    data = request.data
    if precision != "int8" and data.calibration and data.samples:
        data = replace(data, calibration=None)
    if precision == "fp32" and data.eval:
        data = replace(data, eval=None)
    return replace(request, data=data)


def _check_data(model: ModelEntry, request: BuildRequest, n: int, file: Path, signatures: dict[str, Any]) -> None:
    """Calibration, verification and evaluation samples checked against the model's inputs (names, shapes,
    dtypes, NaN/Inf) while planning, so bad data is refused before any cell is built, naming the release key."""
    from calibration.readers import CalibrationError, load_samples
    from compiler.frontend import load_model, signature_of
    from targets.signature import parse_input_override

    paths = {key: getattr(request.data, key) for key in ("calibration", "samples", "eval")}
    paths = {k: v for k, v in paths.items() if v and v != "random"}
    if not paths:
        return
    where = f"{file}: model[{n}] ({model.name})"
    if model.path not in signatures:
        if Path(model.path).is_dir():  # an exported folder: its samples are made by its own processor
            loaded = load_model(model.path, [parse_input_override(t) for t in request.model.inputs],
                                request.model.trust_remote_code, request.model.task)
            signatures[model.path] = (loaded.signature, loaded.preprocess)
        else:
            signatures[model.path] = (signature_of(model.path, request.model.inputs), None)
    tokenizer = Path(request.data.tokenizer) if request.data.tokenizer else None
    signature, preprocess = signatures[model.path]
    for key, path in paths.items():
        try:
            load_samples(path, signature, limit=8, tokenizer=tokenizer, preprocess=preprocess)
        except CalibrationError as exc:
            raise UsageError(f"{where}.{key}: {exc}") from None


def _check_graph(model: ModelEntry, spec, request: BuildRequest, registry, n: int, file: Path) -> None:
    """A graph cell is checked by the build's planner as far as it can be without the traced model (the int8
    scheme the target's ISA computes, activation type, int4 block size, backend options), before any work."""
    from compiler.build import BuildContext, BuildOptions, check_graph_target

    try:
        check_graph_target(request, spec, BuildOptions(requests=[request], out_dir=file.parent),
                           BuildContext(targets=registry))
    except (UsageError, TargetError) as exc:
        raise UsageError(f"{file}: model[{n}] ({model.name}): target {spec.id}: {exc}") from None


def _check_decoder(model: ModelEntry, request: BuildRequest, registry, n: int, file: Path) -> None:
    """A decoder LM cell is planned as `chipfit build` plans it (context, memory fit, a backend that lowers it),
    from the folder's config and weight headers alone, so a release refuses it before any work."""
    from compiler.build import BuildContext, BuildOptions, plan_cells
    from compiler.frontend.huggingface import load_hf_directory

    try:
        decoder = load_hf_directory(Path(model.path), request.model.trust_remote_code, name=model.name, digest=False)
        plan_cells(decoder, BuildOptions(requests=[request], out_dir=file.parent), BuildContext(targets=registry))
    except UsageError as exc:
        raise UsageError(f"{file}: model[{n}] ({model.name}): {exc}") from None


# --- build -----------------------------------------------------------------------------------------


def _task(cell: CellPlan, options: ReleaseOptions, commit: bool = True) -> CellTask:
    return CellTask(cell.label, cell.slug, cell.model.name, cell.key, dict(cell.components), cell.request.to_dict(),
                    dict(cell.toolchain), options.cell_timeout_s, commit, dict(cell.resources))


def _run(cell: CellPlan, executor: Executor, options: ReleaseOptions, log: Path, commit: bool = True) -> CellBuild:
    """One cell through the executor; its log goes to ``log`` (in dist/logs, written here: only the driver
    writes dist/). An executor's own failure (no worker can take the cell, a lost worker) is the cell's error."""
    try:
        build = executor.submit(_task(cell, options, commit)).result()
    except Exception as exc:  # noqa: BLE001 (the cell fails, the release goes on)
        build = CellBuild("error", error=f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc))
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(build.log)
    log.with_suffix(".libraries.log").write_text(build.libraries_log)
    return build


def _crash_message(build: CellBuild, log: Path) -> str:
    code = build.exit_code
    how = f"signal {-code}" if code < 0 else f"exit {code}"
    tail = " | ".join(build.log.strip().splitlines()[-3:])
    where = f" on {build.worker}" if build.worker and build.worker != "local" else ""
    return f"the worker crashed ({how}){where}; log {log}: {tail[-400:]}"


def _artifact_record(path: Path, dist: Path) -> ArtifactEntry:
    artifact = read_artifact(path)
    m = artifact.manifest
    n = m.numerics
    repro = m.reproducibility
    return ArtifactEntry(
        path=path.relative_to(dist).as_posix(), model=m.model.name, target=artifact.target, backend=artifact.backend,
        precision=m.precision, manifest_sha256=sha256_file(path / MANIFEST_NAME),
        content_digest=repro.content_digest if repro else None,
        byte_identical_expected=repro.byte_identical_expected if repro else None, size_bytes=artifact.size_bytes,
        numerics=NumericsSummary(n.status, n.proxy, n.reason, n.min_cosine, n.max_abs_error),
        toolchain=dict(m.toolchain))


def _materialize(entry: CacheEntry, cell: CellPlan, dist: Path) -> list[ArtifactEntry]:
    """Copy the entry's artifacts into dist (unless the same artifact is already there, intact)."""
    return _copy_into_dist({name: entry.path / name for name in entry.record["artifacts"]}, cell, dist)


def _copy_into_dist(folders: Mapping[str, Path], cell: CellPlan, dist: Path) -> list[ArtifactEntry]:
    """Artifact folders (name -> built folder) into ``dist/<model>/<precision>/<name>`` by atomic rename; one
    already there and intact (same manifest, files matching) is left as it is, with the profile beside it."""
    root = dist / cell.model.name / cell.precision
    root.mkdir(parents=True, exist_ok=True)
    records = []
    for name, source in folders.items():
        dest = root / name
        current = dest / MANIFEST_NAME
        intact = (current.is_file() and sha256_file(current) == sha256_file(source / MANIFEST_NAME)
                  and not read_artifact(dest).file_problems())
        if not intact:
            staging = root / f".{name}{STAGING_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
            shutil.copytree(source, staging, symlinks=True)
            swap_into(staging, dest)
        shutil.rmtree(root / f"{name}{FAILED_SUFFIX}", ignore_errors=True)
        records.append(_artifact_record(dest, dist))
    return records


def _failure(result: Mapping[str, Any]) -> str:
    """What went wrong in one of a worker's results, without the worker's own (temporary) paths."""
    if result["status"] != "failed":
        return f"{result['backend']}: {result['message'] or result['status']}"
    numerics = result.get("numerics") or {}
    outputs = numerics.get("outputs") or []
    figures = (f"min cosine {min(o['cosine'] for o in outputs):.6f}, max|err| "
               f"{max(o['max_abs_error'] for o in outputs):.3g}" if outputs else numerics.get("reason") or "")
    tolerance = numerics.get("tolerance") or {}
    limit = (f"; tolerance atol {tolerance.get('atol')}, rtol {tolerance.get('rtol')}, cosine >= "
             f"{tolerance.get('min_cosine')}" if tolerance else "")
    return f"{result['backend']}: verification failed ({figures}{limit})"


def _keep_failed(staging: Path, cell: CellPlan, dist: Path) -> list[str]:
    """Artifacts whose verification failed, moved to dist as ``<name>.failed`` for inspection."""
    kept = []
    root = dist / cell.model.name / cell.precision
    for failed in (staging / "out" / cell.model.name).glob(f"*{FAILED_SUFFIX}"):
        root.mkdir(parents=True, exist_ok=True)
        swap_into(failed, root / failed.name)
        kept.append((root / failed.name).relative_to(dist).as_posix())
    return kept


def _why_rebuilt(cell: CellPlan, previous: Mapping[str, Any]) -> str:
    before = previous.get(cell.label)
    if not before:
        return "new cell"
    changed = [k for k, v in cell.components.items() if before.get("components", {}).get(k) != v]
    return ("changed: " + ", ".join(changed)) if changed else "not in the cache"


def _build_one(cell: CellPlan, cache, options: ReleaseOptions, executor: Executor,
               previous: Mapping[str, Any], progress: Progress, position: str) -> CellOutcome:
    start = time.perf_counter()
    log = options.out_dir / "logs" / f"{cell.slug}.log"
    with cache.lock(cell.key):
        entry, corrupt = cache.lookup(cell.key)
        if entry is not None:
            artifacts = _materialize(entry, cell, options.out_dir)
            outcome = CellOutcome(cell, "cached", time.perf_counter() - start, artifacts)
            progress(f"{position} {cell.label}: cache hit ({len(artifacts)} artifact(s), {outcome.seconds:.1f} s)")
            return outcome
    note = corrupt or _why_rebuilt(cell, previous)
    progress(f"{position} {cell.label}: building ({note})")
    build = _run(cell, executor, options, log)
    if build.status in ("built", "cached"):  # "cached": another run committed it while this one waited
        with cache.lock(cell.key):
            entry, problem = cache.lookup(cell.key)
        if entry is None:
            outcome = CellOutcome(cell, "error", time.perf_counter() - start, cache_note=note, log=str(log),
                                  message=f"the worker committed the cell, but its cache entry is unusable: {problem}")
        else:
            outcome = CellOutcome(cell, build.status, time.perf_counter() - start,
                                  _materialize(entry, cell, options.out_dir), cache_note=note,
                                  log=str(log) if build.status == "built" else None)
    elif build.status == "crashed":
        outcome = CellOutcome(cell, "error", time.perf_counter() - start, message=_crash_message(build, log),
                              cache_note=note, log=str(log))
    elif build.status == "error":
        outcome = CellOutcome(cell, "error", time.perf_counter() - start, message=build.error, cache_note=note,
                              log=str(log), stage=build.stage)
    else:
        outcome = _not_cached(cell, build, cache, options, note, log, start)
    verdict = outcome.status if outcome.status in ("built", "cached") else f"{outcome.status.upper()}: {outcome.message}"
    progress(f"{position} {cell.label}: {verdict} ({outcome.seconds:.1f} s)")
    return outcome


def _not_cached(cell: CellPlan, build: CellBuild, cache, options: ReleaseOptions, note: str, log: Path,
                start: float) -> CellOutcome:
    """A cell some of whose backends failed: what verified ships (a partial cell is never cached), the failed
    artifacts are kept in dist as ``<target>.failed`` for inspection."""
    results = list(build.results)
    bad = [r for r in results if r["status"] not in ("verified", "not-run")]
    good = [r for r in results if r not in bad]
    staging = cache.staging(cell.slug)
    try:
        built = staging / "out" / cell.model.name
        untar(build.outputs, built)
        kept = _keep_failed(staging, cell, options.out_dir)
        message = "; ".join(_failure(r) for r in bad) + (f" (kept: {', '.join(kept)})" if kept else "")
        stage = next((r.get("stage") for r in bad if r.get("stage")), "")
        if good:
            artifacts = _copy_into_dist({Path(r["artifact"]).name: built / Path(r["artifact"]).name for r in good},
                                        cell, options.out_dir)
            return CellOutcome(cell, "partial", time.perf_counter() - start, artifacts, message=message,
                               cache_note=note, log=str(log), stage=stage,
                               failed_backends=tuple(r["backend"] for r in bad))
        return CellOutcome(cell, "failed" if all(r["status"] == "failed" for r in bad) else "error",
                           time.perf_counter() - start, message=message, cache_note=note, log=str(log),
                           stage=stage, failed_backends=tuple(r["backend"] for r in bad))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_reproducible(outcome: CellOutcome, executor: Executor, options: ReleaseOptions,
                        progress: Progress) -> None:
    """Build the cell again outside the cache, in a fresh process, and compare each artifact with dist's."""
    from targets.manifest import Manifest

    cell = outcome.cell
    log = options.out_dir / "logs" / f"{cell.slug}.rebuild.log"
    build = _run(cell, executor, options, log, commit=False)
    if build.status not in ("results", "built"):
        error = _crash_message(build, log) if build.status == "crashed" else build.error
        outcome.reproducible = [ReproducibilityCheck(False, cell.label, f"second build failed: {error}")]
        return
    checks = []
    for record in outcome.artifacts:
        name = Path(record.path).name
        first_manifest = read_manifest(options.out_dir / record.path / MANIFEST_NAME)
        if name not in build.manifests:
            checks.append(ReproducibilityCheck(False, record.path, "the second build made no such artifact"))
            continue
        second = Manifest.from_dict(json.loads(build.manifests[name]), f"{cell.label} (second build)/{name}")
        same, detail = compare_builds(first_manifest, second)
        checks.append(ReproducibilityCheck(same, record.path, detail))
    outcome.reproducible = checks
    for check in checks:
        progress(f"reproducible? {check.artifact}: {'yes' if check.ok else 'NO'} ({check.detail})")


def _previous_index(dist: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The index.json an earlier release left in dist (or {}), and its cells by label."""
    path = dist / INDEX_NAME
    try:
        previous = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        previous = {}
    return previous, {f"{c['model']}/{c['precision']}/{c['target']}": c for c in previous.get("cells", [])}


def _remove_stale(dist: Path, previous: Mapping[str, Any], outcomes: Sequence[CellOutcome]) -> list[str]:
    """Artifacts the previous release put in dist that this release did not produce."""
    keep = {a.path for o in outcomes for a in o.artifacts}
    removed = []
    for cell in previous.get("cells", []):
        for artifact in cell.get("artifacts", []):
            rel = artifact.get("path", "")
            if rel and rel not in keep and (dist / rel / MANIFEST_NAME).is_file():
                shutil.rmtree(dist / rel)
                removed.append(rel)
    return removed


def dry_run(config: ReleaseConfig, options: ReleaseOptions, registry=None) -> list[tuple[CellPlan, str]]:
    """Each cell and what a release would do with it ("cached", or "build: <why>"); builds nothing."""
    cache = open_cache(options.cache_dir)
    _, previous_cells = _previous_index(options.out_dir)
    plan = []
    for cell in plan_release(config, registry):
        usable, corrupt = cache.peek(cell.key)
        plan.append((cell, "cached" if usable else f"build: {corrupt or _why_rebuilt(cell, previous_cells)}"))
    return plan


def release(config: ReleaseConfig, options: ReleaseOptions, progress: Progress = lambda m: None,
            spawn: Spawn | None = None, registry=None) -> ReleaseReport:
    """Build, check and profile the release. Cache misses go to the executor ``options.executor`` names;
    ``spawn`` (local executor only) runs one cell's worker instead of a `WorkerPool` (tests)."""
    start = time.perf_counter()
    registry, cells = _plan(config, registry)
    dist = options.out_dir
    dist.mkdir(parents=True, exist_ok=True)
    with _dist_lock(dist):
        cache = open_cache(options.cache_dir)
        executor = make_executor(options.executor, cache, options.jobs, options.scheduler, spawn)
        try:
            return _fill(config, options, progress, executor, cache, registry, cells, start)
        except BaseException:
            executor.kill()  # an interrupted cell leaves only its staging folder, removed by the next run
            raise
        finally:
            executor.close()


@contextlib.contextmanager
def _dist_lock(dist: Path) -> Iterator[None]:
    """One release at a time writes a dist/ folder (runs into different folders share the cache freely)."""
    with file_lock(dist / LOCK_NAME, wait=False) as held:
        if not held:
            raise UsageError(f"{dist}: another chipfit release is writing to this folder; wait for it, or "
                             "give -o another folder")
        yield


def _fill(config: ReleaseConfig, options: ReleaseOptions, progress: Progress, executor: Executor, cache, registry,
          cells: list[CellPlan], start: float) -> ReleaseReport:
    dist = options.out_dir
    previous, previous_cells = _previous_index(dist)
    progress(f"release {config.name}: {len(cells)} cell(s) ({len(config.models)} model(s)); cache "
             f"{cache.location}; {executor.description}")
    lock = threading.Lock()

    def say(message: str) -> None:
        with lock:
            progress(message)

    width = len(str(len(cells)))
    # the driver's threads wait on the executor: as many as it takes cells at once
    threads = ThreadPoolExecutor(max_workers=max(1, min(executor.slots, len(cells))))
    try:
        futures = [threads.submit(_build_one, cell, cache, options, executor, previous_cells, say,
                                  f"[{n:>{width}}/{len(cells)}]") for n, cell in enumerate(cells, 1)]
        outcomes = [f.result() for f in futures]
        if options.check_reproducible:
            checks = [threads.submit(_check_reproducible, o, executor, options, say) for o in outcomes
                      if o.status in ("built", "cached")]
            for f in checks:
                f.result()
    except BaseException:
        # Ctrl-C: no new cell starts; the ones running end with their workers (see `release`).
        threads.shutdown(wait=False, cancel_futures=True)
        raise
    threads.shutdown()
    executor.idle()  # the workers end before profiling: idle build processes must not share the CPUs being timed
    for rel in _remove_stale(dist, previous, outcomes):
        progress(f"removed {rel}: no longer in the release")
    report = ReleaseReport(config, outcomes)
    if options.profile and config.profile_enabled and any(o.artifacts for o in outcomes):
        _profile(report, options, progress, registry)
        _keep_profiles(report, cache, dist)
    report.seconds = time.perf_counter() - start
    _write_index(report, options)
    if options.cache_max_bytes is not None:
        pruned = cache.prune(max_bytes=options.cache_max_bytes)
        if pruned:
            progress(f"cache: removed {len(pruned)} least recently used entr{'y' if len(pruned) == 1 else 'ies'} "
                     f"to stay under {options.cache_max_bytes / 2**30:.1f} GB")
    return report


def _profile(report: ReleaseReport, options: ReleaseOptions, progress: Progress, registry) -> None:

    from profiles.profile import ProfileError, profile_artifacts
    from targets.profile import PROFILE_NAME

    profile_options = replace(report.config.profile, reuse=True)
    try:
        run = profile_artifacts(options.out_dir, profile_options, progress, registry)
    except ProfileError as exc:
        report.profile_errors = {str(options.out_dir): str(exc)}
        return
    report.profile_errors = {str(Path(p).relative_to(options.out_dir.resolve()) if Path(p).is_absolute() else p): e
                             for p, e in run.errors.items()}
    report.profile_fit = run.fit
    from profiles.report import html_report

    write_text_atomic(options.out_dir / REPORT_NAME, html_report(run.profiles, run.fit, run.errors))
    by_path = {Path(p.artifact).resolve(): p for p in run.profiles}
    for outcome in report.outcomes:
        for n, record in enumerate(outcome.artifacts):
            p = by_path.get((options.out_dir / record.path).resolve())
            if p is not None:
                outcome.artifacts[n] = replace(record, profile=ProfileSummary(
                    p.runner, p.latency_ms_p50, p.latency_method, p.energy_mj, p.energy_method, p.peak_memory_mb,
                    p.artifact_mb, p.reused_measurement, p.llm))


def _keep_profiles(report: ReleaseReport, cache, dist: Path) -> None:
    """Each cached cell's profiles go into its cache entry, beside its artifacts: a later release of the same
    artifacts on the same host and runtimes, into any dist/ (a CI job's is empty), reuses the measurements."""
    from targets.profile import PROFILE_NAME

    for outcome in report.outcomes:
        if outcome.status not in ("built", "cached"):
            continue
        with cache.lock(outcome.cell.key):
            for record in outcome.artifacts:
                profile = dist / record.path / PROFILE_NAME
                if profile.is_file():
                    cache.keep_profile(outcome.cell.key, Path(record.path).name, profile.read_text())


def _write_index(report: ReleaseReport, options: ReleaseOptions) -> ReleaseIndex:
    from profiles.profile import host_facts

    counts = {s: sum(o.status == s for o in report.outcomes) for s in ("built", "cached", "partial", "failed", "error")}
    index = ReleaseIndex(
        schema_version=INDEX_SCHEMA_VERSION,
        release=report.config.name,
        release_file=str(report.config.file),
        release_file_sha256=sha256_file(report.config.file),
        created=utc_now(),
        chipfit_version=__version__,
        host=host_facts(),
        cache=str(options.cache_dir),
        seconds=round(report.seconds, 2),
        thresholds=report.config.thresholds_dict(),
        summary={**counts, "cells": len(report.outcomes), "artifacts": sum(len(o.artifacts) for o in report.outcomes),
                 "reproducibility_checked": options.check_reproducible, "ok": report.ok},
        cells=tuple(CellEntry(
            model=o.cell.model.name, precision=o.cell.precision, target=o.cell.target.id, status=o.status,
            seconds=round(o.seconds, 2), key=o.cell.key, components=dict(o.cell.components), cache_note=o.cache_note,
            message=o.message, stage=o.stage,
            log=Path(o.log).relative_to(options.out_dir).as_posix() if o.log else None,
            artifacts=tuple(o.artifacts), failed_backends=o.failed_backends,
            reproducible=tuple(o.reproducible) if o.reproducible is not None else None)
            for o in report.outcomes),
        profile={"fit": report.profile_fit, "errors": report.profile_errors},
    )
    write_text_atomic(options.out_dir / INDEX_NAME, json.dumps(index.to_dict(), indent=2, sort_keys=True) + "\n")
    write_text_atomic(options.out_dir / SUMMARY_NAME, summary_markdown(index))
    return index


def temporary_cache() -> Path:
    return Path(tempfile.mkdtemp(prefix="chipfit-cache-"))
