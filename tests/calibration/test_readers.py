import numpy as np
import pytest

from calibration import compare_outputs, load_samples, random_samples
from calibration.readers import CalibrationError
from targets.signature import Signature, TensorSpec

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
    with pytest.raises(CalibrationError, match="holds no .npy, .npz or image samples"):
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


def test_image_folder_with_preprocessing_spec(tmp_path):
    from PIL import Image

    rgb = Signature((TensorSpec("pixels", ("batch", 3, 16, 16), "float32"),), ())
    for i in range(3):
        Image.fromarray(np.full((20, 24, 3), 60 * i, np.uint8)).save(tmp_path / f"img{i}.png")
    (tmp_path / "preprocess.toml").write_text('mean = [0.5, 0.5, 0.5]\nstd = [0.5, 0.5, 0.5]\n')
    samples = load_samples(tmp_path, rgb)
    batch = samples.batched()["pixels"]
    assert batch.shape == (3, 3, 16, 16) and batch.dtype == np.float32
    np.testing.assert_allclose(batch[0], -1.0)  # (0 / 255 - 0.5) / 0.5
    np.testing.assert_allclose(batch[2], (120 / 255 - 0.5) / 0.5, atol=1e-6)


def test_image_folder_errors_name_the_file(tmp_path):
    from PIL import Image

    grey = Signature((TensorSpec("image", ("batch", 1, 8, 8), "float32"),), ())
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(CalibrationError, match="mode RGB gives 3 channels, input 'image' takes 1"):
        load_samples(tmp_path, grey)
    (tmp_path / "preprocess.toml").write_text('mode = "L"\nzoom = 2\n')
    with pytest.raises(CalibrationError, match=r"preprocess\.toml: unknown key\(s\) \['zoom'\]"):
        load_samples(tmp_path, grey)
    (tmp_path / "preprocess.toml").write_text('mode = "L"\n')
    assert load_samples(tmp_path, grey).batched()["image"].shape == (1, 1, 8, 8)
    (tmp_path / "b.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(CalibrationError, match=r"b\.jpg: not a readable image"):
        load_samples(tmp_path, grey)


def test_text_file_with_and_without_a_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    lm = Signature((TensorSpec("input_ids", ("batch", 6), "int64"), TensorSpec("attention_mask", ("batch", 6), "int64")), ())
    text = tmp_path / "prompts.txt"
    text.write_text("the cat sat\n\nthe dog\n")
    raw = load_samples(text, lm)
    assert len(raw) == 2 and "UTF-8 bytes" in raw.origin
    assert raw.samples[1]["input_ids"].tolist() == [[116, 104, 101, 32, 100, 111]]  # "the do", truncated to 6
    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "the": 1, "cat": 2, "sat": 3, "dog": 4}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    tokenized = load_samples(text, lm, tokenizer=tmp_path / "tokenizer.json")
    assert tokenized.samples[0]["input_ids"].tolist() == [[1, 2, 3, 0, 0, 0]]
    assert tokenized.samples[0]["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0]]
    with pytest.raises(CalibrationError, match="takes \\['image'\\]"):
        load_samples(text, SIG)
