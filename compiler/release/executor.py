"""Where a release builds its cache misses: an executor, as `concurrent.futures` has them.

The driver plans, looks the cache up and writes ``dist/``; for a miss it hands the executor a `CellTask` and
gets a future of a `CellBuild`. Every executor runs the same `build_cell` somewhere: it takes the key's
lock, looks again (another run may have built it meanwhile), runs the existing worker
(`compiler.release.worker`) as a subprocess with the cell's timeout, commits a verified build to the
shared cache and returns the results with the log text. Two implementations:

* `LocalExecutor` (the default): this machine's serving worker processes (`WorkerPool`);
* `DaskExecutor` (``--executor dask``, `compiler.release.dask_executor`): the workers of a Dask cluster;
  the inputs travel through the cache (`compiler.release.inputs`).

Nothing else in chipfit knows which one ran a cell.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol

from compiler.release.pool import Spawn, WorkerPool, spawn_worker
from compiler.release.worker import RESULT_NAME
from targets.files import utc_now

EXECUTORS = ("local", "dask")


@dataclass(frozen=True)
class CellTask:
    """One cache miss, as a worker anywhere needs it (nothing in it refers to the driver's machine but
    ``request``'s paths, which ``inputs`` maps to archives in the cache when the worker is elsewhere)."""

    label: str  # model/precision/target
    slug: str
    model: str  # the model's name: its artifacts are built into <out>/<model>/
    key: str
    components: Mapping[str, str]
    request: Mapping[str, Any]  # BuildRequest.to_dict()
    #: the fingerprint the key was computed with: {"digest", "fingerprint", "source"}; a worker checks its own
    toolchain: Mapping[str, Any]
    timeout_s: float
    #: False for the second build of --check-reproducible: built outside the cache, in a fresh process
    commit: bool = True
    #: what a worker must offer to build it (Dask resources, from the target's backends)
    resources: Mapping[str, float] = field(default_factory=dict)
    #: user path -> sha256 of its archive in the cache (`inputs`), for workers on other machines
    inputs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CellBuild:
    """What became of a `CellTask`."""

    #: "built" (committed to the cache), "cached" (another run committed it first), "results" (not committed:
    #: some backend failed, or commit was off), "error" (the worker reported an error), "crashed" (it died)
    status: str
    results: tuple[Mapping[str, Any], ...] = ()
    error: str = ""
    stage: str = ""
    exit_code: int = 0
    log: str = ""
    libraries_log: str = ""
    #: status "results": the worker's output folder (artifacts, ``*.failed``) as a tar
    outputs: bytes = b""
    #: each built artifact's manifest.json text, by artifact folder name
    manifests: Mapping[str, str] = field(default_factory=dict)
    worker: str = ""  # where it ran (a host, a Dask worker address)


def build_cell(task: CellTask, cache, spawn: Spawn, scratch: Path, where: str = "") -> CellBuild:
    """Build one cell with ``spawn`` (a worker process), commit it to ``cache`` if every artifact verified.

    ``scratch`` is a local folder for the inputs' copies (used when ``task.inputs`` is not empty).
    """
    if task.commit:
        with cache.lock(task.key):
            entry, _ = cache.lookup(task.key)
            if entry is not None:
                return CellBuild("cached", worker=where)
            return _build(task, cache, spawn, scratch, where)
    return _build(task, cache, spawn, scratch, where)


def _build(task: CellTask, cache, spawn: Spawn, scratch: Path, where: str) -> CellBuild:
    staging = cache.staging(task.slug)
    try:
        out = staging / "out"
        out.mkdir()
        log = staging / "cell.log"
        log.write_text("")
        here = {user: str(cache.get_input(sha, Path(user).name, scratch)) for user, sha in task.inputs.items()}
        request = staging / "request.json"
        request.write_text(json.dumps({"request": dict(task.request), "out_dir": str(out), "log": str(log),
                                       "calibration_cache": str(cache.calibration_dir), "inputs": here,
                                       "toolchain": dict(task.toolchain)}, indent=2))
        code = spawn(request, log, task.timeout_s)
        logs = {"log": _text(log), "libraries_log": _text(log.with_suffix(".libraries.log")), "worker": where}
        result = out / RESULT_NAME
        if code != 0 or not result.is_file():
            return CellBuild("crashed", exit_code=code or -1, **logs)
        payload = json.loads(result.read_text())
        if "error" in payload:
            return CellBuild("error", error=payload["error"], stage=payload.get("stage", "LOAD"), **logs)
        results = tuple(payload["results"])
        built = {Path(r["artifact"]).name: Path(r["artifact"]) for r in results if r["artifact"]}
        manifests = {name: (path / "manifest.json").read_text() for name, path in built.items()
                     if (path / "manifest.json").is_file()}
        if task.commit and all(r["status"] in ("verified", "not-run") for r in results):
            cache.commit(task.key, built, {"cell": task.label, "components": dict(task.components),
                                           "built": utc_now(), "results": list(results)})
            return CellBuild("built", results, manifests=manifests, **logs)
        return CellBuild("results", results, outputs=_tar(out / task.model) if task.commit else b"",
                         manifests=manifests, **logs)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""


def _tar(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        if folder.is_dir():
            tar.add(folder, arcname=".")
    return buffer.getvalue()


def untar(data: bytes, into: Path) -> None:
    """A `CellBuild`'s outputs into ``into`` (a local staging folder of the driver)."""
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(into, filter="data")


class Executor(Protocol):
    """Builds cells somewhere; `submit` returns a future of a `CellBuild`."""

    #: for the progress line ("2 local worker process(es)", "Dask scheduler tcp://...: 4 workers")
    description: str
    #: cells the driver should keep in flight at once
    slots: int
    #: whether a worker needs the inputs through the cache (it cannot read the driver's paths)
    remote: bool

    def submit(self, task: CellTask) -> "Future[CellBuild]": ...

    def idle(self) -> None:
        """Every cell is built: let go of the build processes (profiling must not share the CPUs with them)."""

    def close(self) -> None: ...

    def kill(self) -> None:
        """Interrupted: stop what is running (a cell left half-built leaves only a staging folder)."""


class LocalExecutor:
    """Cells in this machine's worker processes: ``jobs`` serving workers, or ``spawn`` where given (tests);
    a second build for --check-reproducible always runs in a fresh process."""

    remote = False

    def __init__(self, cache, jobs: int, spawn: Spawn | None = None) -> None:
        self.cache = cache
        self.slots = max(1, jobs)
        self._pool = WorkerPool(self.slots) if spawn is None else None
        self._spawn = spawn or self._pool
        self._fresh = spawn or spawn_worker
        self.description = f"{self.slots} local worker process(es)"

    def submit(self, task: CellTask) -> "Future[CellBuild]":
        # the driver calls this from one of its ``slots`` threads: the build runs in that thread
        future: Future[CellBuild] = Future()
        try:
            spawn = self._spawn if task.commit else self._fresh
            future.set_result(build_cell(task, self.cache, spawn, self.cache.root / "inputs-unpacked", "local"))
        except BaseException as exc:  # noqa: BLE001 (handed to the caller through the future)
            future.set_exception(exc)
        return future

    def idle(self) -> None:
        if self._pool is not None:
            self._pool.close()

    def close(self) -> None:
        self.idle()

    def kill(self) -> None:
        if self._pool is not None:
            self._pool.kill()
