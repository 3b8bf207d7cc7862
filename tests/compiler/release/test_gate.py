"""The release gate stops what failed, keeps what built, scopes the cache to what each cell reads, and says why."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.build import BuildOptions, build
from compiler.cli import main
from compiler.frontend import load_model
from tests.profiles.junit_schema import validate_junit

SPECS = Path(__file__).resolve().parents[3] / "targets" / "specs"


def celu_net(path: Path) -> Path:
    """Conv + Celu: ONNX Runtime runs it; TVM's ONNX importer has no Celu (a real backend failure)."""
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Celu", ["c"], ["y"])],
        "celu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _release(folder: Path, text: str) -> Path:
    (folder / "both.toml").write_text((SPECS / "x86-64-avx2.toml").read_text()
                                      .replace('id = "x86-64-avx2"', 'id = "both-cpu"')
                                      .replace('backends = ["tvm", "onnxruntime", "executorch", "llamacpp"]',
                                               'backends = ["tvm", "onnxruntime"]\nbuild_all_backends = true')
                                      .replace('[backend_options.executorch]\ndelegate = "xnnpack"\n\n', ''))
    (folder / "release.toml").write_text(text)
    return folder / "release.toml"


def _run(*args) -> int:
    return main(["release", *map(str, args)])


@pytest.fixture(scope="module")
def partial(tmp_path_factory):
    """A release whose Celu net builds on ONNX Runtime but not on TVM, on a target that builds both."""
    root = tmp_path_factory.mktemp("gate")
    celu_net(root / "celu.onnx")
    file = _release(root, 'targets = ["both.toml"]\n[[model]]\npath = "celu.onnx"\n[profile]\nruns = 20\nbudget_s = 1.0\n')
    code = _run(file, "-o", root / "dist", "--cache", root / "cache", "-q")
    return root, code


def test_a_cell_with_one_failing_backend_keeps_and_ships_the_other(partial):
    root, code = partial
    assert code == 1  # something failed; what verified is still shipped
    index = json.loads((root / "dist" / "index.json").read_text())
    (cell,) = index["cells"]
    assert cell["status"] == "partial" and cell["failed_backends"] == ["tvm"] and cell["stage"] == "LOWER"
    assert [a["backend"] for a in cell["artifacts"]] == ["onnxruntime"]
    assert (root / "dist" / "celu" / "fp32" / "both-cpu@onnxruntime" / "manifest.json").is_file()
    assert not (root / "cache" / "entries").exists() or not list((root / "cache" / "entries").iterdir())  # not cached
    log = (root / "dist" / cell["log"]).read_text()
    assert "Traceback" in log and "Celu" in log  # the failed backend's error, with its traceback
    assert "(+" in log  # per-stage times


def test_the_gate_fails_a_release_with_failed_or_missing_cells(partial, tmp_path):
    root, _ = partial
    baseline = tmp_path / "baseline"
    assert main(["baseline", "update", str(root / "dist"), str(baseline)]) == 0
    junit = tmp_path / "r.xml"
    # the current release is partial (tvm failed): a backend the baseline never had is reported, not failed
    assert main(["compare", str(baseline), str(root / "dist"), "--junit", str(junit)]) == 0
    # a cell that errors fails the gate, named in JUnit
    index = json.loads((root / "dist" / "index.json").read_text())
    broken = tmp_path / "broken"
    shutil.copytree(root / "dist", broken)
    index["cells"][0]["status"] = "error"
    index["cells"][0]["message"] = "the worker crashed (signal 11)"
    (broken / "index.json").write_text(json.dumps(index))
    assert main(["compare", str(baseline), str(broken), "--junit", str(junit)]) == 1
    suite = validate_junit(junit.read_text())
    failed = [c for c in suite.iter("testcase") if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["celu/fp32/both-cpu:build"]
    assert "signal 11" in failed[0].find("failure").get("message")
    # a cell the release no longer lists fails unless the removal is accepted
    gone = tmp_path / "gone"
    shutil.copytree(root / "dist", gone)
    shutil.rmtree(gone / "celu")
    index = json.loads((gone / "index.json").read_text())
    index["cells"] = []
    (gone / "index.json").write_text(json.dumps(index))
    (gone / "keep").mkdir()
    shutil.copytree(root / "dist" / "celu", gone / "keep" / "celu")  # another cell, so profiles remain
    profile = next((gone / "keep").rglob("profile.json"))
    profile.write_text(profile.read_text().replace('"celu"', '"other"'))
    assert main(["compare", str(baseline), str(gone)]) == 1
    assert main(["compare", str(baseline), str(gone), "--accept-removed"]) == 0


def test_an_estimated_only_change_on_a_measured_cell_is_reported_not_gated(partial, tmp_path, capsys):
    root, _ = partial
    baseline = tmp_path / "baseline"
    assert main(["baseline", "update", str(root / "dist"), str(baseline)]) == 0
    current = tmp_path / "current"
    shutil.copytree(root / "dist", current)
    path = next(current.rglob("profile.json"))
    data = json.loads(path.read_text())
    assert data["latency_method"] == "measured:host" and data["energy_method"].startswith("estimated")
    data["energy_mj"] *= 1.5
    data["estimate_fixed"]["energy_mj"] *= 1.5
    path.write_text(json.dumps(data))
    summary = tmp_path / "s.md"
    assert main(["compare", str(baseline), str(current), "--summary", str(summary)]) == 0
    text = summary.read_text()
    assert "| energy | **info** |" in text and "reported, not gated" in text
    assert main(["compare", str(baseline), str(current), "--gate-estimated"]) == 1


def test_calibration_is_in_the_key_of_int8_cells_only_and_checked_while_planning(tmp_path, conv_traced, capsys):
    onnx.save(conv_traced.onnx_model, tmp_path / "conv.onnx")
    name = conv_traced.signature.inputs[0].name
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", **{name: rng.normal(size=(8, 3, 16, 16)).astype(np.float32)})
    np.savez(tmp_path / "verify.npz", **{name: rng.normal(size=(4, 3, 16, 16)).astype(np.float32)})
    file = _release(tmp_path, 'targets = ["host", "intel-npu-3720"]\n[[model]]\npath = "conv.onnx"\n'
                              'precision = ["fp16", "int8"]\ncalibration = "calib.npz"\nsamples = "verify.npz"\n'
                              '[profile]\nenabled = false\n'
                              '[target.host]\nbackend = "onnxruntime"\n')
    from compiler.release.config import load_release
    from compiler.release.driver import plan_release

    before = {c.label: c.key for c in plan_release(load_release(file))}
    np.savez(tmp_path / "calib.npz", **{name: rng.normal(size=(8, 3, 16, 16)).astype(np.float32)})
    after = {c.label: c.key for c in plan_release(load_release(file))}
    changed = sorted(label for label in before if before[label] != after[label])
    assert changed == ["conv/int8/host", "conv/int8/intel-npu-3720"]  # the fp16 cells did not read it
    # without `samples`, the calibration set is what every cell verifies on: then every cell reads it
    file.write_text(file.read_text().replace('samples = "verify.npz"\n', ""))
    before = {c.label: c.key for c in plan_release(load_release(file))}
    np.savez(tmp_path / "calib.npz", **{name: rng.normal(size=(8, 3, 16, 16)).astype(np.float32)})
    assert all(before[c.label] != c.key for c in plan_release(load_release(file)))
    assert all(c.request.backend == "onnxruntime" for c in plan_release(load_release(file)) if c.target.id == "host")
    # bad data is refused while planning, naming the release key, before anything is traced or written
    np.savez(tmp_path / "calib.npz", wrong_name=np.zeros((4, 3, 16, 16), np.float32))
    code = _run(file, "-o", tmp_path / "dist", "--cache", tmp_path / "cache")
    err = capsys.readouterr().err
    assert code == 2 and "model[0] (conv).calibration:" in err and "--calibration" not in err
    assert not (tmp_path / "dist").exists()


def test_a_warm_release_into_an_empty_dist_reuses_the_profiles(tmp_path, capsys):
    file = _release(tmp_path, 'targets = ["host"]\n[[model]]\npath = "example"\n[target.host]\nbackend = "onnxruntime"\n'
                              '[profile]\nruns = 20\nbudget_s = 1.0\n')
    assert _run(file, "-o", tmp_path / "d1", "--cache", tmp_path / "cache") == 0
    capsys.readouterr()
    assert _run(file, "-o", tmp_path / "d2", "--cache", tmp_path / "cache") == 0
    err = capsys.readouterr().err
    assert "profiling" not in err and "kept the measurements of 1 unchanged artifact" in err
    index = json.loads((tmp_path / "d2" / "index.json").read_text())
    assert index["summary"]["cached"] == 1
    assert all(a["profile"]["reused_measurement"] for c in index["cells"] for a in c["artifacts"])


def test_an_int8_build_does_not_replace_an_fp32_artifact(tmp_path, capsys):
    model = load_model("example")
    build(model, BuildOptions(["host"], tmp_path, backend="onnxruntime", measure_latency=False))
    code = main(["build", "example", "-t", "host", "--backend", "onnxruntime", "--precision", "int8", "-o", str(tmp_path)])
    assert code == 2 and "holds a fp32 artifact and this build makes int8" in capsys.readouterr().err
    assert json.loads((tmp_path / "example" / "host" / "manifest.json").read_text())["precision"] == "fp32"
    assert main(["build", "example", "-t", "host", "--backend", "onnxruntime", "--precision", "int8", "-o",
                 str(tmp_path), "--force", "-q"]) == 0


def test_inspect_prints_a_models_inputs(tmp_path, conv_pt2, capsys):
    assert main(["inspect", str(conv_pt2)]) == 0
    out = capsys.readouterr().out
    assert "input   x" in out and "batchx3x16x16" in out and "float32" in out


def test_a_near_zero_reference_is_flagged(tmp_path):
    import torch

    from compiler.frontend import trace_module

    class Vanishing(torch.nn.Module):
        def forward(self, x):
            return torch.relu(x) * 1e-20

    model = trace_module(Vanishing(), (torch.zeros(2, 4),), name="vanishing")
    (result,) = build(model, BuildOptions(["host"], tmp_path, backend="onnxruntime", measure_latency=False))
    assert result.status == "verified" and any("near zero" in w for w in result.warnings)
    manifest = json.loads((tmp_path / "vanishing" / "host" / "manifest.json").read_text())
    assert any("near zero" in note for note in manifest["notes"])


def test_the_cache_is_pruned_to_its_cap_after_a_release(tmp_path, capsys):
    file = _release(tmp_path, 'targets = ["host", "intel-npu-3720"]\n[[model]]\npath = "example"\n'
                              '[target.host]\nbackend = "onnxruntime"\n[profile]\nenabled = false\n')
    assert _run(file, "-o", tmp_path / "dist", "--cache", tmp_path / "cache", "--cache-max-gb", "0.0001") == 0
    assert "least recently used" in capsys.readouterr().err
    assert len(list((tmp_path / "cache" / "entries").iterdir())) <= 1
