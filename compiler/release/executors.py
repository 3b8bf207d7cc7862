"""The executor a release asked for: the only place that chooses one (local processes, or a Dask cluster).

Its own module because the Dask executor builds on `compiler.release.executor`; choosing must not make the
local executor import the Dask one.
"""

from __future__ import annotations

from compiler.errors import UsageError
from compiler.release.executor import EXECUTORS, Executor, LocalExecutor
from compiler.release.pool import Spawn


def make_executor(kind: str, cache, jobs: int, scheduler: str | None = None, spawn: Spawn | None = None) -> Executor:
    if kind == "local":
        if scheduler:
            raise UsageError("--scheduler is for --executor dask")
        return LocalExecutor(cache, jobs, spawn)
    if kind == "dask":
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise UsageError("--executor dask needs Dask distributed: pip install 'chipfit[dask]'") from None
        from compiler.release.dask_executor import DaskExecutor

        return DaskExecutor(cache, jobs, scheduler)
    raise UsageError(f"--executor {kind!r}: choose one of {', '.join(EXECUTORS)}")
