"""A vendor's package, installed into the test environment: it registers, validates and passes the kit;
broken plugins are reported by name while every other target keeps working."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TEMPLATE = Path(__file__).resolve().parents[2] / "examples" / "vendor-plugin"


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    """The template installed as a real package (dist-info with its entry points) into a folder of its own."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "-t", str(target), str(TEMPLATE)], check=True, capture_output=True)
    return target


def _env(*paths: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in paths)
    return env


def _chipfit(*args: str, env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "compiler.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def test_installed_template_registers_and_validates(plugin_path):
    listed = _chipfit("targets", env=_env(plugin_path))
    assert listed.returncode == 0 and "my-npu" in listed.stdout and "host" in listed.stdout
    spec = plugin_path / "my_npu" / "targets" / "my-npu.toml"
    validated = _chipfit("targets", "validate", str(spec), env=_env(plugin_path))
    assert validated.returncode == 0, validated.stdout
    assert "backend my-npu-runtime" in validated.stdout


def test_template_passes_the_conformance_kit(plugin_path, tmp_path):
    report, page = tmp_path / "conformance.json", tmp_path / "conformance.html"
    done = _chipfit("conformance", "-t", "my-npu", "--ops", "12", "--report", str(report), "--html", str(page), "-q",
                    env=_env(plugin_path))
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    (data,) = json.loads(report.read_text())
    assert data["target"] == "my-npu" and data["passed"] == data["total"] > 20
    assert data["stages"]["MISMATCH"]["pass_rate"] == 1.0
    assert "my-npu" in page.read_text()


def test_templates_own_tests_pass(plugin_path):
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(TEMPLATE / "tests")],
                          capture_output=True, text=True, env=_env(plugin_path), timeout=600, cwd=TEMPLATE)
    assert done.returncode == 0, done.stdout[-2000:]


def test_templates_own_tests_pass_for_a_board_reached_over_rpc(tmp_path):
    """A vendor whose board is reached over the RPC tracker keeps the template's tests as they are."""
    copy = tmp_path / "vendor-plugin"
    shutil.copytree(TEMPLATE, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    spec = copy / "src" / "my_npu" / "targets" / "my-npu.toml"
    text = spec.read_text()
    assert 'kind = "local"' in text
    spec.write_text(text.replace('kind = "local"', 'kind = "rpc"\nrpc_key = "my-board"'))
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "-t", str(site), str(copy)], check=True, capture_output=True)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(copy / "tests")],
                          capture_output=True, text=True, env=_env(site), timeout=600, cwd=copy)
    assert done.returncode == 0, done.stdout[-2000:]


def _only_backend(spec_text: str, backend: str) -> str:
    """The arm64 spec with ``backend`` as its only backend (the others' options dropped)."""
    return (spec_text.replace('backends = ["executorch", "tvm", "onnxruntime", "llamacpp"]', f'backends = ["{backend}"]')
            .replace("[backend_options.executorch]\ndelegate = \"xnnpack\"\n\n", "")
            .replace("[backend_options.tvm]", "[unused_tvm]").split("[unused_tvm]")[0]
            + spec_text.split("[backend_options.onnxruntime]")[1].split("\n\n", 1)[1])


def _fake_plugin(root: Path, name: str, entry_points: str, modules: dict[str, str]) -> None:
    dist = root / f"{name}-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(entry_points)
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))


def test_broken_plugins_are_named_and_the_rest_work(tmp_path):
    spec_text = (Path(__file__).resolve().parents[2] / "targets" / "specs" / "arm64-cortex-a76.toml").read_text()
    bad_spec = tmp_path / "typo.toml"
    bad_spec.write_text(spec_text.replace('id = "arm64-cortex-a76"', 'id = "typo-npu"\nclok_ghz = 2'))
    broken_spec = tmp_path / "needs-broken.toml"
    broken_spec.write_text(_only_backend(spec_text, "import-error-runtime").replace('id = "arm64-cortex-a76"',
                                                                                     'id = "needs-broken-npu"'))
    _fake_plugin(tmp_path, "broken_vendor", textwrap.dedent(f"""
        [chipfit.targets]
        import-error-npu = no_such_module_anywhere:spec
        typo-npu = typo_plugin:spec

        needs-broken-npu = needs_broken:spec

        [chipfit.backends]
        old-api-runtime = old_api_plugin:backend
        import-error-runtime = import_error_backend:backend
        """), {
        "import_error_backend": "import vendor_sdk_that_is_not_installed\nbackend = None\n",
        "needs_broken": f"from targets.spec import load_spec\ndef spec():\n    return load_spec({str(broken_spec)!r})\n",
        "typo_plugin": f"from targets.spec import load_spec\ndef spec():\n    return load_spec({str(bad_spec)!r})\n",
        "old_api_plugin": """
            class Old:
                name = "old-api-runtime"
                api_version = 0
                consumes = "onnx"
                precisions = ("fp32",)
                graph_precisions = ()
                program_precisions = ()
                symbolic_dims = True
                accepted_domains = ()
                def versions(self): return {}
                def check_options(self, target): pass
                def lowers_onnx(self, model, precision): return True
                def lower(self, model, target, precision, workdir): raise RuntimeError
                def plan_run(self, *a): raise RuntimeError
            backend = Old()
            """,
    })
    env = _env(tmp_path)
    listed = _chipfit("targets", env=env)
    assert listed.returncode == 2  # some plugins failed to load...
    assert "host" in listed.stdout and "arm64-cortex-a76" in listed.stdout  # ...and the rest still work
    assert "target 'import-error-npu' failed to load" in listed.stderr and "ModuleNotFoundError" in listed.stderr
    assert "typo-npu" in listed.stderr and "unknown key 'clok_ghz'" in listed.stderr
    # a target whose backend's module raises ImportError: marked in the listing, refused by the kit before any work
    assert "target 'needs-broken-npu' is broken: backend 'import-error-runtime' does not load" in listed.stderr
    assert "vendor_sdk_that_is_not_installed" in listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith("needs-broken-npu"))
    assert "BROKEN" in row
    report = tmp_path / "conformance.json"
    refused = _chipfit("conformance", "-t", "needs-broken-npu", "--report", str(report), env=env)
    assert refused.returncode == 2 and not report.exists()
    assert "backend 'import-error-runtime' does not load" in refused.stderr and "conformance:" not in refused.stderr
    spec = tmp_path / "uses_old.toml"
    spec.write_text(_only_backend(spec_text, "old-api-runtime"))
    validated = _chipfit("targets", "validate", str(spec), env=env)
    assert "written for backend API version 0, this chipfit speaks version 3" in validated.stdout
    built = _chipfit("build", "example", "-t", "host", "--backend", "onnxruntime", "-o", str(tmp_path / "out"), "-q", env=env)
    assert built.returncode == 0, built.stderr[-1000:]
