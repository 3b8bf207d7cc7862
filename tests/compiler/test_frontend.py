import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from compiler.errors import UsageError
from compiler.frontend import load_model
from targets.signature import parse_input_override


def test_pt2_keeps_symbolic_batch_and_reference(conv_pt2):
    traced = load_model(conv_pt2)
    assert traced.source_kind == "pytorch" and traced.exported_program is not None
    (inp,) = traced.signature.inputs
    assert inp.shape == ("batch", 3, 16, 16) and inp.dtype == "float32"
    graph_input = traced.onnx_model.graph.input[0].type.tensor_type.shape.dim[0]
    assert graph_input.dim_param == "batch"
    x = np.random.default_rng(0).standard_normal((3, 3, 16, 16)).astype(np.float32)
    (out,) = traced.reference({"x": x}).values()
    expected = traced.exported_program.module()(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_input_override_fixes_batch(conv_pt2):
    traced = load_model(conv_pt2, [parse_input_override("x=4x3x16x16")])
    assert traced.signature.inputs[0].shape == (4, 3, 16, 16)
    assert traced.onnx_model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 4


def test_onnx_file_is_checked_and_shape_inferred(conv_onnx):
    traced = load_model(conv_onnx)
    assert traced.source_kind == "onnx" and traced.exported_program is None
    assert traced.signature.inputs[0].shape[1:] == (3, 16, 16)
    assert traced.signature.outputs[0].shape[-1] == 4
    x = np.ones((1, 3, 16, 16), np.float32)
    assert next(iter(traced.reference({"x": x}).values())).shape == (1, 4)


def test_example_model_is_accurate(example_traced):
    images, labels = example_traced.samples["image"], example_traced.samples["label"]
    logits = next(iter(example_traced.reference({"image": images}).values()))
    assert (logits.argmax(1) == labels).mean() >= 0.95


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".ckpt"])
def test_pickled_checkpoint_is_refused_and_never_unpickled(tmp_path, suffix):
    marker = tmp_path / "unpickled"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / f"model{suffix}"
    path.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(UsageError, match=r"never unpickles.*torch\.export\.save"):
        load_model(path)
    assert not marker.exists()


def test_pt2_with_pickled_tensors_is_refused(conv_pt2, tmp_path):
    bad = tmp_path / "pickled.pt2"
    with zipfile.ZipFile(conv_pt2) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("model_weights_config.json"):
                config = json.loads(data)
                first = next(iter(config["config"]))
                config["config"][first]["use_pickle"] = True
                data = json.dumps(config).encode()
            dst.writestr(item, data)
    with pytest.raises(UsageError, match="stored pickled"):
        load_model(bad)


def test_truncated_onnx_is_a_usage_error(conv_onnx, tmp_path):
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(conv_onnx.read_bytes()[: conv_onnx.stat().st_size // 2])
    with pytest.raises(UsageError, match=r"truncated\.onnx"):
        load_model(bad)


def test_empty_and_garbage_files(tmp_path):
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(UsageError, match="empty"):
        load_model(empty)
    garbage = tmp_path / "garbage.pt2"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(UsageError, match="not a readable .pt2"):
        load_model(garbage)


def test_external_data_outside_model_folder_is_refused(conv_onnx, tmp_path):
    model = onnx.load(conv_onnx)
    folder = tmp_path / "model"
    folder.mkdir()
    onnx.save(model, folder / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    assert load_model(folder / "m.onnx").signature.inputs[0].name == "x"
    escaped = onnx.load(folder / "m.onnx", load_external_data=False)
    for tensor in escaped.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../../etc/passwd"
    onnx.save(escaped, folder / "escape.onnx")
    with pytest.raises(UsageError, match=r"outside the model's folder"):
        load_model(folder / "escape.onnx")


def test_invalid_onnx_graph_names_the_problem(tmp_path):
    node = onnx.helper.make_node("Relu", ["x"], ["y"], name="relu0")
    graph = onnx.helper.make_graph(
        [node, onnx.helper.make_node("Add", ["y", "missing"], ["z"], name="add0")], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
        [onnx.helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, [1, 4])],
    )
    path = tmp_path / "broken.onnx"
    onnx.save(onnx.helper.make_model(graph), path)
    with pytest.raises(UsageError, match=r"broken\.onnx.*missing"):
        load_model(path)


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        load_model(tmp_path / "nope.onnx")
    other = tmp_path / "model.tflite"
    other.write_bytes(b"x")
    with pytest.raises(UsageError, match="unknown model format"):
        load_model(other)
