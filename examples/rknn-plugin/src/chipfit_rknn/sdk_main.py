"""Runs inside the ``rknn`` isolated environment (rknn-toolkit2 2.5.0), launched by chipfit; chipfit never imports it.

``main(request, folder)`` gets chipfit's request (``request.json`` of the hand-off folder, see
compiler/isolated/handoff.py) and returns the status: the artifact files written into ``artifact/``, the
simulator's outputs on the verification inputs in ``outputs/``, the settings used. rknn-toolkit2 prints
"E RKNN: ..." lines even when a step succeeds, so every step is judged by its return value, never its log.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import numpy as np


def _check(step: str, code) -> None:
    if code != 0:
        raise RuntimeError(f"rknn-toolkit2 {step} returned {code} (the SDK's reason is in the log above)")


def _as_declared(array, shape: list) -> np.ndarray:
    """RKNN may return an output with another rank (e.g. 4-D for a 2-D one): back to the graph's shape."""
    array = np.asarray(array, dtype=np.float32)
    if shape and all(isinstance(d, int) for d in shape) and array.size == int(np.prod(shape)):
        return array.reshape(shape)
    return array


def main(request: dict, folder: Path) -> dict:
    from rknn.api import RKNN

    options = request["target"]["options"]
    precision = request["precision"]
    inputs = request["inputs"]
    images = all(t["layout"] == "NCHW" for t in inputs)
    config = {"target_platform": options["target_platform"], "optimization_level": options["optimization_level"],
              "quantized_algorithm": options["quantized_algorithm"]}
    if images:  # chipfit's inputs are already normalised floats: RKNN's own preprocessing is the identity
        config["mean_values"] = [[0.0] * t["shape"][1] for t in inputs]
        config["std_values"] = [[1.0] * t["shape"][1] for t in inputs]
    rknn = RKNN(verbose=False)
    try:
        _check("config", rknn.config(**config))
        _check("load_onnx", rknn.load_onnx(model=str(folder / request["model"])))
        dataset = None
        if precision == "int8":
            dataset = folder / "dataset.txt"  # one line per sample: its inputs' .npy files (NCHW), in input order
            lines = [" ".join(sample[t["name"]] for t in inputs)  # relative: the process runs in the folder
                     for sample in request["calibration"]["samples"]]
            dataset.write_text("\n".join(lines) + "\n")
        _check("build", rknn.build(do_quantization=precision == "int8", dataset=str(dataset) if dataset else None))
        out = folder / request["artifact_dir"]
        out.mkdir(parents=True, exist_ok=True)
        _check("export_rknn", rknn.export_rknn(str(out / "model.rknn")))
        outputs = {}
        if request.get("verify"):
            # Rockchip's simulator runs only a model built in this session (it refuses one from load_rknn), so the
            # verification inputs run here, right after the build, on the same RKNN object.
            _check("init_runtime (simulator)", rknn.init_runtime())
            arrays = [np.load(folder / request["verify"]["inputs"][t["name"]]) for t in inputs]
            # the model takes its inputs' declared shapes: k samples run as k calls, each input sliced by its own
            # leading dim (inputs without a batch, e.g. the two matrices of a MatMul, run as given)
            firsts = [t["shape"][0] if t["shape"] and isinstance(t["shape"][0], int) else 1 for t in inputs]
            k = len(arrays[0]) // firsts[0] if arrays[0].ndim and firsts[0] else 1
            if any(a.ndim == 0 or len(a) != k * f for a, f in zip(arrays, firsts)):
                k = 1
            chunks = []
            for n in range(k):
                feed = [a[n * f:(n + 1) * f] if k > 1 else a for a, f in zip(arrays, firsts)]
                got = rknn.inference(inputs=feed, data_format=["nchw"] * len(feed) if images else None)
                if got is None:
                    raise RuntimeError("rknn-toolkit2 inference returned None (the SDK's reason is in the log)")
                chunks.append(got)
            (folder / request["outputs_dir"]).mkdir(parents=True, exist_ok=True)
            for i, spec in enumerate(request["outputs"]):
                rel = f"{request['outputs_dir']}/{i:02d}.npy"
                np.save(folder / rel, np.concatenate([_as_declared(c[i], spec["shape"]) for c in chunks]))
                outputs[spec["name"]] = rel
    finally:
        rknn.release()
    version = metadata.version("rknn-toolkit2")
    samples = len(request["calibration"]["samples"]) if precision == "int8" else 0
    return {"files": ["model.rknn"], "outputs": outputs,
            "settings": {**config, "do_quantization": precision == "int8", "rknn_toolkit2": version,
                         "calibration_samples": samples},
            "notes": [f"rknn-toolkit2 {version} for {options['target_platform']}"
                      + (f": int8 by RKNN's quantizer ({options['quantized_algorithm']}) on {samples} of chipfit's "
                         "calibration samples" if samples else ": fp16 (no quantization)")]}
