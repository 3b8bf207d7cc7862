"""The Rockchip RKNN plugin (examples/rknn-plugin), installed as a vendor ships it, building real .rknn files with
rknn-toolkit2 in its isolated environment and verifying them in Rockchip's simulator.

The environment is made by ``chipfit toolchain install rknn`` (.ci/setup runs it): a test that finds it missing
fails, naming the command; it never skips.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from calibration import compare_outputs

PLUGIN = Path(__file__).resolve().parents[2] / "examples" / "rknn-plugin"


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    """The plugin installed as a real package (dist-info with its entry points) into a folder of its own."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "-t", str(target), str(PLUGIN)], check=True, capture_output=True)
    return target


@pytest.fixture(scope="module")
def rknn(plugin_path):
    """The installed plugin's backend, its environment checked complete (else the test fails with the fix)."""
    sys.path.insert(0, str(plugin_path))
    before = os.environ.get("PYTHONPATH")
    # chipfit's worker processes (the profiler's) find the plugin as this process does
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(plugin_path), before) if p)
    try:
        from targets.registry import backend_registry

        backend = backend_registry().get("rknn")
        state = backend.environment_state()
        assert state.complete, (f"the RKNN environment is not ready at {state.path}: {'; '.join(state.problems)}; "
                                "run `bash .ci/setup` (it runs `chipfit toolchain install rknn`)")
        yield backend
    finally:
        sys.path.remove(str(plugin_path))
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def _chipfit(*args: str, plugin_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[2]), str(plugin_path)]))
    return subprocess.run([sys.executable, "-m", "compiler.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def test_toolchain_list_shows_the_environment_with_its_versions(plugin_path, rknn):
    listed = _chipfit("toolchain", "list", plugin_path=plugin_path)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "rknn: complete" in listed.stdout
    assert "rknn-toolkit2: 2.5.0" in listed.stdout and "onnx: 1.18.0" in listed.stdout
    for spec in ("rk3588", "rk3576"):
        validated = _chipfit("targets", "validate", str(plugin_path / "chipfit_rknn" / "targets" / f"{spec}.toml"),
                             plugin_path=plugin_path)
        assert validated.returncode == 0, validated.stdout


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_rknn_built_in_its_environment_and_verified_in_the_simulator(rknn, tmp_path, precision, monkeypatch):
    from compiler.build import BuildOptions, build
    from compiler.frontend import load_model
    from targets.manifest import read_artifact

    model = load_model("example")
    monkeypatch.chdir(tmp_path)  # a relative output folder: the isolated process runs elsewhere
    (result,) = build(model, BuildOptions(targets=["rk3588"], out_dir="out", precision=precision))
    assert result.status == "verified", result.message
    artifact = read_artifact(Path(result.artifact))
    manifest = artifact.manifest
    assert (Path(result.artifact) / "model.rknn").stat().st_size > 1000 and manifest.primary_file == "model.rknn"
    assert not artifact.file_problems()
    # verified by Rockchip's simulator, labelled a proxy, and never timed as the chip's latency
    numerics = manifest.numerics
    assert numerics.proxy and "simulator" in numerics.runner and "checks numerics, not NPU speed" in numerics.runner
    assert result.latency is None
    tolerance = numerics.tolerance
    assert all(e.cosine >= tolerance.min_cosine for e in numerics.outputs)
    # the isolated environment's versions are in the manifest
    assert manifest.toolchain["env:rknn:rknn-toolkit2"] == "2.5.0"
    assert manifest.toolchain["env:rknn:onnx"] == "1.18.0" and manifest.toolchain["onnx"] != "1.18.0"
    status = json.loads((Path(result.artifact) / "sdk" / "status.json").read_text())
    assert status["ok"] and status["settings"]["do_quantization"] == (precision == "int8")
    assert (Path(result.artifact) / "sdk" / "log.txt").stat().st_size > 0  # the SDK's own log is kept
    if precision == "int8":  # RKNN's own quantizer, on chipfit's calibration samples
        assert manifest.calibration is not None and manifest.calibration.samples == 64
        assert len(list((Path(result.artifact) / "sdk" / "calibration").glob("*.npy"))) == 64
        assert np.load(Path(result.artifact) / "sdk" / "calibration" / "0000_image.npy").shape == (1, 1, 8, 8)
    # inputs other than the verification inputs: the runner runs the simulator again from the kept hand-off
    plan = rknn.plan_run(Path(result.artifact), manifest.backend.options, manifest.signature,
                         _target("rk3588"), None)
    # (in the calibrated range: int8 clips inputs far outside what RKNN's quantizer saw, as a real NPU would)
    fresh = {"image": (model.samples["image"][40:41] * 0.9).astype(np.float32)}
    got = plan.runner.run(fresh)
    (error,) = compare_outputs(model.reference(fresh), got)
    assert error.cosine >= tolerance.min_cosine


def _target(target_id: str):
    from targets.registry import target_registry

    return target_registry().get(target_id)


def test_profile_estimates_from_the_spec_and_never_times_the_simulator(rknn, tmp_path):
    from compiler.build import BuildOptions, build
    from compiler.frontend import load_model
    from profiles.profile import profile_artifacts
    from targets.request import ProfileRequest

    (result,) = build(load_model("example"), BuildOptions(targets=["rk3576"], out_dir=tmp_path, precision="fp16",
                                                         measure_latency=False))
    assert result.status == "verified", result.message
    run = profile_artifacts(result.artifact, ProfileRequest(runs=5, min_runs=3, warmup=1, budget_s=1.0))
    assert not run.errors, run.errors
    (profile,) = run.profiles
    assert profile.latency_method.startswith("estimated") and profile.energy_method.startswith("estimated:")
    assert profile.latency_ms_p50 > 0
