import pytest

from compiler.backends import NotRunnable
from compiler.backends.coreml import backend
from compiler.errors import BuildError
from compiler.frontend import concretize
from targets.host import detect_host
from tests.compiler.backends.conftest import lower_for


def test_mlpackage_is_an_fp16_ml_program(example_traced, registry, tmp_path):
    target = registry.get("apple-a17")
    model = concretize(example_traced)
    lowered = lower_for(backend, model, target, "fp16", tmp_path)
    assert (tmp_path / "model.mlpackage" / "Manifest.json").is_file()
    assert "model.mlpackage/Data/com.apple.CoreML/model.mlmodel" in lowered.files
    assert "model.mlpackage/Data/com.apple.CoreML/weights/weight.bin" in lowered.files
    structure = lowered.structure
    assert structure["format"] == "mlprogram"
    assert structure["inputs"] == ["image"]
    assert "FLOAT16" in structure["weight_dtypes"]
    assert structure["op_histogram"].get("conv", 0) == 3
    assert lowered.options["compute_units"] == "ALL"
    with pytest.raises(NotRunnable, match="macOS"):
        backend.plan_run(tmp_path, lowered.options, lowered.signature, target, detect_host())


def test_onnx_source_is_refused_with_a_way_forward(conv_onnx, registry, tmp_path):
    from compiler.frontend import load_model

    model = load_model(conv_onnx)
    with pytest.raises(BuildError, match=r"coremltools has no ONNX converter.*\.pt2"):
        lower_for(backend, concretize(model), registry.get("apple-a17"), "fp16", tmp_path)
