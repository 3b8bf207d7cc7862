"""Activation ranges for int8 quantization: one method name, ONNX Runtime's collectors, a cache.

chipfit offers four methods and owns their mapping onto ONNX Runtime's calibration tooling:

* ``minmax``: `MinMaxCalibrater` (observed min and max);
* ``percentile``: `PercentileCalibrater` at the 99.99th percentile;
* ``entropy``: `EntropyCalibrater` (KL divergence between float and quantized histograms, 2048 bins
  searched for the best 128-level window);
* ``mse``: ONNX Runtime's histogram collector, then the clipping range that minimises the expected
  squared quantization error over that histogram (ONNX Runtime has no MSE calibrator; its
  ``Distribution`` calibrator gave broken outputs here and is not offered).

Ranges are collected once per (float graph, samples, method, symmetry, onnxruntime version) and
cached as ONNX Runtime's own `TensorsData` JSON, so a build for six targets calibrates once, and
a rebuild not at all. The cache file is written atomically by onnxruntime.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import onnx

from calibration.readers import CalibrationError, CalibrationSet
from targets.request import METHODS

#: The onnxruntime CalibrationMethod each method's ranges are stored under.
_ORT_METHOD = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy", "mse": "MinMax"}
PERCENTILE = 99.99
#: Quantization levels of the activation dtype, for the MSE search.
LEVELS = {"uint8": 256, "int8": 256, "uint16": 65536, "int16": 65536}


@dataclass(frozen=True)
class Ranges:
    """Where a method's ranges are cached, and how they were obtained."""

    path: Path
    method: str
    ort_method: str  # the onnxruntime CalibrationMethod name to hand back to quantize_static
    cached: bool  # True if this call read them from the cache instead of running the samples


#: an activation whose calibrated range reaches past this is an additive mask (a large negative constant added to
#: attention scores) or a sum of them: int8 steps of this size keep nothing of the small values it also carries
UNBOUNDED = 1e6


@functools.lru_cache(maxsize=16)
def unbounded_tensors(ranges: Ranges, limit: float = UNBOUNDED) -> frozenset[str]:
    """Tensors whose range in ``ranges`` is not finite or reaches past ``limit``: not to be quantized. Read once per
    ranges file (the sensitivity analysis quantizes once per layer; the file's name is its content's digest)."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    found = set()
    for name, data in load_tensors_data(ranges.path).data.items():
        try:
            lowest, highest = data.range_value
        except AttributeError:
            continue
        lo, hi = float(np.min(lowest)), float(np.max(highest))
        if not (np.isfinite(lo) and np.isfinite(hi)) or max(abs(lo), abs(hi)) > limit:
            found.add(name)
    return frozenset(found)


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over a `CalibrationSet`."""

    def __init__(self, samples: CalibrationSet, input_names: list[str]) -> None:
        self._iter: Iterator[Mapping[str, np.ndarray]] = iter(samples)
        self._names = input_names

    def get_next(self) -> dict[str, np.ndarray] | None:
        sample = next(self._iter, None)
        return None if sample is None else {n: sample[n] for n in self._names}


def graph_digest(model: onnx.ModelProto) -> str:
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()


def cache_key(model: onnx.ModelProto, samples: CalibrationSet, method: str, symmetric: bool, levels: int) -> str:
    import onnxruntime

    parts = [graph_digest(model), samples.digest, method, f"sym={symmetric}", f"levels={levels}", onnxruntime.__version__]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def mse_range(
    hist: np.ndarray, edges: np.ndarray, observed: tuple[float, float], symmetric: bool, levels: int = 256
) -> tuple[float, float]:
    """The clipping range [lo, hi] that minimises the expected squared quantization error.

    Candidates shrink the observed range (kept around zero, so zero stays exact) by a factor
    in (0.05, 1]; for each, every histogram bin's centre is clipped, rounded to the quantization
    grid and compared with itself, weighted by the bin's count.
    """
    centres = (edges[:-1] + edges[1:]) / 2.0
    counts = hist.astype(np.float64)
    low, high = min(float(observed[0]), 0.0), max(float(observed[1]), 0.0)
    if symmetric:
        bound = max(abs(low), abs(high))
        low, high = -bound, bound
    if high - low <= 0:
        return low, high
    best, best_err = (low, high), np.inf
    for factor in np.linspace(0.05, 1.0, 96):
        lo, hi = low * factor, high * factor
        step = (hi - lo) / (levels - 1)
        clipped = np.clip(centres, lo, hi)
        quantized = np.round((clipped - lo) / step) * step + lo
        err = float(np.sum(counts * (centres - quantized) ** 2))
        if err < best_err:
            best, best_err = (lo, hi), err
    return best


def _check_finite(samples: CalibrationSet) -> None:
    for i, sample in enumerate(samples):
        for name, array in sample.items():
            if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
                bad = int(np.size(array) - np.isfinite(array).sum())
                raise CalibrationError(
                    f"{samples.origin}: sample {i}, input {name!r} holds {bad} NaN/Inf values; "
                    "calibration ranges would be meaningless. Remove or fix those samples."
                )


def collect_ranges(
    model: onnx.ModelProto,
    samples: CalibrationSet,
    method: str,
    cache_dir: Path,
    *,
    symmetric: bool = False,
    activation_dtype: str = "uint8",
) -> Ranges:
    """Activation ranges of ``model`` over ``samples`` by ``method``, from the cache when present."""
    if method not in METHODS:
        raise CalibrationError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")
    if not len(samples):
        raise CalibrationError(f"{samples.origin}: no calibration samples")
    levels = LEVELS.get(activation_dtype, 256)
    path = Path(cache_dir) / f"{method}-{cache_key(model, samples, method, symmetric, levels)}.json"
    if path.is_file():
        return Ranges(path, method, _ORT_METHOD[method], cached=True)
    _check_finite(samples)

    from onnxruntime.quantization.calibrate import (
        CalibrationMethod,
        HistogramCalibrater,
        TensorData,
        TensorsData,
        create_calibrator,
        save_tensors_data,
    )

    initializers = {t.name for t in model.graph.initializer}
    input_names = [i.name for i in model.graph.input if i.name not in initializers]
    with tempfile.TemporaryDirectory(prefix="chipfit-calib-") as tmp, contextlib.redirect_stdout(io.StringIO()):
        source = Path(tmp) / "float.onnx"
        onnx.save(model, source)
        augmented = str(Path(tmp) / "augmented.onnx")
        if method == "mse":
            calibrator = HistogramCalibrater(
                source, augmented_model_path=augmented, method="entropy", symmetric=symmetric, num_bins=2048
            )
            calibrator.augment_graph()
            calibrator.create_inference_session()
        else:
            # 2048 histogram bins against 128 quantized bins (TensorRT's setting): with onnxruntime's
            # defaults (128 against 128) the entropy search has nothing to choose from and returns min/max.
            extra = {"symmetric": symmetric, "num_bins": 2048}
            if method == "percentile":
                extra["percentile"] = PERCENTILE
            if method == "entropy":
                extra["num_quantized_bins"] = 128
            calibrator = create_calibrator(
                source, None, augmented, CalibrationMethod[_ORT_METHOD[method]], extra_options=extra
            )
        try:
            calibrator.collect_data(_Reader(samples, input_names))
            if method == "mse":
                data = {}
                # onnxruntime's value histogram: (counts, edges over [-t, t], observed min, observed max, t)
                for tensor, histogram in calibrator.collector.histogram_dict.items():
                    hist, edges, observed = np.asarray(histogram[0]), np.asarray(histogram[1]), histogram[2:4]
                    lo, hi = mse_range(hist, edges, observed, symmetric, levels)
                    data[tensor] = TensorData(lowest=np.array(lo, np.float32), highest=np.array(hi, np.float32))
                ranges = TensorsData(CalibrationMethod.MinMax, data)
            else:
                ranges = calibrator.compute_data()
        except ValueError as exc:
            raise CalibrationError(f"calibration with method {method!r} failed on {samples.origin}: {exc}") from exc
        save_tensors_data(ranges, path)
    return Ranges(path, method, _ORT_METHOD[method], cached=False)
