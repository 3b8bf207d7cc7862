"""Quantized builds of a conv net trained in the test on scikit-learn's digits, judged on held-out digits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from compiler import precision as precision_stage
from compiler.build import BuildOptions, build
from compiler.cli import main
from compiler.example.model import train
from compiler.frontend import trace_module
from tests.conftest import TransformerBlock, seeded


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """A conv net trained for a second on 1300 digits; 128 calibration and 497 labelled test samples on disk."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (data.images / 16.0).astype(np.float32)[:, None]
    labels = data.target.astype(np.int64)
    model = train(images[:1300], labels[:1300], epochs=12)
    folder = tmp_path_factory.mktemp("digits")
    np.savez(folder / "calib.npz", image=images[:128])
    np.savez(folder / "eval.npz", image=images[1300:], label=labels[1300:])
    np.savez(folder / "eval_unlabelled.npz", image=images[1300:])
    np.savez(folder / "calib_wrong_scale.npz", image=images[:128] * 50)  # e.g. pixels not divided by 16
    traced = trace_module(model, (torch.zeros(2, 1, 8, 8),), name="digits", dynamic_batch=True)
    return traced, folder


def _int8(traced, folder, out, **kwargs):
    options = dict(targets=["host"], out_dir=out, precision="int8", calibration=str(folder / "calib.npz"),
                   eval=str(folder / "eval.npz"), measure_latency=False)
    options.update(kwargs)
    return build(traced, BuildOptions(**options))


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy", "mse"])
def test_each_method_keeps_top1_within_one_point(digits, tmp_path, method):
    traced, folder = digits
    results = _int8(traced, folder, tmp_path, method=method)
    # onnxruntime and TVM both run the QDQ graph; OpenVINO quantizes with NNCF from the same samples
    assert [r.status for r in results] == ["verified", "verified", "verified"]
    accuracy = results[0].quantization["accuracy"]
    assert accuracy["top1_float_pct"] > 90
    assert accuracy["top1_drop_points"] <= 1.0, accuracy
    assert results[0].quantization["settings"]["method"] == method
    manifest = json.loads((tmp_path / "digits" / "host" / "manifest.json").read_text())
    assert manifest["quantization"]["accuracy"]["top1_pct"] == accuracy["top1_pct"]
    assert manifest["calibration"]["samples"] == 128 and not manifest["calibration"]["random"]
    ops = {n.op_type for n in onnx.load(tmp_path / "digits" / "host" / "model.onnx").graph.node}
    assert "QuantizeLinear" in ops or any(op.startswith("QLinear") for op in ops)


def test_sensitivity_table_ranks_every_layer(digits, tmp_path):
    traced, folder = digits
    report = _int8(traced, folder, tmp_path)[0].quantization
    rows = report["sensitivity"]
    assert len(rows) == 4 and {r["op"] for r in rows} == {"Conv", "Gemm"}
    assert [r["sqnr_db"] for r in rows] == sorted(r["sqnr_db"] for r in rows)  # worst first


def test_calibration_runs_once_for_many_targets(digits, tmp_path):
    traced, folder = digits
    targets = ["host", "x86-64-avx2", "arm64-cortex-a76", "snapdragon-8gen3", "intel-npu-3720"]
    first = _int8(traced, folder, tmp_path, targets=targets)
    assert all(r.ok for r in first)
    cache = list((tmp_path / ".cache" / "calibration").glob("*.json"))
    # uint8 and int8 activation targets share the same asymmetric ranges: one calibration per graph the
    # precision stage tried (plain, equalized, bias-corrected), not one per target
    tried = len(first[0].quantization["pre_quantization"]["tried"]) or 1
    assert len(cache) == tried
    assert not first[0].quantization["statistics"]["from_cache"]
    again = _int8(traced, folder, tmp_path, targets=["host"])
    assert again[0].quantization["statistics"]["from_cache"]
    # the NPU's OpenVINO backend quantizes with NNCF itself, from the same calibration samples (no cache entry),
    # and its artifact is judged on the same evaluation set
    npu = next(r for r in first if r.target == "intel-npu-3720")
    manifest = lambda r: json.loads((Path(r.artifact) / "manifest.json").read_text())
    assert npu.quantization["settings"]["quantizer"] == "nncf.quantize"
    assert npu.quantization["accuracy"]["samples"] == first[0].quantization["accuracy"]["samples"]
    assert any(p["name"] == "nncf.quantize" for p in manifest(npu)["passes"])
    assert manifest(npu)["calibration"]["digest"] == manifest(first[0])["calibration"]["digest"]


def test_accuracy_budget_keeps_sensitive_layers_in_float(digits, tmp_path):
    traced, folder = digits
    bad = dict(calibration=str(folder / "calib_wrong_scale.npz"))
    without = _int8(traced, folder, tmp_path / "a", **bad)[0].quantization
    assert without["accuracy"]["top1_drop_points"] > 5  # badly scaled calibration hurts
    results = _int8(traced, folder, tmp_path / "b", accuracy_budget=1.0, **bad)
    report = results[0].quantization
    assert report["accuracy"]["top1_drop_points"] <= 1.0
    assert report["kept_in_float"] and report["kept_in_float"][0] == without["sensitivity"][0]["node"]
    manifest = json.loads((tmp_path / "b" / "digits" / "host" / "manifest.json").read_text())
    assert manifest["passes"][0]["kept_in_float"] == report["kept_in_float"]


def test_tight_budget_on_agreement_with_float(digits, tmp_path):
    traced, folder = digits
    results = _int8(traced, folder, tmp_path, eval=str(folder / "eval_unlabelled.npz"), accuracy_budget=0.0)
    report = results[0].quantization
    assert report["budget"]["metric"] == "% top-1 disagreement with float"
    assert report["accuracy"]["agreement_with_float_pct"] == 100.0


def test_budget_that_cannot_be_met_fails_clearly(digits, tmp_path, monkeypatch):
    traced, folder = digits
    monkeypatch.setattr(precision_stage, "MAX_SENSITIVITY_LAYERS", 1)  # only one layer may go back to float
    results = _int8(traced, folder, tmp_path, accuracy_budget=0.5, calibration=str(folder / "calib_wrong_scale.npz"))
    assert all(r.status == "error" for r in results)
    assert "accuracy budget 0.5 (top-1 points) cannot be met at int8" in results[0].message
    # OpenVINO quantizes with NNCF itself: judged on the same evaluation set, it is held to the same budget
    vendor = next(r for r in results if r.backend == "openvino")
    assert "is not met by openvino's own int8 quantizer" in vendor.message
    assert not (tmp_path / "digits" / "host").exists()


def test_int4_weight_only_on_a_transformer_block(tmp_path, capsys):
    traced = trace_module(seeded(TransformerBlock(dim=64)), (torch.zeros(1, 8, 64),), name="block")
    results = build(traced, BuildOptions(targets=["host"], out_dir=tmp_path, precision="int4", measure_latency=False))
    assert [(r.backend, r.status) for r in results] == [("onnxruntime", "verified")]  # TVM cannot run MatMulNBits
    graph = onnx.load(tmp_path / "block" / "host" / "model.onnx")
    assert any(n.op_type == "MatMulNBits" for n in graph.graph.node)
    assert results[0].quantization["settings"]["block_size"] == 32
    fp32 = build(traced, BuildOptions(targets=["host"], out_dir=tmp_path / "f", backend="onnxruntime", measure_latency=False))
    assert results[0].size_bytes < fp32[0].size_bytes * 0.6


@pytest.mark.parametrize(
    "args, message",
    [
        (["-t", "host", "--quantize", "int8", "--activation-dtype", "int16"],
         "target host (", ),
        (["-t", "intel-npu-3720", "--quantize", "int4"], "runs fp16, int8, not int4 (supports.precisions)"),
        (["-t", "host", "--quantize", "int4", "--block-size", "48"], "runs int4 blocks of [32, 64, 128], not 48"),
        (["-t", "host", "--quantize", "int8", "--calibration", "/no/such/folder"], "--calibration: /no/such/folder"),
    ],
)
def test_requests_a_target_cannot_honour_exit_2(args, message, tmp_path, capsys):
    assert main(["build", "example", *args, "-o", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.rglob("manifest.json"))


def test_activation_constraint_is_named(tmp_path, capsys):
    assert main(["build", "example", "-t", "host", "--quantize", "int8", "--activation-dtype", "int16", "-o", str(tmp_path)]) == 2
    assert "runs uint8/int8 activations, not int16 (quantization.activation_dtypes)" in capsys.readouterr().err


def test_cli_prints_the_accuracy_report(digits, tmp_path, capsys):
    traced, folder = digits
    onnx_path = tmp_path / "digits.onnx"
    onnx.save(traced.onnx_model, onnx_path)
    code = main(["build", str(onnx_path), "-t", "host", "--backend", "onnxruntime", "--quantize", "int8",
                 "--calibration", str(folder / "calib.npz"), "--eval", str(folder / "eval.npz"), "--method", "percentile",
                 "-o", str(tmp_path / "out"), "-q"])
    out = capsys.readouterr().out
    assert code == 0
    assert "int8 (method percentile" in out and "top-1" in out and "most sensitive layers" in out
    assert main(["inspect", str(tmp_path / "out" / "digits" / "host")]) == 0
    assert "sensitivity:" in capsys.readouterr().out


def test_core_ml_int8_from_the_pt2e_quantized_program(digits, tmp_path):
    traced, folder = digits
    results = _int8(traced, folder, tmp_path, targets=["apple-a17"])
    (result,) = results
    assert result.status == "not-run" and result.precision == "int8"
    structure = result.numerics.structure
    assert {"quantize", "dequantize", "constexpr_affine_dequantize"} <= set(structure["op_histogram"])
    report = result.quantization
    assert report["settings"]["tool"].startswith("torchao PT2E")
    assert report["accuracy"]["top1_drop_points"] <= 1.0  # the quantized torch program, run here
    manifest = json.loads((tmp_path / "digits" / "apple-a17" / "manifest.json").read_text())
    assert manifest["passes"][0]["name"] == "quantize-int8-pt2e" and manifest["calibration"]["samples"] == 128


def test_core_ml_refuses_methods_pt2e_lacks(tmp_path, capsys):
    assert main(["build", "example", "-t", "apple-a17", "--quantize", "int8", "--method", "entropy", "-o", str(tmp_path)]) == 2
    assert "PT2E observers, which offer minmax, mse" in capsys.readouterr().err
