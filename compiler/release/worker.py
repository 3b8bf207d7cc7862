"""Release cells, built in worker processes so that a crash (a backend segfault, an out-of-memory kill)
ends one process and is reported in its cell.

    python -m compiler.release.worker REQUEST.json     build one cell, then exit
    python -m compiler.release.worker --serve          build the cells whose request files arrive on stdin,
                                                       one path per line, answering "done" per cell

A request names the model entry, the target (an id, or a spec file), the precision and the output
folder; the results go to ``result.json`` there. A serving worker keeps each traced model for the
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

RESULT_NAME = "result.json"
READY = "ready"
DONE = "done"


class _Models:
    """Traced models by (path, inputs): a serving worker traces each model once."""

    def __init__(self) -> None:
        self._traced: dict[tuple[str, tuple[str, ...]], Any] = {}

    def get(self, path: str, inputs: list[str]):
        from compiler.frontend import load_model
        from compiler.signature import parse_input_override

        key = (path, tuple(inputs))
        if key not in self._traced:
            self._traced[key] = load_model(path, [parse_input_override(text) for text in inputs])
        return self._traced[key]


def run(request: dict, models: _Models) -> list[dict]:
    from compiler.build import BuildContext, BuildOptions, build
    from compiler.fusion_stage import FusionOptions
    from targets.registry import target_registry
    from targets.spec import load_spec

    model_entry = request["model"]
    registry = target_registry()
    if request.get("spec_file"):
        spec = load_spec(request["spec_file"])
        registry = registry.including({spec.id: spec}, request["spec_file"])
    model = replace(models.get(model_entry["path"], model_entry["inputs"]), name=model_entry["name"])
    options = BuildOptions(
        targets=[request["target"]],
        out_dir=Path(request["out_dir"]),
        precision=request["precision"],
        calibration=model_entry["calibration"],
        samples=model_entry["samples"],
        eval=model_entry["eval"],
        tokenizer=model_entry["tokenizer"],
        method=model_entry["method"],
        activation_dtype=model_entry["activation_dtype"],
        block_size=model_entry["block_size"],
        accuracy_budget=model_entry["accuracy_budget"],
        cache_dir=Path(request["calibration_cache"]),
        fusion=FusionOptions(enabled=model_entry["fusion"]),
        measure_latency=False,  # the release profiles every artifact afterwards, properly
    )
    progress = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    results = build(model, options, BuildContext(targets=registry, progress=progress))
    return [r.to_dict() for r in results]


def handle(request: dict, models: _Models) -> None:
    from compiler.artifact import write_text_atomic
    from compiler.errors import ChipfitError
    from targets.spec import TargetError

    try:
        payload = {"results": run(request, models)}
    except (ChipfitError, TargetError) as exc:
        payload = {"error": str(exc)}
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
    from compiler.cli import _quiet_libraries

    _quiet_libraries()
    models = _Models()
    answers = os.fdopen(os.dup(1), "w", buffering=1)  # the driver reads answers here, never build output
    answers.write(READY + "\n")
    for line in sys.stdin:
        request = json.loads(Path(line.strip()).read_text())
        with _output_to(Path(request["log"])):
            handle(request, models)
        answers.write(DONE + "\n")
    return 0


def main(argv: list[str]) -> int:
    if argv == ["--serve"]:
        return serve()
    from compiler.cli import _quiet_libraries

    _quiet_libraries()
    with contextlib.redirect_stdout(sys.stderr):
        handle(json.loads(Path(argv[0]).read_text()), _Models())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
