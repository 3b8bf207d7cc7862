"""Whole builds through the `chipfit` command, as a release engineer runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import onnx
import pytest
from onnx import TensorProto, helper

from compiler.backends.tvm.lower import elf_machine
from compiler.cli import main

CHIPFIT = [sys.executable, "-m", "compiler.cli"]
BUILTIN = ["apple-a17", "arm64-cortex-a76", "host", "intel-core-ultra-cpu", "intel-npu-3720", "snapdragon-8-elite",
           "snapdragon-8gen3", "x86-64-avx2"]


def chipfit(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*CHIPFIT, *args], capture_output=True, text=True, timeout=600, **kwargs)


@pytest.fixture(scope="module")
def example_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    result = chipfit("build", "example", "-t", "all", "-o", str(out))
    return out, result


def test_example_builds_for_every_builtin_target(example_build):
    out, result = example_build
    assert result.returncode == 0, result.stderr
    for target in BUILTIN:
        assert f"\n{target} " in result.stdout
    model_dir = out / "example"
    built = sorted(p.name for p in model_dir.iterdir())
    assert built == sorted(BUILTIN + ["host@tvm", "host@openvino"])
    for name in built:
        manifest = json.loads((model_dir / name / "manifest.json").read_text())
        for key in ("schema_version", "chipfit_version", "toolchain", "model", "target", "backend", "precision",
                    "passes", "signature", "files", "numerics"):
            assert key in manifest, (name, key)
        assert manifest["model"]["source_digest"] and manifest["target"]["spec_digest"]
        assert all(len(f["sha256"]) == 64 for f in manifest["files"].values())


def test_each_target_gets_the_artifact_its_spec_asks_for(example_build):
    model_dir = example_build[0] / "example"
    load = lambda name: json.loads((model_dir / name / "manifest.json").read_text())
    # the Arm board is not here: its candidates that run here (the same .pte / ONNX file on this CPU) are
    # verified as proxies and the faster ships; the cross-compiled TVM library could not be verified
    arm = load("arm64-cortex-a76")
    assert arm["backend"]["name"] == arm["backend_choice"]["chosen"] in ("executorch", "onnxruntime")
    assert arm["numerics"]["status"] == "verified" and arm["numerics"]["proxy"]
    assert {c["backend"]: c["status"] for c in arm["backend_choice"]["candidates"]}["tvm"] == "not-run"
    assert elf_machine(model_dir / "host@tvm" / "model.so") == "x86_64"
    for name in ("host", "host@tvm", "x86-64-avx2"):
        numerics = load(name)["numerics"]
        assert numerics["status"] == "verified" and not numerics["proxy"], name
        if load(name)["backend"]["name"] != "executorch":  # XNNPACK programs are static-shaped
            assert load(name)["signature"]["inputs"][0]["shape"][0] == "batch"  # symbolic batch kept
    apple = load("apple-a17")
    assert apple["backend"]["name"] == "coreml" and apple["precision"] == "fp16"
    assert apple["numerics"]["status"] == "not-run" and "macOS" in apple["numerics"]["reason"]
    assert "FLOAT16" in apple["numerics"]["structure"]["weight_dtypes"]
    assert apple["signature"]["inputs"][0]["shape"] == [1, 1, 8, 8]
    for name, htp_arch in (("snapdragon-8gen3", 75), ("snapdragon-8-elite", 79)):
        qnn = load(name)  # a QNN context binary for the chip's HTP generation, run on Qualcomm's HTP simulator
        assert qnn["precision"] == "int8" and qnn["backend"]["name"] == "qnn"
        assert qnn["backend"]["options"]["htp_arch"] == htp_arch
        assert qnn["numerics"]["status"] == "verified" and qnn["numerics"]["execution"] == "simulator"
        assert qnn["calibration"]["samples"] == 64 and not qnn["calibration"]["random"]
        assert (model_dir / name / "model_ctx_qnn.bin").is_file()
    npu = load("intel-npu-3720")  # an OpenVINO IR for the NPU plugin, run here on the CPU plugin as a proxy
    assert npu["precision"] == "fp16" and npu["backend"]["name"] == "openvino"
    assert npu["backend"]["options"]["device"] == "NPU" and npu["numerics"]["proxy"]
    assert (model_dir / "intel-npu-3720" / "model.xml").is_file()
    core_ultra = load("intel-core-ultra-cpu")  # the same IR format, verified natively on OpenVINO's CPU plugin
    assert core_ultra["backend"]["name"] == "openvino" and core_ultra["numerics"]["status"] == "verified"
    # natively where this host has Meteor Lake's ISA (AVX-VNNI), else a proxy that says so
    has_isa = {"avx2", "fma", "f16c", "avx_vnni"} <= set(core_ultra["host"]["isa"])
    assert core_ultra["numerics"]["proxy"] == (not has_isa)


def test_inspect_describes_artifact_and_checks_hashes(example_build, capsys):
    target = example_build[0] / "example" / "host"
    assert main(["inspect", str(target)]) == 0
    text = capsys.readouterr().out
    assert "target:    host" in text and "numerics:  verified" in text
    assert "all files match their sha256" in text
    assert main(["inspect", str(example_build[0]), "--json"]) == 0
    reports = json.loads(capsys.readouterr().out)
    assert len(reports) == len(BUILTIN) + 2 and all(not r["file_problems"] for r in reports)


def test_inspect_flags_a_tampered_artifact(example_build, tmp_path, capsys):
    import shutil

    copy = tmp_path / "host"
    shutil.copytree(example_build[0] / "example" / "host", copy)
    with open(copy / "model.onnx", "ab") as f:
        f.write(b"\0")
    assert main(["inspect", str(copy)]) == 1
    assert "model.onnx: sha256 differs" in capsys.readouterr().out


def test_json_output_and_targets_commands(tmp_path, capsys):
    assert main(["build", "example", "-t", "host", "-o", str(tmp_path), "--json", "-q"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["backend"] for r in report["results"]] == ["onnxruntime", "tvm", "openvino"]
    assert all(r["host_latency"]["latency_ms_p50"] > 0 for r in report["results"])
    assert main(["targets", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {t["id"] for t in listed["targets"]} >= set(BUILTIN) and listed["load_errors"] == {}
    assert main(["targets", "show", "arm64-cortex-a76"]) == 0
    shown = capsys.readouterr().out
    assert "cortex-a76" in shown and "https://docs.zephyrproject.org" in shown and "aarch64-linux-gnu-g++" in shown


def test_pt2_and_onnx_models_build(conv_pt2, conv_onnx, tmp_path, capsys):
    assert main(["build", str(conv_pt2), "-t", "host", "-t", "arm64-cortex-a76", "-o", str(tmp_path), "-q"]) == 0
    assert (tmp_path / "tinyconv" / "arm64-cortex-a76" / "manifest.json").is_file()
    assert main(["build", str(conv_pt2), "-t", "arm64-cortex-a76", "--backend", "tvm", "-o", str(tmp_path / "t"),
                 "-q"]) == 0
    assert elf_machine(tmp_path / "t" / "tinyconv" / "arm64-cortex-a76" / "model.so") == "aarch64"
    assert main(["build", str(conv_onnx), "-t", "x86-64-avx2", "--input", "x=2x3x16x16", "-o", str(tmp_path / "o"), "-q"]) == 0
    manifest = json.loads((tmp_path / "o" / "tinyconv" / "x86-64-avx2" / "manifest.json").read_text())
    assert manifest["signature"]["inputs"][0]["shape"] == [2, 3, 16, 16]
    assert manifest["model"]["source_kind"] == "onnx"


# --- bad input: a clear error, exit 2, nothing written -------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["build", "example", "-t", "rpi9"], "unknown target 'rpi9'; known targets: apple-a17, arm64-cortex-a76"),
        (["build", "example", "-t", "host", "--input", "image=1x3x8x8"], "dimension 1 of example's input is fixed at 1"),
        (["build", "example", "-t", "host", "--input", "pixels=1x1x8x8"], "has no input named 'pixels'"),
        (["build", "example", "-t", "apple-a17", "--precision", "int4"], "runs fp16, fp32, int8, not int4 (supports.precisions)"),
        (["build", "example", "-t", "host", "--backend", "coreml"], "--backend coreml: target host is built by"),
        (["build", "example", "-t", "host", "--samples", "/nonexistent"], "--samples: /nonexistent"),
    ],
)
def test_usage_errors_exit_2(args, message, tmp_path, capsys):
    assert main([*args, "-o", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.rglob("manifest.json"))


def test_bad_model_files_exit_2(conv_onnx, tmp_path):
    pickled = tmp_path / "model.pth"
    pickled.write_bytes(b"\x80\x04K\x01.")
    truncated = tmp_path / "cut.onnx"
    truncated.write_bytes(conv_onnx.read_bytes()[:200])
    for path, message in ((pickled, "never unpickles"), (truncated, "cut.onnx: not a valid ONNX model")):
        result = chipfit("build", str(path), "-t", "host", "-o", str(tmp_path / "out"))
        assert result.returncode == 2, result.stderr
        assert message in result.stderr
    assert not (tmp_path / "out").exists()


def test_int8_onnx_without_calibration_exits_2(conv_onnx, tmp_path, capsys):
    assert main(["build", str(conv_onnx), "-t", "snapdragon-8gen3", "-o", str(tmp_path)]) == 2
    assert "needs calibration samples: pass --calibration PATH" in capsys.readouterr().err
    assert main(["build", str(conv_onnx), "-t", "snapdragon-8gen3", "--calibration", "random", "-o", str(tmp_path), "-q"]) == 0
    manifest = json.loads((tmp_path / "tinyconv" / "snapdragon-8gen3" / "manifest.json").read_text())
    assert manifest["calibration"]["random"] is True


def test_op_a_backend_cannot_lower_exits_1_naming_node(tmp_path, capsys):
    graph = helper.make_graph(
        [helper.make_node("Celu", ["x"], ["y"], name="act/celu_0")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    path = tmp_path / "celu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    code = main(["build", str(path), "-t", "host", "-o", str(tmp_path / "out"), "-q"])
    captured = capsys.readouterr()
    assert code == 1
    assert "cannot lower op 'Celu' (node 'act/celu_0')" in captured.err
    assert (tmp_path / "out" / "celu" / "host" / "manifest.json").is_file()  # onnxruntime built fine
    assert not (tmp_path / "out" / "celu" / "host@tvm").exists()


def test_killed_build_leaves_no_complete_looking_artifact(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([*CHIPFIT, "build", "example", "-t", "arm64-cortex-a76", "-o", str(out), "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    staging = "example/.candidates/.arm64-cortex-a76@*.staging-*"  # each backend candidate is staged first
    while time.time() < deadline and not list(out.glob(staging)):
        time.sleep(0.02)
    assert list(out.glob(staging)), "the build never started staging"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "example" / "arm64-cortex-a76").exists()
    assert main(["inspect", str(out)]) == 2  # nothing there is an artifact
    # The next build removes the dead build's staging directory and completes.
    assert main(["build", "example", "-t", "arm64-cortex-a76", "-o", str(out), "-q"]) == 0
    assert [p.name for p in (out / "example").iterdir()] == ["arm64-cortex-a76"]
