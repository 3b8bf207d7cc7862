"""A transformer block built for a target that declares the fusions and for one that does not."""

from __future__ import annotations

import json

from compiler.build import BuildOptions, build
from compiler.cli import main
from compiler.fusion_stage import FusionOptions


def test_fused_where_declared_and_left_alone_elsewhere(hf_bert, tmp_path):
    bert = hf_bert
    results = build(bert, BuildOptions(targets=["host", "intel-npu-3720"], out_dir=tmp_path, measure_latency=False))
    by = {(r.target, r.backend): r for r in results}
    assert all(r.ok for r in results), [r.message for r in results]
    host = json.loads((tmp_path / "bert" / "host" / "manifest.json").read_text())
    after = host["fusion"]["op_histogram_after"]
    assert after["com.microsoft.Attention"] == 2 and after["com.microsoft.SkipLayerNormalization"] >= 4
    assert all(p.get("numerics", "unchanged") == "unchanged" for p in host["fusion"]["passes"])
    npu = json.loads((tmp_path / "bert" / "intel-npu-3720" / "manifest.json").read_text())
    assert not any(op.startswith("com.microsoft") for op in npu["fusion"]["op_histogram_after"])
    assert npu["fusion"]["declared"] == ["conv_bn", "hardswish"] and npu["fallbacks"] == []
    tvm = json.loads((tmp_path / "bert" / "host@tvm" / "manifest.json").read_text())
    assert tvm["fusion"]["applied"] is False  # fp32 PyTorch models reach TVM as torch programs
    assert by[("host", "onnxruntime")].numerics.status == "verified"


def test_int8_keeps_contrib_fusions_out_of_the_quantizer(example_traced, tmp_path):
    results = build(example_traced, BuildOptions(targets=["host"], backend="onnxruntime", precision="int8",
                                                 out_dir=tmp_path, measure_latency=False))
    fusion = results[0].fusion
    assert {s["name"] for s in fusion["skipped"]} >= {"conv_activation", "attention"}
    assert "quantizer would leave in float" in fusion["skipped"][0]["reason"]


def test_no_fusion_and_bad_pass_names(tmp_path, capsys):
    assert main(["build", "example", "-t", "host", "--backend", "onnxruntime", "--no-fusion", "-o", str(tmp_path), "-q"]) == 0
    manifest = json.loads((tmp_path / "example" / "host" / "manifest.json").read_text())
    assert manifest["fusion"] == {"applied": False, "reason": "disabled (--no-fusion)"}
    assert main(["build", "example", "-t", "host", "--dump-after", "flash", "-o", str(tmp_path)]) == 2
    assert "--dump-after flash: no such pass" in capsys.readouterr().err


def test_dump_all_writes_every_pass(tmp_path):
    results = build(__import__("compiler.frontend", fromlist=["load_model"]).load_model("example"),
                    BuildOptions(targets=["host"], backend="onnxruntime", out_dir=tmp_path / "o", measure_latency=False,
                                 fusion=FusionOptions(dump_all=tmp_path / "dumps")))
    assert results[0].ok
    dumped = sorted(p.name for p in (tmp_path / "dumps" / "host").iterdir())
    assert dumped[0] == "01-cleanup.onnx" and len(dumped) == 10
