"""One release cell, built in its own process: ``python -m compiler.release.worker REQUEST.json``.

The driver runs each cell here so that a crash (a backend segfault, an out-of-memory kill) ends
this process only and is reported in that cell. The request names the model entry, the target (an
id, or a spec file), the precision and the output folder; the results go to ``result.json`` in the
output folder. Exit 0 means the results were written (they may say the build failed).
"""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import replace
from pathlib import Path

RESULT_NAME = "result.json"


def run(request: dict) -> list[dict]:
    from compiler.build import BuildContext, BuildOptions, build
    from compiler.cli import _quiet_libraries
    from compiler.fusion_stage import FusionOptions
    from compiler.frontend import load_model
    from compiler.signature import parse_input_override
    from targets.registry import target_registry
    from targets.spec import load_spec

    _quiet_libraries()
    model_entry = request["model"]
    registry = target_registry()
    if request.get("spec_file"):
        spec = load_spec(request["spec_file"])
        registry = registry.including({spec.id: spec}, request["spec_file"])
    overrides = [parse_input_override(text) for text in model_entry["inputs"]]
    model = load_model(model_entry["path"], overrides)
    model = replace(model, name=model_entry["name"])
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


def main(argv: list[str]) -> int:
    from compiler.errors import ChipfitError
    from targets.spec import TargetError

    request = json.loads(Path(argv[0]).read_text())
    out = Path(request["out_dir"])
    try:
        with contextlib.redirect_stdout(sys.stderr):
            payload = {"results": run(request)}
    except (ChipfitError, TargetError) as exc:
        payload = {"error": str(exc)}
    tmp = out / (RESULT_NAME + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(out / RESULT_NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
