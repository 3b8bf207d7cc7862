"""OpenVINO backend: IR artifacts verified on OpenVINO's own CPU plugin at f32; int8 through NNCF."""

import json
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from compiler.backends.openvino import backend
from compiler.build import BuildContext, BuildOptions, build
from compiler.errors import QuantizeError
from targets.registry import BACKENDS_GROUP, TARGETS_GROUP, backend_registry, target_registry
from tests.compiler.backends.conftest import lower_for

CPU, NPU = "intel-core-ultra-cpu", "intel-npu-3720"
# what pyproject.toml registers; added here only where the installed metadata predates them
OURS = {BACKENDS_GROUP: {"openvino": "compiler.backends.openvino:backend"},
        TARGETS_GROUP: {CPU: "targets.builtin:intel_core_ultra_cpu"}}


def _with_ours(group: str) -> list[metadata.EntryPoint]:
    installed = list(metadata.entry_points(group=group))
    have = {ep.name for ep in installed}
    return installed + [metadata.EntryPoint(n, v, group) for n, v in OURS[group].items() if n not in have]


@pytest.fixture(scope="module")
def ctx() -> BuildContext:
    return BuildContext(targets=target_registry(_with_ours(TARGETS_GROUP)),
                        backends=backend_registry(_with_ours(BACKENDS_GROUP)))


def _lacks_target_isa(ctx: BuildContext) -> bool:
    from compiler.backends import host_mismatch

    return host_mismatch(ctx.targets.get(CPU), ctx.host) is not None


def _manifest(result) -> dict:
    return json.loads((Path(result.artifact) / "manifest.json").read_text())


def test_example_fp32_ir_verifies_on_the_cpu_plugin_at_f32(example_traced, ctx, tmp_path):
    (result,) = build(example_traced, BuildOptions([CPU], tmp_path, measure_latency=False), ctx)
    assert result.status == "verified" and result.backend == "openvino", result.message
    numerics = result.numerics
    # on the target's own runtime where this host has its ISA (AVX-VNNI), else as a proxy that says why
    assert numerics.proxy == _lacks_target_isa(ctx)
    assert "CPU plugin" in numerics.runner and "f32" in numerics.runner
    assert numerics.min_cosine > 0.99999
    manifest = _manifest(result)
    assert set(manifest["files"]) == {"model.xml", "model.bin", "ov_config.json"}
    assert manifest["toolchain"]["openvino"] == metadata.version("openvino")
    assert manifest["toolchain"]["nncf"] == metadata.version("nncf")
    config = json.loads((tmp_path / "example" / CPU / "ov_config.json").read_text())
    # the application compiles it as verified: f32, not the bf16 default of CPUs with AVX-512 BF16 or AMX
    assert config["device"] == "CPU" and config["config"]["INFERENCE_PRECISION_HINT"] == "f32"
    assert any(p["name"] == "openvino.save_model" and p["compress_to_fp16"] is False for p in manifest["passes"])


def test_int8_ir_through_nncf_within_the_targets_tolerance(example_traced, ctx, tmp_path):
    (fp32,) = build(example_traced, BuildOptions([CPU], tmp_path / "fp32", measure_latency=False), ctx)
    (int8,) = build(example_traced, BuildOptions([CPU], tmp_path / "int8", precision="int8", measure_latency=False),
                    ctx)
    assert int8.status == "verified", int8.message  # within [verify.int8] of the spec
    assert int8.numerics.min_cosine > 0.9995  # 0.99990 (SQNR 36 dB) with min/max activation ranges
    manifest = _manifest(int8)
    nncf_pass = next(p for p in manifest["passes"] if p["name"] == "nncf.quantize")
    assert nncf_pass["nncf"] == metadata.version("nncf") and nncf_pass["activation_ranges"] == "minmax"
    assert manifest["calibration"]["samples"] == 64 and not manifest["calibration"]["random"]
    assert int8.size_bytes < fp32.size_bytes  # int8 weights in model.bin


def test_int8_without_calibration_samples_is_refused(example_traced, ctx, tmp_path):
    with pytest.raises(QuantizeError, match="calibration"):
        lower_for(backend, example_traced, ctx.targets.get(CPU), "int8", tmp_path)


def test_npu_target_gets_a_static_ir_its_npu_compile_recorded_and_a_labelled_proxy_run(example_traced, ctx,
                                                                                     tmp_path):
    import openvino as ov

    target = ctx.targets.get(NPU)
    assert target.backends[0] == "openvino"
    lowered = lower_for(backend, example_traced, target, "fp16", tmp_path)
    check = lowered.structure["device_compile"]
    if "NPU" in ov.Core().available_devices:
        assert check["checked"], check
    else:  # compiling for "NPU" here fails with a misleading "VCL compiler loading failed": say why instead
        assert not check["checked"] and "no NPU on this build machine" in check["reason"]
        assert any("NPU compile not checked" in n for n in lowered.notes)
    assert lowered.signature.inputs[0].shape == (1, 1, 8, 8)  # the NPU plugin compiles static shapes
    assert lowered.structure["weights"] == "f16"
    (result,) = build(example_traced, BuildOptions([NPU], tmp_path / "out", measure_latency=False), ctx)
    assert result.status == "verified", result.message
    assert result.numerics.proxy and "CPU plugin" in result.numerics.runner
    assert "NPU" in result.numerics.runner  # the proxy note says whose artifact it is


def test_ir_is_byte_identical_across_builds(example_traced, ctx, tmp_path):
    from calibration.readers import from_arrays

    target = ctx.targets.get(CPU)
    samples = {t.name: example_traced.samples[t.name][:16] for t in example_traced.signature.inputs}
    calibration = from_arrays(samples, example_traced.signature, "test")
    for precision in ("fp32", "int8"):
        a, b = tmp_path / precision / "a", tmp_path / precision / "b"
        for out in (a, b):
            out.mkdir(parents=True)
            lower_for(backend, example_traced, target, precision, out, calibration)
        for name in ("model.xml", "model.bin", "ov_config.json"):
            assert (a / name).read_bytes() == (b / name).read_bytes(), (precision, name)


def test_mobilenetv2_builds_and_verifies_on_the_cpu_plugin(ctx, tmp_path):
    import torch
    import transformers

    from compiler.frontend import trace_module

    torch.manual_seed(0)
    config = transformers.MobileNetV2Config(image_size=96, num_labels=10)
    net = transformers.MobileNetV2ForImageClassification(config).eval()
    for m in net.modules():  # weights and batch-norm statistics that keep activations in a realistic range
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.weight, 0.5, 1.0)
            m.running_var.uniform_(0.5, 2.0)

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return self.net(pixels, return_dict=False)[0]

    traced = trace_module(Logits().eval(), (torch.zeros(1, 3, 96, 96),), name="mobilenetv2")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", **{traced.signature.inputs[0].name: rng.normal(size=(16, 3, 96, 96)).astype(
        np.float32)})
    results = {}
    for precision in ("fp32", "int8"):
        (results[precision],) = build(traced, BuildOptions([CPU], tmp_path / precision, precision=precision,
                                                           calibration=str(tmp_path / "calib.npz"),
                                                           measure_latency=False), ctx)
    fp32, int8 = results["fp32"], results["int8"]
    assert fp32.status == "verified" and fp32.numerics.proxy == _lacks_target_isa(ctx), fp32.message
    assert fp32.numerics.min_cosine > 0.99999
    assert int8.status == "verified", int8.numerics.summary()
    assert _manifest(int8)["backend"]["options"]["device"] == "CPU"


def test_runner_takes_threads_and_gives_per_op_times(example_traced, ctx, tmp_path):
    from targets.host import detect_host

    target = ctx.targets.get(CPU)
    lowered = lower_for(backend, example_traced, target, "fp32", tmp_path)
    runner = backend.plan_run(tmp_path, lowered.options, lowered.signature, target, detect_host()).runner
    assert runner.set_threads(1)
    images = {"image": example_traced.samples["image"][:4]}
    assert runner.run(images)["linear"].shape == (4, 10)
    rows = runner.profile_ops(images, runs=2)
    assert rows and {"node", "op", "mean_us"} <= set(rows[0]) and rows[0]["mean_us"] >= rows[-1]["mean_us"]


# -- decoder LMs: a stateful IR folder for OpenVINO GenAI ---------------------------------------------------------

@pytest.mark.parametrize("family", ["llama", "gemma3_text", *(pytest.param(f, marks=pytest.mark.slow) for f in
                                                               ("qwen2", "qwen3", "phi3", "gemma2", "mistral", "minicpm3"))])
def test_each_family_generates_the_reference_tokens_through_llm_pipeline(family_dirs, ctx, tmp_path, family):
    from compiler.frontend import load_model

    (result,) = build(load_model(family_dirs[family]), BuildOptions([CPU], tmp_path, backend="openvino"), ctx)
    assert result.status == "verified", result.message
    generation = result.numerics.generation
    assert generation["greedy_equal"] and generation["token_agreement"] == 1.0
    assert result.numerics.min_cosine > 0.9999 and "LLMPipeline" in result.numerics.runner
    manifest = _manifest(result)
    assert manifest["llm"]["runtime"] == "openvino-genai" and manifest["llm"]["cache_form"] == "dynamic"
    folder = Path(result.artifact)
    # what LLMPipeline loads: the stateful model and the converted tokenizer pair
    assert {"openvino_model.xml", "openvino_tokenizer.xml", "openvino_detokenizer.xml"} <= set(manifest["files"])
    import openvino as ov

    ir = ov.Core().read_model(str(folder / "openvino_model.xml"))
    assert {p.get_any_name() for p in ir.inputs} == {"input_ids", "attention_mask", "position_ids", "beam_idx"}
    assert len(ir.get_sinks()) == 2 * manifest["llm"]["decoder"]["layers"]  # an Assign per cache tensor
    config = json.loads((folder / "ov_config.json").read_text())["config"]
    assert config["KV_CACHE_PRECISION"] == "f32" and config["INFERENCE_PRECISION_HINT"] == "f32"


def test_int8_and_int4_weights_by_nncf_keep_the_trained_models_tokens(trained_dir, ctx, tmp_path):
    from compiler.frontend import load_model

    model = load_model(trained_dir)
    sizes = {}
    for precision in ("int8", "int4"):
        (result,) = build(model, BuildOptions([CPU], tmp_path / precision, backend="openvino", precision=precision),
                          ctx)
        assert result.status == "verified", result.message
        assert result.numerics.generation["greedy_equal"]
        manifest = _manifest(result)
        nncf = next(p for p in manifest["passes"] if p["name"] == "nncf.compress_weights")
        assert nncf["mode"] == ("int4_sym" if precision == "int4" else "int8_asym")
        weights = manifest["llm"]["weight_precisions"]
        assert weights["matmuls"].startswith(precision)
        assert weights["lm_head"] == "int8"  # at int4 too: NNCF's backup mode, kept for the logits' accuracy
        sizes[precision] = manifest["files"]["openvino_model.bin"]["bytes"]
        config = json.loads((Path(result.artifact) / "ov_config.json").read_text())["config"]
        assert config["KV_CACHE_PRECISION"] == "u8"
    fp32_bytes = model.spec.parameters * 4
    assert sizes["int4"] < sizes["int8"] < fp32_bytes * 0.3
