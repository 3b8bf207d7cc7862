"""Kept MetaSchedule tuning: `chipfit tune` fills a database per TVM target, every later build reads it.

The database lives in chipfit's cache (``$CHIPFIT_CACHE_DIR``, else ``~/.cache/chipfit``) under
``tvm-tuning/<target>-<digest>/``, keyed by the resolved TVM target (kind, triple, mcpu, attributes,
cores): records are only valid for the code generator and CPU they were measured with. Inside, TVM's
JSON database keys each record by its workload's structure, so a record tuned on one model applies to
every model with the same fused function (a ResNet's 3x3 convolutions, a transformer's projections).

Tuning runs on this CPU for a local target, or on the device through a TVM RPC tracker for a remote
one (the kernels are cross-compiled here and timed there). The database's digest enters the TVM
backend's resolved options, so a build cached before a tuning run is rebuilt after it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from compiler.cache_dir import default_cache_dir
from targets.files import file_lock, sha256_file
from targets.request import digest_json

DATABASE_FILES = ("database_workload.json", "database_tuning_record.json")


def database_dir(target: dict[str, Any]) -> Path:
    """Where the records for this resolved TVM target are kept."""
    name = "-".join(str(target.get(k)) for k in ("kind", "mtriple", "mcpu") if target.get(k))
    return default_cache_dir() / "tvm-tuning" / f"{name}-{digest_json(target)[:12]}"


def database_digest(target: dict[str, Any]) -> str | None:
    """sha256 over the kept database's files, or None when nothing was tuned for this target."""
    folder = database_dir(target)
    if not all((folder / f).is_file() for f in DATABASE_FILES):
        return None
    return digest_json({f: sha256_file(folder / f) for f in DATABASE_FILES})


@dataclass(frozen=True)
class TuningResult:
    database: Path
    tasks: int
    trials: int
    records: int
    seconds: float
    runner: str


def tune(mod, target: dict[str, Any], trials: int, *, rpc: tuple[str, int, str] | None = None,
         cross_compiler: str = "", max_trials_per_task: int | None = None,
         progress: Callable[[str], None] = lambda m: None) -> TuningResult:
    """Tune the fused functions of ``mod`` (a Relax module at static shapes) for ``target``; keep the records.

    Records go into a scratch database first and are merged into the kept one under a lock, so a killed
    run leaves the kept database as it was, and two runs for one target do not interleave their writes.
    """
    import tvm
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    _import_tensor_intrinsics()
    tvm_target = tvm.target.Target(target)
    with tvm_target:
        fused = relax.get_pipeline("zero")(mod)
    tasks = ms.relax_integration.extract_tasks(fused, tvm_target)
    if not tasks:
        raise ValueError("the model has no kernels to tune")
    per_task = max_trials_per_task or max(1, trials // len(tasks))
    progress(f"tune: {len(tasks)} kernels, {trials} trials ({per_task} per kernel at most)")
    builder = ms.builder.LocalBuilder(f_build=_builder())
    runner, where = ms.runner.LocalRunner(), "this CPU"
    if rpc is not None:
        host, port, key = rpc
        config = ms.runner.RPCConfig(tracker_host=host, tracker_port=port, tracker_key=key, session_timeout_sec=120)
        runner, where = ms.runner.RPCRunner(rpc_config=config), f"device {key} via {host}:{port}"
        if cross_compiler:
            def export(mod, _cc=cross_compiler) -> str:  # the kernel is linked here for the device's CPU
                from tvm.contrib import cc

                path = os.path.join(tempfile.mkdtemp(prefix="chipfit-tune-"), "kernel.so")
                mod.export_library(path, fcompile=cc.cross_compiler(_cc))
                return path

            builder = ms.builder.LocalBuilder(f_build=_builder(), f_export=export)
    try:
        import xgboost  # noqa: F401

        cost_model = "xgb"
    except ImportError:  # MetaSchedule's learned cost model needs xgboost; without it, trials are random
        cost_model = "random"
    # the evolutionary search evolves a population of 512 candidates per task before its first trial: worth it for
    # real budgets, minutes of overhead for a handful of trials, where replaying sampled traces does as well
    strategy = "evolutionary" if per_task >= 16 else "replay-trace"
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="chipfit-tune-") as scratch, _shut_down(runner):
        ms.tune.tune_tasks(
            tasks=[ms.TuneContext(mod=t.dispatched[0], target=tvm_target, space_generator="post-order-apply",
                                  search_strategy=strategy, task_name=t.task_name) for t in tasks],
            task_weights=[float(t.weight) for t in tasks], work_dir=scratch, max_trials_global=trials,
            max_trials_per_task=per_task, num_trials_per_iter=min(64, max(2, per_task)), builder=builder,
            runner=runner, cost_model=cost_model,
        )
        records = merge(Path(scratch), database_dir(target))
    return TuningResult(database_dir(target), len(tasks), trials, records, time.perf_counter() - start,
                        f"{where}; {strategy} search, cost model {cost_model}")


def _import_tensor_intrinsics() -> None:
    """``import tvm.s_tir.tensor_intrin`` (every TuneContext does it), in seconds instead of minutes.

    The module parses some 500 TVMScript functions, and each parse calls ``inspect.stack()``, which resolves the
    module of every frame on the stack by scanning ``sys.modules``: with torch and transformers loaded that took
    50 s on a 2-core AVX2 host (367 s under a profiler). The parser reads only the frames and the calling line,
    so for this import the stack is built from the frames and linecache directly."""
    import inspect
    import linecache
    import sys

    if "tvm.s_tir.tensor_intrin" in sys.modules:
        return

    def stack(context: int = 1) -> list[inspect.FrameInfo]:
        frames, frame = [], sys._getframe(1)
        while frame is not None:
            code = frame.f_code
            line = linecache.getline(code.co_filename, frame.f_lineno) if context else ""
            frames.append(inspect.FrameInfo(frame, code.co_filename, frame.f_lineno, code.co_name,
                                            [line] if line else None, 0 if line else None))
            frame = frame.f_back
        return frames

    original = inspect.stack
    inspect.stack = stack
    try:
        import tvm.s_tir.tensor_intrin  # noqa: F401
    finally:
        inspect.stack = original


def _builder():
    """MetaSchedule's build function without its unconditional ``import tvm.s_tir.tensor_intrin``: that import takes
    50 s in each fresh builder worker on a 2-core AVX2 host, past the builder's 30 s timeout, so every trial there
    "timed out" and no record was kept. The module a worker builds is already scheduled (a tensorized block holds
    the intrinsic's body), so the registry is only imported if a build needs it. Made here so cloudpickle sends it
    by value: a worker needs no chipfit to run it."""

    def build(mod, target, _params):
        from tvm.driver import build as tvm_build
        from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

        mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
        try:
            return tvm_build(mod, target=target)
        except Exception:  # a tensor intrinsic the module names: register them, build again
            import tvm.s_tir.tensor_intrin  # noqa: F401

            return tvm_build(mod, target=target)

    return build


@contextlib.contextmanager
def _shut_down(runner):
    """The local runner keeps a pool of worker processes for its life; without a shutdown they outlive chipfit
    (400 MB each)."""
    try:
        yield
    finally:
        pool = getattr(runner, "pool", None)
        if pool is not None:
            pool.shutdown()


def merge(scratch: Path, kept: Path) -> int:
    """Add the scratch database's workloads and records to the kept one; returns the kept record count."""
    kept.mkdir(parents=True, exist_ok=True)
    with file_lock(kept / ".lock"):
        staging = Path(tempfile.mkdtemp(prefix=".merge-", dir=kept))
        try:
            for name in DATABASE_FILES:
                lines = (kept / name).read_text().splitlines() if (kept / name).is_file() else []
                new = (scratch / name).read_text().splitlines() if (scratch / name).is_file() else []
                if name == "database_workload.json":
                    merged = lines + [line for line in new if line not in set(lines)]
                    index = {line: n for n, line in enumerate(merged)}
                    remap = {n: index[line] for n, line in enumerate(new)}
                    (staging / name).write_text("".join(f"{line}\n" for line in merged))
                else:
                    shifted = []
                    for line in new:  # each record names its workload by its line number in the workload file
                        record = json.loads(line)
                        record[0] = remap[record[0]]
                        shifted.append(json.dumps(record))
                    (staging / name).write_text("".join(f"{line}\n" for line in lines + shifted))
            for name in DATABASE_FILES:
                (staging / name).replace(kept / name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return len((kept / DATABASE_FILES[1]).read_text().splitlines())
