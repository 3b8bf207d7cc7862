import pytest

from compiler.errors import UsageError
from targets.signature import Signature, TensorSpec, apply_overrides, parse_input_override, seeded_inputs

SIG = Signature((TensorSpec("image", ("batch", 3, 8, 8), "float32"),), (TensorSpec("out", ("batch", 10), "float32"),))


def test_parse_input_override():
    assert parse_input_override("image=1x3x8x8:float32") == TensorSpec("image", (1, 3, 8, 8), "float32")
    assert parse_input_override("image=Nx3x8x8") == TensorSpec("image", ("N", 3, 8, 8), "")


@pytest.mark.parametrize("text", ["image", "image=", "image=1x0x2", "image=1xx2", "image=1x2:float99", "=1x2"])
def test_parse_input_override_rejects(text):
    with pytest.raises(UsageError, match="--input"):
        parse_input_override(text)


def test_override_binds_symbolic_batch():
    sig = apply_overrides(SIG, [parse_input_override("image=4x3x8x8")], "m.onnx")
    assert sig.inputs[0].shape == (4, 3, 8, 8) and sig.is_static


@pytest.mark.parametrize(
    "text, message",
    [
        ("pixels=1x3x8x8", "has no input named 'pixels'; its inputs are image"),
        ("image=1x3x8", "expects rank 4"),
        ("image=1x3x9x8", "dimension 2 of m.onnx's input is fixed at 8"),
        ("image=1x3x8x8:int64", "takes float32, not int64"),
    ],
)
def test_override_mismatch_names_the_option(text, message):
    with pytest.raises(UsageError, match=message):
        apply_overrides(SIG, [parse_input_override(text)], "m.onnx")


def test_seeded_inputs_are_deterministic_and_use_batch_two():
    a, b = seeded_inputs(SIG, seed=3), seeded_inputs(SIG, seed=3)
    assert a["image"].shape == (2, 3, 8, 8)
    assert (a["image"] == b["image"]).all()
