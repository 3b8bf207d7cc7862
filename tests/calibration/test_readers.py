import numpy as np
import pytest

from calibration import compare_outputs, load_samples, random_samples
from calibration.readers import CalibrationError
from compiler.signature import Signature, TensorSpec

SIG = Signature((TensorSpec("image", ("batch", 1, 8, 8), "float32"),), ())


def test_npz_and_npy_folder(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "a.npz", image=rng.random((3, 1, 8, 8), dtype=np.float32))
    np.save(tmp_path / "b.npy", rng.random((1, 8, 8), dtype=np.float32))  # one sample, no batch axis
    samples = load_samples(tmp_path, SIG)
    assert len(samples) == 4
    assert samples.batched()["image"].shape == (4, 1, 8, 8)
    assert load_samples(tmp_path, SIG).digest == samples.digest


def test_wrong_shape_names_file_and_input(tmp_path):
    np.savez(tmp_path / "bad.npz", image=np.zeros((2, 1, 8, 9), np.float32))
    with pytest.raises(CalibrationError, match=r"bad\.npz: input 'image' dimension 3 is 9, the model takes 8"):
        load_samples(tmp_path / "bad.npz", SIG)


def test_wrong_dtype_and_missing_input(tmp_path):
    np.savez(tmp_path / "f64.npz", image=np.zeros((2, 1, 8, 8)))
    with pytest.raises(CalibrationError, match="float64, the model takes float32"):
        load_samples(tmp_path / "f64.npz", SIG)
    np.savez(tmp_path / "other.npz", pixels=np.zeros((2, 1, 8, 8), np.float32))
    with pytest.raises(CalibrationError, match=r"no array for input\(s\) \['image'\]"):
        load_samples(tmp_path / "other.npz", SIG)


def test_missing_and_empty(tmp_path):
    with pytest.raises(CalibrationError, match="not found"):
        load_samples(tmp_path / "nope", SIG)
    with pytest.raises(CalibrationError, match="no .npy or .npz"):
        load_samples(tmp_path, SIG)


def test_pickled_npy_is_refused(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CalibrationError, match="cannot read sample"):
        load_samples(tmp_path, SIG)


def test_seeded_subset_and_random(tmp_path):
    np.savez(tmp_path / "a.npz", image=np.arange(10 * 64, dtype=np.float32).reshape(10, 1, 8, 8))
    a, b = load_samples(tmp_path, SIG, limit=3, seed=1), load_samples(tmp_path, SIG, limit=3, seed=1)
    assert len(a) == 3 and a.digest == b.digest
    r = random_samples(SIG.concretized(), count=2)
    assert r.is_random and "random" in r.origin


def test_compare_outputs_metrics():
    ref = {"y": np.array([1.0, 2.0, 3.0])}
    (exact,) = compare_outputs(ref, {"y": np.array([1.0, 2.0, 3.0])})
    assert exact.cosine == pytest.approx(1.0) and exact.sqnr_db is None and exact.max_abs_error == 0
    (off,) = compare_outputs(ref, {"other_name": np.array([1.0, 2.0, 3.5])})
    assert off.max_abs_error == pytest.approx(0.5) and off.max_abs_reference == 3.0
    assert off.sqnr_db == pytest.approx(10 * np.log10(14 / 0.25))
    with pytest.raises(ValueError, match="shape"):
        compare_outputs(ref, {"y": np.zeros(4)})
