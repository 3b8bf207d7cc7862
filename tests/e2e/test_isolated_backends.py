"""Isolated backends whose SDK process crashes or hangs: the cell fails with the reason, the other cells build,
chipfit stays up. And the environment's packages enter the build cache key.

The plugins are real: a package (dist-info with entry points) whose backends subclass `IsolatedBackend`, a real
virtual environment made by `install_environment`, and SDK scripts that really kill themselves with SIGSEGV or
sleep past their timeout.
"""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

RK3588 = (Path(__file__).resolve().parents[2] / "examples" / "rknn-plugin" / "src" / "chipfit_rknn" / "targets"
          / "rk3588.toml")

BACKENDS = '''
from pathlib import Path

from compiler.backends import BACKEND_API_VERSION
from compiler.isolated import Environment, IsolatedBackend, isolated_capabilities

HERE = Path(__file__).resolve().parent
BARE = Environment(name="chipfit-test-bare")  # no packages: the SDK scripts need only the standard library


class Faulty(IsolatedBackend):
    api_version = BACKEND_API_VERSION
    environment = BARE
    capabilities = isolated_capabilities(precisions=("fp16",))
    timeout_s = 3.0


class Segv(Faulty):
    name = "segv-sdk"
    sdk_script = HERE / "segv_sdk.py"


class Hang(Faulty):
    name = "hang-sdk"
    sdk_script = HERE / "hang_sdk.py"


segv = Segv()
hang = Hang()
'''

SEGV = '''
import os, signal

def main(request, folder):
    print("about to crash like a vendor SDK", flush=True)
    os.kill(os.getpid(), signal.SIGSEGV)
'''

HANG = '''
import time

def main(request, folder):
    print("waiting forever", flush=True)
    time.sleep(600)
'''


def _spec(path: Path, target_id: str, backend: str) -> None:
    text = RK3588.read_text().replace('id = "rk3588"', f'id = "{target_id}"')
    text = text.replace('backends = ["rknn"]', f'backends = ["{backend}"]').replace('default_precision = "int8"',
                                                                                  'default_precision = "fp16"')
    text = text.replace('[backend_options.rknn]\ntarget_platform = "rk3588"\n', "")
    path.write_text(text)


@pytest.fixture(scope="module")
def faulty_plugin(tmp_path_factory):
    root = tmp_path_factory.mktemp("faulty")
    package = root / "faulty_sdks"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "backends.py").write_text(textwrap.dedent(BACKENDS))
    (package / "segv_sdk.py").write_text(textwrap.dedent(SEGV))
    (package / "hang_sdk.py").write_text(textwrap.dedent(HANG))
    for target_id, backend in (("segv-npu", "segv-sdk"), ("hang-npu", "hang-sdk")):
        _spec(package / f"{target_id}.toml", target_id, backend)
        (package / f"spec_{target_id.replace('-', '_')}.py").write_text(
            f"from targets.spec import load_spec\n\ndef spec():\n    return load_spec({str(package / f'{target_id}.toml')!r})\n")
    dist = root / "faulty_sdks-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: faulty-sdks\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent("""
        [chipfit.backends]
        segv-sdk = faulty_sdks.backends:segv
        hang-sdk = faulty_sdks.backends:hang

        [chipfit.targets]
        segv-npu = faulty_sdks.spec_segv_npu:spec
        hang-npu = faulty_sdks.spec_hang_npu:spec
        """))
    return root


@pytest.fixture
def installed(faulty_plugin, tmp_path, monkeypatch):
    """The plugin on the path and its (bare) environment made for real under a toolchains folder of this test."""
    from compiler.isolated import install_environment
    from targets.registry import backend_registry

    monkeypatch.syspath_prepend(str(faulty_plugin))
    monkeypatch.setenv("CHIPFIT_TOOLCHAINS_DIR", str(tmp_path / "toolchains"))
    segv = backend_registry().get("segv-sdk")
    state = install_environment(segv.environment)
    assert state.complete, state.problems
    return backend_registry(), state


def test_a_crash_or_a_hang_fails_its_cell_with_the_reason_and_the_others_build(installed, tmp_path):
    from compiler.build import BuildOptions, build
    from compiler.frontend import load_model

    results = {r.target: r for r in build(load_model("example"), BuildOptions(
        targets=["segv-npu", "hang-npu", "host"], out_dir=tmp_path / "out", measure_latency=False))}
    assert results["host"].status == "verified", results["host"].message
    segv, hang = results["segv-npu"], results["hang-npu"]
    assert segv.status == "error" and segv.stage == "LOWER"
    assert "died with SIGSEGV" in segv.message and "about to crash like a vendor SDK" in segv.message
    assert "Fatal Python error: Segmentation fault" in segv.message  # faulthandler's stack, from the kept log
    assert hang.status == "error" and hang.stage == "LOWER"
    assert "did not finish within 3 s and was killed" in hang.message and "waiting forever" in hang.message
    assert hang.build_seconds < 30
    assert not (tmp_path / "out" / "example" / "segv-npu").exists()  # no artifact left in place


def test_the_environments_packages_enter_the_cache_key_and_the_manifest(installed):
    from compiler.release.cache import toolchain_digest
    from compiler.toolchain import toolchain_versions

    registry, state = installed
    segv = registry.get("segv-sdk")
    before = toolchain_digest([segv])
    assert toolchain_versions([segv])["env:chipfit-test-bare:python"] == state.python
    # a package appears in the environment (pip, as a vendor upgrading their SDK would): another key
    subprocess.run([str(state.python_exe), "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check",
                    "tomli-w"], check=True, capture_output=True)
    assert "tomli-w" in segv.environment_state().packages
    assert toolchain_digest([segv]) != before


def test_a_missing_environment_fails_the_build_naming_the_command(faulty_plugin, tmp_path, monkeypatch):
    from compiler.build import BuildOptions, build
    from compiler.frontend import load_model

    monkeypatch.syspath_prepend(str(faulty_plugin))
    monkeypatch.setenv("CHIPFIT_TOOLCHAINS_DIR", str(tmp_path / "empty"))
    (result,) = build(load_model("example"), BuildOptions(targets=["segv-npu"], out_dir=tmp_path / "out"))
    assert result.status == "error" and "run `chipfit toolchain install segv-sdk`" in result.message
