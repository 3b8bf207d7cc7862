"""Release cells, built in worker processes so that a crash (a backend segfault, an out-of-memory kill)
ends one process and is reported in its cell.

    python -m compiler.release.worker REQUEST.json     build one cell, then exit
    python -m compiler.release.worker --serve          build the cells whose request files arrive on stdin,
                                                       one path per line, answering "done" per cell

A request file holds the cell's `BuildRequest` (serialised) and where to work: the output folder,
the calibration statistics cache and the log; the results go to ``result.json`` in the output folder.
It may also hold ``inputs``, the local copies of the request's files (user path -> path here, for a worker
on another machine: see `compiler.release.inputs`; the manifests still record the user's paths), and
``toolchain``, the fingerprint the cell's cache key was computed with: a worker whose own toolchain
differs (package versions, backends' or chipfit's code) refuses the cell, so that it never writes an
artifact under a key computed for other tools. A serving worker keeps each traced model for the
cells that follow (tracing is most of a small cell's time) and sends each cell's output to the log
file the request names. Exit or answer means the results were written (they may say the build failed).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from compiler.errors import ChipfitError

RESULT_NAME = "result.json"
READY = "ready"
DONE = "done"


class ToolchainMismatch(ChipfitError):
    """This worker's toolchain is not the one the cell's cache key was computed for."""


class _Toolchains:
    """This process's toolchain fingerprints, computed once: the code a serving worker runs is the code it loaded."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, ...], dict[str, str]] = {}
        self._source: str | None = None

    def check(self, expected: dict, spec) -> None:
        from compiler.release.cache import digest_source_code, toolchain_of
        from targets.registry import backend_registry
        from targets.request import digest_json

        if spec.backends not in self._known:
            self._known[spec.backends] = toolchain_of([backend_registry().get(b) for b in spec.backends])
        if self._source is None:
            self._source = digest_source_code()
        mine = self._known[spec.backends]
        problems = []
        if digest_json(mine) != expected["digest"]:
            theirs = expected.get("fingerprint", {})
            differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            problems += [f"{k}: {theirs.get(k, 'absent')!r} for the key, {mine.get(k, 'absent')!r} here" for k in differ]
            problems += [] if differ else ["the toolchain digest differs"]
        if self._source != expected["source"]:
            problems.append("chipfit's own code (compiler/, targets/, calibration/) differs")
        if problems:
            import socket

            raise ToolchainMismatch(f"refused on {socket.gethostname()}: the cell's cache key was computed for "
                                    f"another toolchain ({'; '.join(problems[:6])}); install the same versions "
                                    "on every worker")


class _Models:
    """Traced models by (path, inputs): a serving worker traces each model once."""

    def __init__(self) -> None:
        self._traced: dict[tuple[str, tuple[str, ...]], Any] = {}

    def get(self, path: str, inputs: list[str], trust_remote_code: bool = False, task: str | None = None):
        from compiler.frontend import load_model
        from targets.signature import parse_input_override

        key = (path, tuple(inputs), trust_remote_code, task)
        if key not in self._traced:
            self._traced[key] = load_model(path, [parse_input_override(text) for text in inputs], trust_remote_code,
                                           task)
        return self._traced[key]


def run(request: dict, models: _Models, toolchains: _Toolchains) -> list[dict]:
    from compiler.build import BuildContext, BuildOptions, build
    from targets.registry import target_registry
    from targets.request import BuildRequest, with_paths
    from targets.spec import load_spec

    asked = BuildRequest.from_dict(request["request"], str(request.get("path", "<request>")))
    here = dict(request.get("inputs") or {})  # user path -> this machine's copy
    cell = with_paths(asked, lambda path: here.get(path, path))
    registry = target_registry()
    if cell.spec_file:
        spec = replace(load_spec(cell.spec_file), source_file=asked.spec_file)
        registry = registry.including({spec.id: spec}, asked.spec_file)
    if request.get("toolchain"):
        toolchains.check(request["toolchain"], registry.get(cell.target))
    model = replace(models.get(cell.model.path, list(cell.model.inputs), cell.model.trust_remote_code,
                                cell.model.task), name=cell.model.name)
    options = BuildOptions(requests=[cell], out_dir=Path(request["out_dir"]),
                           cache_dir=Path(request["calibration_cache"]),
                           measure_latency=False)  # the release profiles every artifact afterwards, properly
    results = build(model, options, BuildContext(targets=registry, progress=_timestamped()))
    users = {local: user for user, local in here.items()}
    if users:
        _record_user_paths(results, users)
    for r in results:
        if r.status not in ("verified", "not-run"):
            print(f"{_now()} error: {r.target} ({r.backend}) {r.status}" + (f" at {r.stage}" if r.stage else "")
                  + f": {r.message}" + (f"\n{r.traceback}" if r.traceback else ""), file=sys.stderr, flush=True)
    return [_swap(r.to_dict(), users) for r in results]


def _swap(value: Any, replacements: dict[str, str]) -> Any:
    """``value`` (JSON) with every string's occurrences of each key replaced by its value."""
    if isinstance(value, str):
        for old, new in replacements.items():
            value = value.replace(old, new)
        return value
    if isinstance(value, list):
        return [_swap(v, replacements) for v in value]
    if isinstance(value, dict):
        return {k: _swap(v, replacements) for k, v in value.items()}
    return value


def _record_user_paths(results, local_to_user: dict[str, str]) -> None:
    """The manifests name the user's files, as a local build's do, not this worker's copies of them."""
    from compiler.artifact import MANIFEST_NAME

    for r in results:
        manifest = Path(r.artifact) / MANIFEST_NAME if r.artifact else None
        if manifest is not None and manifest.is_file():
            data = _swap(json.loads(manifest.read_text()), local_to_user)
            manifest.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _now() -> str:
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M:%S")


def _timestamped():
    """Progress lines with the time and the seconds since the previous one (what each stage took)."""
    import time

    last = [time.perf_counter()]

    def progress(message: str) -> None:
        now = time.perf_counter()
        print(f"{_now()} (+{now - last[0]:.1f} s) {message}", file=sys.stderr, flush=True)
        last[0] = now

    return progress


def handle(request: dict, models: _Models, toolchains: _Toolchains) -> None:
    import traceback

    from compiler.errors import ChipfitError, stage_of
    from targets.files import write_text_atomic

    from compiler.logs import quiet_libraries

    # the toolchains' own warnings go beside the cell's log, not into it
    quiet_libraries(log_path=Path(request["log"]).with_suffix(".libraries.log"))
    try:
        payload = {"results": run(request, models, toolchains)}
    except ChipfitError as exc:
        print(f"error: {exc}\n{traceback.format_exc()}", file=sys.stderr, flush=True)
        payload = {"error": str(exc), "stage": stage_of(exc, "LOAD")}
    write_text_atomic(Path(request["out_dir"]) / RESULT_NAME, json.dumps(payload, indent=2))


@contextlib.contextmanager
def _output_to(log: Path):
    """Send this process's stdout and stderr (Python's and native libraries') to ``log``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with log.open("a") as handle:
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def serve() -> int:
    from compiler.logs import quiet_libraries

    quiet_libraries()
    models, toolchains = _Models(), _Toolchains()
    answers = os.fdopen(os.dup(1), "w", buffering=1)  # the driver reads answers here, never build output
    answers.write(READY + "\n")
    for line in sys.stdin:
        request = json.loads(Path(line.strip()).read_text())
        with _output_to(Path(request["log"])):
            handle(request, models, toolchains)
        answers.write(DONE + "\n")
    return 0


def main(argv: list[str]) -> int:
    if argv == ["--serve"]:
        return serve()
    from compiler.logs import quiet_libraries

    quiet_libraries()
    with contextlib.redirect_stdout(sys.stderr):
        handle(json.loads(Path(argv[0]).read_text()), _Models(), _Toolchains())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
