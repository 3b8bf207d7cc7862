"""`chipfit release --executor dask` on a loopback cluster of two worker processes that see different host ids
and scratch folders: the same dist/ as the local executor, crash isolation, the shared cache's rules (cache
hits, toolchain refusal, per-host staging, an fsspec URL), routing by resources. Real builds, real Dask."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest

distributed = pytest.importorskip("distributed")

from compiler.artifact import STAGING_MARK  # noqa: E402
from compiler.cli import main  # noqa: E402
from compiler.release.cache import BuildCache  # noqa: E402
from compiler.release.config import load_release  # noqa: E402
from compiler.release.driver import ReleaseOptions, release  # noqa: E402

SPECS = Path(__file__).resolve().parents[3] / "targets" / "specs"
HOSTS = ("dask-host-0", "dask-host-1")

PLUGINS = """
import os
import signal
from dataclasses import replace

from compiler.backends.onnxruntime import OnnxRuntimeBackend
from compiler.backends.onnxruntime.options import SCHEMA


class Named(OnnxRuntimeBackend):
    def __init__(self, name):
        self.name = name
        self.options_schema = replace(SCHEMA, backend=name)


class Segfaulting(Named):
    def lower(self, job):
        os.kill(os.getpid(), signal.SIGSEGV)  # what a crashing native SDK does to its process


class NeedsSdk(Named):
    capabilities = replace(OnnxRuntimeBackend.capabilities, build_resources=True)

    def build_resources(self, target):
        return {"vendor-sdk": 1}


segv = Segfaulting("segv-runtime")
sdk = NeedsSdk("sdk-runtime")
good = Named("good-runtime")
"""


def _plugin_site(root: Path, version: str) -> Path:
    """The test backends, installed (a dist-info with entry points) into a folder of their own."""
    root.mkdir(parents=True)
    dist = root / f"chipfit_test_plugins-{version}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: chipfit-test-plugins\nVersion: {version}\n")
    (dist / "top_level.txt").write_text("chipfit_test_plugins\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent("""
        [chipfit.backends]
        segv-runtime = chipfit_test_plugins:segv
        sdk-runtime = chipfit_test_plugins:sdk
        good-runtime = chipfit_test_plugins:good
        """))
    (root / "chipfit_test_plugins.py").write_text(PLUGINS)
    return root


def _spec(folder: Path, target_id: str, backend: str = "onnxruntime") -> Path:
    """The Intel NPU spec with ``backend`` (an ONNX Runtime backend under another name) as its only backend."""
    text = (SPECS / "intel-npu-3720.toml").read_text().replace('id = "intel-npu-3720"', f'id = "{target_id}"')
    text = text.replace('backends = ["openvino"]', f'backends = ["{backend}"]')
    text = re.sub(r"\[backend_options\.openvino\]\n.*?\n\n", f"[backend_options.{backend}]\nexecution_provider = "
                  '"OpenVINOExecutionProvider"\ngraph_optimization = "basic"\n\n', text, count=1, flags=re.S)
    path = folder / f"{target_id}.toml"
    path.write_text(text)
    return path


def _become(name: str) -> int:
    """Run on a Dask worker: from now on it (and the build processes it starts) is host ``name``."""
    os.environ["CHIPFIT_HOST_ID"] = name
    return os.getpid()


def _set_path(value: str) -> None:
    os.environ["PYTHONPATH"] = value


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    """Two Dask worker processes on 127.0.0.1 with the test backends installed, as hosts dask-host-0 and -1."""
    root = tmp_path_factory.mktemp("farm")
    site, other = _plugin_site(root / "site", "0.1"), _plugin_site(root / "site-0.2", "0.2")
    path = os.pathsep.join([str(site)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(site))  # the driver sees the same plugins as the workers
        mp.setenv("PYTHONPATH", path)
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                           dashboard_address=None)
        client = distributed.Client(cluster)
        try:
            workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
            pids = {w: client.run(_become, name, workers=[w])[w] for w, name in zip(workers, HOSTS)}
            yield {"client": client, "scheduler": cluster.scheduler_address, "workers": workers, "pids": pids,
                   "path": path, "other_site": other}
        finally:
            client.close()
            cluster.close()


def _release_file(folder: Path, text: str) -> Path:
    (folder / "release.toml").write_text(text)
    return folder / "release.toml"


def _run(file: Path, dist: Path, cache, farm=None, **kw):
    options = ReleaseOptions(out_dir=dist, cache_dir=cache, jobs=2, profile=False,
                             executor="dask" if farm else "local", scheduler=farm["scheduler"] if farm else None, **kw)
    return release(load_release(file), options)


def _files(dist: Path) -> dict[str, str]:
    """Every file of a dist/ with its sha256, but manifests, index and logs (compared on their own) and the files
    an artifact's manifest says vary per build (``reproducibility.excluded``: QNN's context binary), which its
    content digest, compared with the manifests, leaves out."""
    varying = {(m.parent / name).resolve() for m in dist.rglob("manifest.json")
               for name in json.loads(m.read_text()).get("reproducibility", {}).get("excluded", {})}
    return {p.relative_to(dist).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(dist.rglob("*"))
            if p.is_file() and p.name not in ("manifest.json", "index.json", "summary.md") and "logs" not in p.parts
            and p.resolve() not in varying}


def _timeless(data):
    """JSON without what measures time (build seconds, stage timings, creation dates)."""
    if isinstance(data, dict):
        return {k: _timeless(v) for k, v in data.items() if k not in ("seconds", "build_seconds", "created", "built")
                and k != "manifest_sha256"}
    if isinstance(data, list):
        return [_timeless(v) for v in data]
    return data


@pytest.fixture(scope="module")
def matched(farm, tmp_path_factory, conv_traced):
    """One release (the bundled model and an ONNX file with its calibration data, on an installed target and
    on a spec file) built on the farm, then by the local executor into the same cache path emptied."""
    root = tmp_path_factory.mktemp("matched")
    onnx.save(conv_traced.onnx_model, root / "conv.onnx")
    name = conv_traced.signature.inputs[0].name
    np.savez(root / "calib.npz", **{name: np.random.default_rng(0).normal(size=(8, 3, 16, 16)).astype(np.float32)})
    _spec(root, "test-npu")
    file = _release_file(root, textwrap.dedent("""
        targets = ["snapdragon-8gen3", "test-npu.toml"]
        [[model]]
        path = "example"
        [[model]]
        name = "conv"
        path = "conv.onnx"
        calibration = "calib.npz"
        """))
    cache = root / "cache"
    on_farm = _run(file, root / "dist-dask", cache, farm)
    cache.rename(root / "cache-dask")
    local = _run(file, root / "dist-local", cache)
    return {"root": root, "file": file, "cache": root / "cache-dask", "dask": on_farm, "local": local}


def test_the_farm_builds_the_same_dist_as_the_local_executor(matched, farm):
    root = matched["root"]
    assert matched["dask"].ok and matched["local"].ok, [(o.cell.label, o.message) for o in matched["dask"].outcomes]
    assert [o.status for o in matched["dask"].outcomes] == ["built"] * 4
    dask_dist, local_dist = root / "dist-dask", root / "dist-local"
    assert _files(dask_dist) == _files(local_dist)  # artifacts byte for byte, the same logs
    assert sorted(p.name for p in (dask_dist / "logs").iterdir()) == sorted(p.name for p in (local_dist / "logs").iterdir())
    for manifest in dask_dist.rglob("manifest.json"):
        ours = json.loads(manifest.read_text())
        assert _timeless(ours) == _timeless(json.loads((local_dist / manifest.relative_to(dask_dist)).read_text()))
    conv = json.loads((dask_dist / "conv" / "fp16" / "test-npu" / "manifest.json").read_text())
    # the worker built from its copies of the inputs; the manifest names the user's files
    assert conv["model"]["source"] == str(root / "conv.onnx") and conv["target"]["spec_file"] == str(root / "test-npu.toml")
    # the index, but the driver's host facts (its load at the time)
    index = {n: {k: v for k, v in json.loads((root / n / "index.json").read_text()).items() if k != "host"}
             for n in ("dist-dask", "dist-local")}
    assert _timeless(index["dist-dask"]) == _timeless(index["dist-local"])
    # the inputs went through the cache, content-addressed; each host staged in its own folder
    cache = matched["cache"]
    assert len(list((cache / "inputs").glob("*.tar"))) == 3  # conv.onnx, calib.npz, test-npu.toml
    assert {p.name for p in (cache / "tmp").iterdir()} <= set(HOSTS)
    scratch = farm["client"].run(lambda dask_worker: dask_worker.local_directory)
    assert len(set(scratch.values())) == 2


def test_a_rerun_on_the_farm_is_all_cache_hits(matched, farm, tmp_path):
    report = _run(matched["file"], tmp_path / "dist", matched["cache"], farm)
    assert report.ok and [o.status for o in report.outcomes] == ["cached"] * 4


def test_a_segfaulting_plugin_fails_its_cell_and_the_workers_survive(farm, tmp_path):
    _spec(tmp_path, "segv-npu", "segv-runtime")
    _spec(tmp_path, "sdk-npu", "sdk-runtime")
    file = _release_file(tmp_path, 'targets = ["segv-npu.toml", "sdk-npu.toml", "snapdragon-8gen3", "intel-npu-3720"]\n'
                                   '[[model]]\npath = "example"\n')
    report = _run(file, tmp_path / "dist", tmp_path / "cache", farm)
    by = {o.cell.target.id: o for o in report.outcomes}
    assert by["segv-npu"].status == "error" and "signal 11" in by["segv-npu"].message
    assert "dask-host-" in by["segv-npu"].message  # which worker it crashed on
    # no worker offers what the vendor SDK's backend needs: the cell fails at once, saying so
    assert by["sdk-npu"].status == "error" and "vendor-sdk=1" in by["sdk-npu"].message
    assert "--resources" in by["sdk-npu"].message
    assert by["snapdragon-8gen3"].status == "built" and by["intel-npu-3720"].status == "built"
    client = farm["client"]
    assert sorted(client.scheduler_info(n_workers=-1)["workers"]) == farm["workers"]
    assert client.run(os.getpid) == farm["pids"]  # the same two worker processes, alive
    assert len(list((tmp_path / "cache" / "entries").iterdir())) == 2  # the crash committed nothing


def test_a_worker_with_another_toolchain_refuses_the_cell(farm, tmp_path):
    _spec(tmp_path, "good-npu", "good-runtime")
    file = _release_file(tmp_path, 'targets = ["good-npu.toml"]\n[[model]]\npath = "example"\n')
    client = farm["client"]
    # the workers' build processes now load version 0.2 of the plugin; the key was computed with 0.1
    client.run(_set_path, farm["path"].replace(str(farm["other_site"].parent / "site"), str(farm["other_site"])))
    try:
        report = _run(file, tmp_path / "dist", tmp_path / "cache", farm)
    finally:
        client.run(_set_path, farm["path"])
    (outcome,) = report.outcomes
    assert outcome.status == "error" and "another toolchain" in outcome.message
    assert "backend:good-runtime:package: 'chipfit-test-plugins 0.1' for the key, 'chipfit-test-plugins 0.2' here" \
        in outcome.message
    assert not (tmp_path / "cache" / "entries").exists()  # nothing written under the key


def test_another_hosts_staging_folders_survive_a_reap(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for host in ("here", "far-away"):
        (tmp_path / "tmp" / host / f"cell{STAGING_MARK}{dead.pid}-0badc0de").mkdir(parents=True)
    fresh = BuildCache(tmp_path, host="here").staging("next")
    assert not (tmp_path / "tmp" / "here" / f"cell{STAGING_MARK}{dead.pid}-0badc0de").exists()  # its own: reaped
    assert (tmp_path / "tmp" / "far-away" / f"cell{STAGING_MARK}{dead.pid}-0badc0de").is_dir()  # another host's: kept
    assert fresh.parent == tmp_path / "tmp" / "here"


def test_the_cache_through_a_file_url(farm, tmp_path):
    file = _release_file(tmp_path, 'targets = ["snapdragon-8gen3", "intel-npu-3720"]\n[[model]]\npath = "example"\n')
    url = f"file://{tmp_path / 'store'}"
    report = _run(file, tmp_path / "dist", url, farm)
    assert report.ok and [o.status for o in report.outcomes] == ["built"] * 2
    markers = sorted((tmp_path / "store" / "entries").glob("*/entry.json"))
    assert len(markers) == 2
    for marker in markers:
        record = json.loads(marker.read_text())
        assert record["commit"].startswith(HOSTS) and (marker.parent / record["commit"]).is_dir()
    # another run, the local executor, same URL: every cell from the store, the same artifacts
    again = _run(file, tmp_path / "dist2", url)
    assert again.ok and [o.status for o in again.outcomes] == ["cached"] * 2
    assert _files(tmp_path / "dist") == _files(tmp_path / "dist2")
    # put-if-absent: a second commit of a key keeps the first one's entry
    from compiler.release.url_cache import UrlBuildCache

    key = json.loads(markers[0].read_text())["key"]
    store = UrlBuildCache(url, tmp_path / "mirror", host="late")
    entry, _ = store.lookup(key)
    first = json.loads(markers[0].read_text())["commit"]
    store.commit(key, {name: entry.path / name for name in entry.artifacts}, {"cell": "again"})
    assert json.loads(markers[0].read_text())["commit"] == first
    assert [p.name for p in markers[0].parent.iterdir() if p.is_dir()] == [first]  # the loser's upload is gone


def test_without_dask_installed_the_executor_says_what_to_install(tmp_path):
    file = _release_file(tmp_path, 'targets = ["host"]\n[[model]]\npath = "example"\n')
    code = ("import sys; sys.modules['distributed'] = None\nfrom compiler.cli import main\n"
            f"sys.exit(main(['release', {str(file)!r}, '-o', {str(tmp_path / 'd')!r}, '--executor', 'dask']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "pip install 'chipfit[dask]'" in done.stderr
    assert not (tmp_path / "d" / "index.json").exists()
    assert main(["release", str(file), "-o", str(tmp_path / "d"), "--scheduler", "tcp://127.0.0.1:1"]) == 2
