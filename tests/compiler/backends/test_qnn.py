"""QNN backend: HTP context binaries compiled offline by Qualcomm's QNN (onnxruntime-qnn) for each Snapdragon target,
verified on Qualcomm's HTP simulator, with the nodes the HTP took and those left to the CPU in the manifest."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from compiler.backends.qnn import backend, ep
from compiler.backends.qnn.lower import CONTEXT_BINARY, CONTEXT_MODEL
from compiler.build import BuildContext, BuildOptions, build
from compiler.cli import main
from compiler.frontend.onnx_file import onnx_reference, signature_from_onnx
from targets.errors import TargetError
from targets.model import TracedModel
from targets.spec import load_spec

GEN3, ELITE = "snapdragon-8gen3", "snapdragon-8-elite"
SPECS = Path(__file__).resolve().parents[3] / "targets" / "specs"


@pytest.fixture(scope="module")
def ctx() -> BuildContext:
    return BuildContext()


def _manifest(result) -> dict:
    return json.loads((Path(result.artifact) / "manifest.json").read_text())


def _compile_pass(manifest: dict) -> dict:
    return next(p for p in manifest["passes"] if p["name"] == "qnn-compile")


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expansion, 3x3 depthwise, 1x1 projection, each with BatchNorm; ReLU6 between."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int = 4) -> None:
        super().__init__()
        mid = cin * expand
        self.residual = stride == 1 and cin == cout
        self.body = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(),
            nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


class TinyMobileNetV2(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(),
                                      InvertedResidual(16, 16, 1), InvertedResidual(16, 24, 2),
                                      InvertedResidual(24, 24, 1))
        self.classifier = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def mobilenet():
    from compiler.frontend import trace_module

    torch.manual_seed(0)
    return trace_module(TinyMobileNetV2().eval(), (torch.zeros(1, 3, 32, 32),), name="mobilenetv2-tiny")


def _onnx_model(name: str, nodes, inits=()) -> TracedModel:
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])], list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return TracedModel(name=name, source=f"<{name}>", source_kind="onnx", source_digest="0" * 64,
                       signature=signature_from_onnx(model), onnx_model=model, reference=onnx_reference(model))


def test_example_int8_context_binary_for_each_htp_generation_verified_on_the_simulator(example_traced, ctx, tmp_path):
    results = build(example_traced, BuildOptions([GEN3, ELITE], tmp_path, measure_latency=False), ctx)
    by_target = {r.target: r for r in results}
    binaries = {}
    for target, (soc, arch) in {GEN3: (57, 75), ELITE: (69, 79)}.items():
        result = by_target[target]
        assert result.status == "verified" and result.backend == "qnn", result.message
        numerics = result.numerics
        # the context binary itself, on Qualcomm's simulator, within the spec's [verify.int8]
        assert numerics.execution == "simulator" and numerics.proxy and "HTP simulator" in numerics.runner
        assert numerics.min_cosine > 0.999
        manifest = _manifest(result)
        assert set(manifest["files"]) == {CONTEXT_MODEL, CONTEXT_BINARY, "qnn_config.json", "source.onnx"}
        assert manifest["toolchain"]["qnn_sdk"] == ep.versions()["qnn_sdk"]
        record = _compile_pass(manifest)
        assert (record["soc_model"], record["htp_arch"]) == (soc, arch)
        assert record["htp"]["nodes"] > 0 and record["cpu_fallback"]["nodes"] == 0 and not manifest["fallbacks"]
        context = onnx.load(str(Path(result.artifact) / CONTEXT_MODEL))
        nodes = [n for n in context.graph.node if n.op_type == "EPContext"]
        assert len(nodes) == 1  # one partition: every node on the HTP
        attrs = {a.name: a for a in nodes[0].attribute}
        assert attrs["embed_mode"].i == 0 and attrs["ep_cache_context"].s.decode() == CONTEXT_BINARY
        meta = {p.key: p.value for p in context.metadata_props}
        assert f":{arch}:{soc}:" in meta["ep_compatibility_info.QNNExecutionProvider"]
        binaries[target] = (Path(result.artifact) / CONTEXT_BINARY).read_bytes()
        config = json.loads((Path(result.artifact) / "qnn_config.json").read_text())
        assert config["provider_options"]["backend_path"] == "libQnnHtp.so" and config["htp_arch"] == arch
    assert binaries[GEN3] != binaries[ELITE]  # compiled for two HTP generations
    # the simulator's figures are never raced against the other candidate's proxy timing
    choice = by_target[GEN3].choice
    assert choice.chosen == "qnn"
    assert all(c.latency_ms is None for c in choice.candidates)


def test_mobilenet_class_convs_int8_and_uint16_activations_on_the_simulator(mobilenet, ctx, tmp_path):
    uint8, uint16 = (build(mobilenet, BuildOptions([GEN3], tmp_path / dtype, measure_latency=False, precision="int8",
                                                   calibration="random", activation_dtype=dtype, backend="qnn"), ctx)[0]
                     for dtype in ("uint8", "uint16"))
    for result in (uint8, uint16):
        assert result.status == "verified", result.message
        record = _compile_pass(_manifest(result))
        # every conv (the depthwise ones too) and the residual adds compiled into the HTP's binary
        assert record["htp"]["ops"]["Conv"] >= 10 and record["htp"]["ops"]["Add"] >= 2
        assert record["cpu_fallback"]["nodes"] == 0
    assert _manifest(uint16)["quantization"]["settings"]["activation_dtype"] == "uint16"
    # 16-bit activations (QNN's w8a16): closer to float on the simulator
    assert uint16.numerics.outputs[0].sqnr_db > uint8.numerics.outputs[0].sqnr_db


def test_an_op_the_htp_does_not_take_is_a_cpu_fallback_in_the_manifest(ctx, tmp_path):
    model = _onnx_model("with-erf", [helper.make_node("Relu", ["x"], ["a"], name="first_relu"),
                                     helper.make_node("Erf", ["a"], ["b"], name="the_erf"),
                                     helper.make_node("Relu", ["b"], ["y"], name="last_relu")])
    (result,) = build(model, BuildOptions([ELITE], tmp_path, measure_latency=False, precision="fp16"), ctx)
    assert result.status == "verified", result.message  # HTP, CPU, HTP: still the float model's outputs
    manifest = _manifest(result)
    assert manifest["fallbacks"] == ["the_erf (Erf)"]
    record = _compile_pass(manifest)
    assert record["htp"]["ops"] == {"Relu": 2} and record["cpu_fallback"]["ops"] == {"Erf": 1}
    assert any("does not run fully on the HTP" in n for n in manifest["notes"])
    context = onnx.load(str(Path(result.artifact) / CONTEXT_MODEL))
    assert [n.op_type for n in context.graph.node] == ["EPContext", "Erf", "EPContext"]


def test_a_graph_the_htp_takes_none_of_fails_its_cell_naming_the_ops_and_keeps_its_siblings(tmp_path, capsys):
    model = _onnx_model("erf-only", [helper.make_node("Erf", ["x"], ["y"], name="lonely_erf")])
    path = tmp_path / "erf.onnx"
    onnx.save(model.onnx_model, path)
    code = main(["build", str(path), "-t", ELITE, "-t", "host", "--precision", "fp16", "-o", str(tmp_path / "b"),
                 "--json"])
    assert code == 1
    results = {r["target"]: r for r in json.loads(capsys.readouterr().out)["results"]}
    assert results["host"]["status"] == "verified"
    assert results[ELITE]["status"] == "error" and results[ELITE]["stage"] == "LOWER"
    assert "Erf" in results[ELITE]["message"] and "lonely_erf" in results[ELITE]["message"]


def test_a_spec_naming_an_unknown_soc_or_the_wrong_htp_generation_is_refused(tmp_path, capsys):
    text = (SPECS / "snapdragon-8gen3.toml").read_text().replace('id = "snapdragon-8gen3"', 'id = "my-phone"')
    unknown = tmp_path / "unknown.toml"
    unknown.write_text(text.replace("soc_model = 57", "soc_model = 1234"))
    with pytest.raises(TargetError, match=r"soc_model = 1234 .*known: .*57 \(SM8650"):
        backend.check_options(load_spec(unknown))
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(text.replace("htp_arch = 75", "htp_arch = 79"))
    with pytest.raises(TargetError, match="soc_model 57 .*has an HTP v75: set htp_arch = 75"):
        backend.check_options(load_spec(wrong))
    assert main(["targets", "validate", str(unknown)]) == 1
    assert "known: 30 (SM8350" in capsys.readouterr().out


def test_a_precision_the_htp_does_not_compute_is_refused_before_any_work(tmp_path, capsys):
    text = (SPECS / "snapdragon-8-elite.toml").read_text().replace('id = "snapdragon-8-elite"', 'id = "my-phone"')
    spec = tmp_path / "fp32.toml"
    assert 'precisions = ["int8", "fp16", "int4"]' in text
    spec.write_text(text.replace('precisions = ["int8", "fp16", "int4"]', 'precisions = ["int8", "fp16", "int4", "fp32"]')
                    .replace('backends = ["qnn", "llamacpp"]', 'backends = ["qnn"]')
                    + "\n[verify.fp32]\natol = 1e-4\nrtol = 1e-4\nmin_cosine = 0.9999\n")
    assert main(["targets", "validate", str(spec)]) == 1
    out = capsys.readouterr().out
    assert "fp32" in out and "qnn" in out


def test_the_simulator_run_is_never_timed(example_traced, ctx, tmp_path):
    (result,) = build(example_traced, BuildOptions([ELITE], tmp_path, measure_latency=True), ctx)
    assert result.status == "verified" and result.latency is None
    manifest = _manifest(result)
    plan = backend.plan_run(Path(result.artifact), manifest["backend"]["options"], None, ctx.targets.get(ELITE),
                            ctx.host)
    assert plan.proxy and not plan.representative
    outputs = plan.runner.run({"image": np.zeros((1, 1, 8, 8), np.float32)})
    assert outputs["linear"].shape == (1, 10)


def test_a_tiny_decoders_programs_share_one_context_binary_and_agree_on_the_simulator(trained_dir, ctx, tmp_path):
    from compiler.frontend import load_model

    (result,) = build(load_model(trained_dir), BuildOptions([GEN3], tmp_path, backend="qnn"), ctx)
    assert result.status == "verified", result.message
    generation = result.numerics.generation
    # w8a16 on the HTP simulator, judged like every int8 decoder (verify.int8: 90 % teacher-forced agreement)
    assert generation["token_agreement"] >= 0.9 and "HTP simulator" in result.numerics.runner
    assert result.numerics.proxy and result.numerics.execution == "simulator"
    artifact = Path(result.artifact)
    manifest = _manifest(result)
    (binary,) = [name for name in manifest["files"] if name.endswith("_qnn.bin")]
    for program in ("prefill", "decode"):  # both programs' EPContext nodes point into the one binary
        context = onnx.load(str(artifact / f"{program}_ctx.onnx"))
        caches = [a.s.decode() for n in context.graph.node if n.op_type == "EPContext"
                  for a in n.attribute if a.name == "ep_cache_context"]
        assert caches == [binary]
    record = _compile_pass(manifest)
    assert record["weight_sharing"] and (record["soc_model"], record["htp_arch"]) == (57, 75)
    for program in ("prefill", "decode"):
        assert record["programs"][program]["htp"]["nodes"] > 100
        assert record["programs"][program]["cpu_fallback"]["nodes"] == 0
    rewrites = next(p for p in manifest["passes"] if p["name"] == "htp-rewrites")
    assert rewrites["mask_constants_bounded (prefill)"] > 0
    # the weights are in the binary once: smaller than one program compiled alone plus half again
    solo = ep.session(str(artifact / "qnn" / "prefill.qdq.onnx"), {"soc_model": 57, "htp_arch": 75},
                      {"ep.context_enable": "1", "ep.context_file_path": str(tmp_path / "solo_ctx.onnx")})
    del solo
    assert (artifact / binary).stat().st_size < 1.5 * (tmp_path / "solo_ctx_qnn.bin").stat().st_size
    llm = manifest["llm"]
    assert llm["memory_plan"]["weight_bytes"] == manifest["files"][binary]["bytes"]
    assert llm["weight_precisions"]["matmuls"] == "uint8"


def test_int4_weights_with_16_bit_activations_quantized_by_qnns_recipe_on_the_simulator(mobilenet, ctx, tmp_path):
    (result,) = build(mobilenet, BuildOptions([ELITE], tmp_path, measure_latency=False, precision="int4",
                                              calibration="random"), ctx)
    assert result.status == "verified", result.message  # within [verify.int4], run on the simulator
    manifest = _manifest(result)
    record = next(p for p in manifest["passes"] if p["name"] == "quantize-qnn-int4")
    assert record["activations"] == "uint16" and record["samples"] > 0
    assert manifest["quantization"]["accuracy"]["samples"] > 0  # judged on the evaluation set like every int8
    source = onnx.load(str(Path(result.artifact) / "source.onnx"))
    weight_types = {t.data_type for t in source.graph.initializer if t.name.endswith("_quantized")}
    assert onnx.TensorProto.INT4 in weight_types
    assert _compile_pass(manifest)["htp"]["ops"]["Conv"] >= 10
