import numpy as np
import pytest

from compiler.backends.tvm import backend
from compiler.backends.tvm.lower import elf_machine
from compiler.errors import UnsupportedOpError
from targets.signature import seeded_inputs
from compiler.backends.tvm.options import mcpu_for
from targets.host import HostInfo, detect_host
from tests.compiler.backends.conftest import lower_for


def _lower_and_run(traced, target, tmp_path):
    lowered = lower_for(backend, traced, target, "fp32", tmp_path)
    plan = backend.plan_run(tmp_path, lowered.options, lowered.signature, target, detect_host())
    return lowered, plan


def test_host_library_keeps_symbolic_batch_and_matches_reference(conv_traced, registry, tmp_path):
    lowered, plan = _lower_and_run(conv_traced, registry.get("host"), tmp_path)
    assert lowered.signature.inputs[0].shape[0] == "batch"
    assert elf_machine(tmp_path / "model.so") == "x86_64"
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 16, 16)).astype(np.float32)
        got = plan.runner.run({"x": x})
        want = conv_traced.reference({"x": x})
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5)


def test_arm64_is_a_real_aarch64_library(conv_traced, registry, tmp_path):
    lowered = lower_for(backend, conv_traced, registry.get("arm64-cortex-a76"), "fp32", tmp_path)
    assert elf_machine(tmp_path / "model.so") == "aarch64"
    assert lowered.options["elf_machine"] == "aarch64"
    assert lowered.options["target"]["mcpu"] == "cortex-a76"


def test_transformer_block_lowers_and_matches(block_traced, registry, tmp_path):
    lowered, plan = _lower_and_run(block_traced, registry.get("host"), tmp_path)
    inputs = seeded_inputs(block_traced.signature)
    got, want = plan.runner.run(inputs), block_traced.reference(inputs)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-3, atol=1e-4)


def test_unsupported_op_names_node_and_op(single_op, registry, tmp_path):
    with pytest.raises(UnsupportedOpError, match=r"backend 'tvm' cannot lower op 'Celu' \(node 'my_celu'\)"):
        lower_for(backend, single_op("Celu"), registry.get("host"), "fp32", tmp_path)


def test_int8_goes_through_the_qdq_onnx_route(example_traced, registry, tmp_path):
    from calibration.readers import from_arrays
    from tests.compiler.backends.conftest import at_precision

    calib = from_arrays({"image": example_traced.samples["image"]}, example_traced.signature, "bundled")
    model = at_precision(example_traced, "int8", calib, tmp_path)
    (tmp_path / "out").mkdir()
    lowered = lower_for(backend, model, registry.get("host"), "int8", tmp_path / "out")
    pipeline = next(p for p in lowered.passes if p["name"].startswith("tvm-relax-pipeline"))
    assert "onnx" in pipeline["importer"]
    plan = backend.plan_run(tmp_path / "out", lowered.options, lowered.signature, registry.get("host"), detect_host())
    images = example_traced.samples["image"][:16]
    got = next(iter(plan.runner.run({"image": images}).values()))
    want = next(iter(example_traced.reference({"image": images}).values()))
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.9


def test_int4_is_refused_by_tvm():
    assert "int4" not in backend.capabilities.precisions


def _info(flags: str, arch: str = "x86_64", clock=2.0) -> HostInfo:
    return HostInfo(arch, "test cpu", frozenset(flags.split()), 4, clock, 16.0)


def test_isa_features_map_to_tvm_mcpu():
    assert mcpu_for(_info("avx2 fma bmi2 sse4_2 popcnt")) == "haswell"
    assert mcpu_for(_info("avx512f avx512bw avx512dq avx512vl avx2 fma")) == "skylake-avx512"
    assert mcpu_for(_info("avx512f avx512_vnni avx2")) == "cascadelake"
    amx = "amx_tile amx_int8 amx_bf16 avx512_fp16 avx512_vnni avx512_bf16 avx512f"
    assert mcpu_for(_info(amx)) == "sapphirerapids"
    zen4 = "avx512_bf16 avx512_vnni avx512ifma avx512_vbmi2 avx512f"
    assert mcpu_for(_info(zen4)) == "znver4"
    assert mcpu_for(_info("sse2")) == "x86-64"
    assert mcpu_for(_info("neon asimd", arch="aarch64")) == "generic"


def test_a_tuning_database_made_in_one_process_is_applied_in_another(tmp_path, monkeypatch):
    """`chipfit tune` in its own process keeps MetaSchedule records; a later build applies and lists them."""
    import json
    import os
    import subprocess
    import sys

    import torch

    from compiler.build import BuildOptions, build
    from compiler.frontend import load_model

    torch.manual_seed(0)
    program = torch.export.export(torch.nn.Linear(64, 32).eval(), (torch.randn(1, 64),))
    torch.export.save(program, tmp_path / "linear.pt2")
    env = {**os.environ, "CHIPFIT_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "compiler.cli", "tune", str(tmp_path / "linear.pt2"), "-t", "host",
                           "--trials", "2", "-q"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "records kept in" in done.stdout
    monkeypatch.setenv("CHIPFIT_CACHE_DIR", str(tmp_path / "cache"))
    (result,) = build(load_model(str(tmp_path / "linear.pt2")), BuildOptions(["host"], tmp_path / "out", backend="tvm"))
    assert result.status == "verified", result.message
    manifest = json.loads((tmp_path / "out" / "linear" / "host" / "manifest.json").read_text())
    (schedules,) = [p for p in manifest["passes"] if p["name"] == "tvm-schedules"]
    assert schedules["tuned_records_applied"] == ["fused_matmul_add"]
    assert str(tmp_path / "cache") in schedules["database"]
    assert manifest["backend"]["options"]["tuning_database"] != "none"  # so the build cache tells the builds apart


def test_tuning_a_remote_target_without_a_device_is_refused(capsys):
    from compiler.cli import main

    assert main(["tune", "example", "-t", "arm64-cortex-a76", "--trials", "2"]) == 2
    assert "--rpc HOST:PORT" in capsys.readouterr().err


def test_a_default_rule_that_fails_on_one_kernel_leaves_it_unscheduled_and_named(monkeypatch):
    """dlight's GEMV rule asserted on one of MobileViT's kernels and took the whole model down; now the kernel keeps
    LLVM's loop nest and the record names the rule, the function and the error."""
    import torch
    import tvm
    from tvm.s_tir import dlight as dl

    from compiler.backends.tvm import schedules
    from compiler.backends.tvm.lower import import_torch
    from compiler.frontend import trace_module

    model = trace_module(torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()).eval(), (torch.zeros(1, 8),),
                         name="mlp")

    class Broken(dl.cpu.GEMV):
        def apply(self, func, target, tunable):
            assert False  # as dlight's normalize does, without a message

    monkeypatch.setattr(dl.cpu, "GEMV", Broken)
    target = tvm.target.Target({"kind": "llvm"})
    with target:
        fused = tvm.relax.get_pipeline("zero")(import_torch(model))
        mod, record = schedules.schedule(fused, None)
        tvm.compile(mod, target=target)  # the model still compiles
    assert record["default_rules_failed"]
    assert all(f["rule"] == "dlight.cpu.GEMV" and f["error"].startswith("AssertionError") for f in record["default_rules_failed"])
    assert {f["function"] for f in record["default_rules_failed"]} <= {g.name_hint for g, _ in mod.functions_items()}


def test_an_mattr_that_contradicts_the_declared_isa_names_both(tmp_path):
    from targets.errors import TargetError
    from targets.spec import load_spec
    from tests.targets.test_spec import SPECS

    text = (SPECS / "arm64-cortex-a76.toml").read_text().replace('"+fullfp16"]', '"+fullfp16", "+i8mm"]')
    (tmp_path / "a76.toml").write_text(text)
    with pytest.raises(TargetError, match=r"mattr contradicts isa\.features \(neon, dotprod, fp16\): \+i8mm \(not declared"):
        backend.check_options(load_spec(tmp_path / "a76.toml"))
    backend.check_options(load_spec(SPECS / "arm64-cortex-a76.toml"))  # the built-in spec agrees with itself
