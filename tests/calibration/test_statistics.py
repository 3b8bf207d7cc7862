import numpy as np
import pytest

from calibration.readers import CalibrationError, from_arrays
from calibration.statistics import METHODS, collect_ranges, mse_range


def test_mse_clips_a_long_tail():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 1, 100_000), [40.0, -38.0]])
    t = np.abs(values).max()
    hist, edges = np.histogram(values, 2048, range=(-t, t))
    lo, hi = mse_range(hist, edges, (values.min(), values.max()), symmetric=False)
    # Two outliers are not worth the full range: the squared error is lower with them clipped.
    assert lo > values.min() * 0.9 and hi < values.max() * 0.9 and hi > 3
    slo, shi = mse_range(hist, edges, (values.min(), values.max()), symmetric=True)
    assert slo == -shi


def test_mse_keeps_zero_inside_for_relu_outputs():
    values = np.abs(np.random.default_rng(1).normal(0, 1, 10_000))
    t = values.max()
    hist, edges = np.histogram(values, 2048, range=(-t, t))
    lo, hi = mse_range(hist, edges, (0.0, t), symmetric=False)
    assert lo == 0.0 and 0 < hi <= t


@pytest.mark.parametrize("method", METHODS)
def test_each_method_gives_ranges_and_caches_them(example_traced, tmp_path, method):
    samples = from_arrays({"image": example_traced.samples["image"]}, example_traced.signature, "bundled")
    first = collect_ranges(example_traced.onnx_model, samples, method, tmp_path)
    assert first.path.is_file() and not first.cached and first.method == method
    again = collect_ranges(example_traced.onnx_model, samples, method, tmp_path)
    assert again.cached and again.path == first.path
    other = collect_ranges(example_traced.onnx_model, samples, method, tmp_path, symmetric=True)
    assert other.path != first.path


def test_unknown_method_and_nan_samples(example_traced, tmp_path):
    images = example_traced.samples["image"].copy()
    samples = from_arrays({"image": images}, example_traced.signature, "bundled")
    with pytest.raises(CalibrationError, match="unknown calibration method 'distribution'"):
        collect_ranges(example_traced.onnx_model, samples, "distribution", tmp_path)
    images[3, 0, 2, 2] = np.nan
    bad = from_arrays({"image": images}, example_traced.signature, "my-samples.npz")
    with pytest.raises(CalibrationError, match=r"my-samples\.npz: sample 3, input 'image' holds 1 NaN/Inf"):
        collect_ranges(example_traced.onnx_model, bad, "minmax", tmp_path)
