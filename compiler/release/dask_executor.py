"""``--executor dask``: cells built on the workers of a Dask cluster (``pip install 'chipfit[dask]'``).

Each cache miss is one Dask task, `build_on_worker`: it runs `build_cell` there, i.e. the release worker as a
subprocess of the Dask worker (a segfault ends that subprocess and fails its cell; the Dask worker and the
other cells go on), commits to the shared cache and returns the results and the log text. The cells' input
files go into the cache first (``inputs/<sha256>.tar``); a worker fetches them into its own scratch
folder, so it needs neither the user's paths nor a shared home directory. The cache must be reachable
by every worker under the same location: a shared POSIX path mounted at the same place, or a URL.

A worker's host id (for its staging folders in the cache) is ``$CHIPFIT_HOST_ID`` or its host name, read
when a cell starts. A cell whose backends need something only some workers have asks for it as Dask
resources (``Backend.build_resources``: start those workers with ``--resources coreml=1``); a cell no
worker of the cluster can take fails at once, saying which resources are missing.

Without ``--scheduler``, a `LocalCluster` of ``--jobs`` worker processes on 127.0.0.1 is started for the run.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Mapping

from distributed import Client, LocalCluster, WorkerPlugin, get_worker

from compiler.errors import ChipfitError, UsageError
from compiler.release.cache import host_id
from compiler.release.cache_at import open_cache
from compiler.release.executor import CellBuild, CellTask, build_cell
from compiler.release.pool import WorkerPool, spawn_worker

PLUGIN = "chipfit-release"
#: cells the driver keeps submitted at once (the scheduler queues them; its workers decide the pace)
MAX_IN_FLIGHT = 256


class NoWorkerFor(ChipfitError):
    """No worker of the cluster offers the resources a cell needs."""


class _BuildProcesses(WorkerPlugin):
    """On each Dask worker: serving release workers, one per Dask thread, for the length of a release."""

    name = PLUGIN

    def setup(self, worker) -> None:
        self.pool = WorkerPool(max(1, worker.state.nthreads))

    def teardown(self, worker) -> None:
        self.pool.close()


def build_on_worker(task: CellTask, cache_location: str) -> CellBuild:
    """The Dask task for one cell (runs on a worker; imported there by name)."""
    worker = get_worker()
    scratch = Path(worker.local_directory) / "chipfit"
    cache = open_cache(cache_location, host_id(), mirror=scratch / "cache-mirror")
    processes = worker.plugins.get(PLUGIN)
    spawn = processes.pool if task.commit and processes is not None else spawn_worker
    return build_cell(task, cache, spawn, scratch / "inputs", f"{host_id()} ({worker.address})")


class DaskExecutor:
    remote = True
    slots = MAX_IN_FLIGHT

    def __init__(self, cache, jobs: int, scheduler: str | None = None) -> None:
        self.cache = cache
        self._jobs = max(1, jobs)
        self._scheduler = scheduler
        self._cluster = None
        self.client: Client | None = None
        self._registered = False
        self._start = threading.Lock()
        self._inputs: dict[str, str] = {}  # user path -> archive sha256, uploaded once per release
        self._futures: list = []
        if scheduler is None:
            # started at the first cache miss: a warm release needs no cluster
            self.description = f"a local Dask cluster of {self._jobs} worker(s) on 127.0.0.1, if a cell needs building"
        else:
            self._connect()  # a wrong address is an error before any work
            self.description = f"Dask scheduler {scheduler}: {len(self._workers())} worker(s)"

    def _connect(self) -> Client:
        with self._start:
            if self.client is not None:
                return self.client
            where = f"Dask scheduler {self._scheduler}"
            if self._scheduler is None:
                self._cluster = LocalCluster(n_workers=self._jobs, threads_per_worker=1, processes=True,
                                             host="127.0.0.1", dashboard_address=None)
                where = "the local Dask cluster"
            try:
                client = Client(self._cluster or self._scheduler, timeout="10s")
            except (OSError, TimeoutError) as exc:
                self._close_cluster()
                raise UsageError(f"--scheduler {self._scheduler}: cannot reach it ({exc})") from None
            client.register_plugin(_BuildProcesses(), name=PLUGIN)
            self.client, self._registered = client, True
            if not self._workers():
                self.close()
                raise UsageError(f"{where} has no workers; start some with `dask worker {self._scheduler}`")
            return client

    def _workers(self) -> Mapping[str, dict]:
        return self.client.scheduler_info(n_workers=-1).get("workers", {}) if self.client is not None else {}

    def submit(self, task: CellTask) -> "Future[CellBuild]":
        from dataclasses import replace

        from targets.request import BuildRequest, paths_of

        client = self._connect()
        missing = self._unmet(task.resources)
        if missing:
            failed: Future[CellBuild] = Future()
            failed.set_exception(NoWorkerFor(missing))
            return failed
        for path in paths_of(BuildRequest.from_dict(task.request)):
            if path not in self._inputs:
                self._inputs[path] = self.cache.put_input(path)
        task = replace(task, inputs={p: self._inputs[p] for p in paths_of(BuildRequest.from_dict(task.request))})
        future = client.submit(build_on_worker, task, self.cache.location, pure=False,
                                    key=f"chipfit-{task.slug}-{os.urandom(4).hex()}",
                                    resources=dict(task.resources) or None)
        self._futures.append(future)
        return future

    def _unmet(self, needed: Mapping[str, float]) -> str:
        """Why no worker can take a cell needing ``needed`` (empty if one can)."""
        if not needed:
            return ""
        offers = [w.get("resources", {}) for w in self._workers().values()]
        if any(all(o.get(k, 0) >= v for k, v in needed.items()) for o in offers):
            return ""
        wanted = ", ".join(f"{k}={v:g}" for k, v in sorted(needed.items()))
        offered = sorted({f"{k}={v:g}" for o in offers for k, v in o.items()})
        return (f"no worker of the Dask cluster offers the resources this cell's backends need ({wanted}); the "
                f"{len(offers)} worker(s) offer {', '.join(offered) or 'none'}: start one on a machine with "
                f"that toolchain, `dask worker SCHEDULER --resources \"{wanted.replace(', ', ' ')}\"`")

    def idle(self) -> None:
        if self._registered:
            self._registered = False
            self.client.unregister_worker_plugin(PLUGIN)  # its teardown ends the build processes

    def close(self) -> None:
        if self.client is not None:
            self.idle()
            self.client.close()
            self.client = None
        self._close_cluster()

    def kill(self) -> None:
        if self.client is not None:
            self.client.cancel(self._futures, force=True)
        self.close()

    def _close_cluster(self) -> None:
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None
