"""`chipfit release` end to end: two models x three targets, real builds in worker processes.

One release is built for the module; each test then works on a copy of its folder and cache, so the
tests do not depend on each other's order.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from compiler.artifact import STAGING_MARK
from targets.manifest import find_artifacts
from compiler.cli import main
from compiler.release.config import load_release
from compiler.release.driver import ReleaseOptions, release
from compiler.release.pool import WorkerPool, spawn_worker
from tests.profiles.junit_schema import validate_junit

SPECS = Path(__file__).resolve().parents[3] / "targets" / "specs"
CHIPFIT = [sys.executable, "-m", "compiler.cli"]

RELEASE = """
name = "two-by-three"
targets = ["snapdragon-8gen3", "intel-npu-3720", "test-avx2.toml"]

[[model]]
name = "digits"
path = "example"

[[model]]
name = "conv"
path = "conv.onnx"
calibration = "calib.npz"

[thresholds]
latency = 1.15
[thresholds.target.test-avx2]
latency = 1.3

[target.test-avx2]
backend = "tvm"

[profile]
runs = 20
warmup = 2
budget_s = 1.0
"""


def setup_release(folder: Path, conv_traced) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(conv_traced.onnx_model, folder / "conv.onnx")
    name = conv_traced.signature.inputs[0].name
    rng = np.random.default_rng(0)
    np.savez(folder / "calib.npz", **{name: rng.normal(size=(16, 3, 16, 16)).astype(np.float32)})
    spec = (SPECS / "x86-64-avx2.toml").read_text().replace('id = "x86-64-avx2"', 'id = "test-avx2"')
    (folder / "test-avx2.toml").write_text(spec)
    (folder / "release.toml").write_text(RELEASE)
    return folder / "release.toml"


def copy_of(built: dict, tmp_path: Path) -> dict:
    """The module's release folder, dist and cache, copied: a test may change them freely."""
    root = tmp_path / "copy"
    shutil.copytree(built["root"], root, symlinks=True)
    return {"root": root, "file": root / "release.toml", "dist": root / "dist", "cache": root / "cache"}


class Spy:
    """Records which cells were given to a worker; runs the real one unless told otherwise."""

    def __init__(self, crash: str | None = None) -> None:
        self.cells: list[str] = []
        self.crash = crash

    def __call__(self, request: Path, log: Path, timeout: float) -> int:
        data = json.loads(request.read_text())["request"]
        label = f"{data['model']['name']}/{data['precision']}/{data['target']}"
        self.cells.append(label)
        if label == self.crash:  # a real crash: the worker process dies of SIGSEGV
            return subprocess.run([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]
                                  ).returncode
        return spawn_worker(request, log, timeout)


def no_worker(request: Path, log: Path, timeout: float) -> int:
    raise AssertionError(f"a worker was started for {request}: the cache should have answered")


def run(paths: dict, spawn=None, **kw):
    options = ReleaseOptions(out_dir=paths["dist"], cache_dir=paths["cache"], **kw)
    return release(load_release(paths["file"]), options, spawn=spawn)


@pytest.fixture(scope="module")
def built(tmp_path_factory, conv_traced):
    root = tmp_path_factory.mktemp("release")
    setup_release(root, conv_traced)
    paths = {"root": root, "file": root / "release.toml", "dist": root / "dist", "cache": root / "cache"}
    report = run(paths, jobs=2)
    return {**paths, "report": report}


def index(paths: dict) -> dict:
    return json.loads((paths["dist"] / "index.json").read_text())


def test_the_whole_matrix_builds_verifies_and_profiles(built):
    report = built["report"]
    assert report.ok, [(o.cell.label, o.message) for o in report.outcomes]
    data = index(built)
    assert data["summary"] | {"ok": True} == data["summary"]
    assert {(c["model"], c["precision"], c["target"]) for c in data["cells"]} == {
        (m, p, t) for m in ("digits", "conv") for p, t in (("int8", "snapdragon-8gen3"), ("fp16", "intel-npu-3720"),
                                                            ("fp32", "test-avx2"))}
    assert all(c["status"] == "built" for c in data["cells"])
    artifacts = [a for c in data["cells"] for a in c["artifacts"]]
    assert len(artifacts) == 6 and len(find_artifacts(built["dist"])) == 6
    for a in artifacts:
        path = built["dist"] / a["path"]
        assert path.parts[-3:-1] == (a["model"], a["precision"])  # dist/<model>/<precision>/<target>
        assert a["numerics"]["status"] == "verified" and len(a["manifest_sha256"]) == 64 and a["content_digest"]
        assert a["profile"]["latency_method"].startswith(("measured:host", "estimated:"))
        assert (path / "profile.json").is_file()
    tvm = [a for a in artifacts if a["backend"] == "tvm"]
    assert all(a["profile"]["latency_method"] == "measured:host" for a in tvm)  # runs here
    assert data["thresholds"]["target"] == {"test-avx2": {"latency": 1.3}}
    summary = (built["dist"] / "summary.md").read_text()
    assert summary.count("| digits |") == 3 and summary.count("| conv |") == 3


def test_a_second_run_hits_the_cache_and_starts_no_worker(built, tmp_path):
    paths = copy_of(built, tmp_path)
    report = run(paths, spawn=no_worker)
    assert report.ok and [o.status for o in report.outcomes] == ["cached"] * 6
    data = index(paths)
    assert data["summary"]["built"] == 0 and data["summary"]["cached"] == 6
    # the host measurements of the unchanged artifacts are kept, not re-timed
    profiles = [a["profile"] for c in data["cells"] for a in c["artifacts"]]
    assert all(p["reused_measurement"] for p in profiles)
    # into an empty dist: still no build, artifacts byte-identical to the cache's
    fresh = {**paths, "dist": tmp_path / "dist2"}
    report = run(fresh, spawn=no_worker, profile=False)
    assert report.ok and {a["manifest_sha256"] for c in index(fresh)["cells"] for a in c["artifacts"]} == \
        {a["manifest_sha256"] for c in data["cells"] for a in c["artifacts"]}


def test_changing_one_targets_spec_rebuilds_only_its_cells(built, tmp_path):
    paths = copy_of(built, tmp_path)
    spec = paths["root"] / "test-avx2.toml"
    spec.write_text(spec.read_text().replace('description = "', 'description = "(edited) ', 1))
    spy = Spy()
    report = run(paths, spawn=spy, profile=False)
    assert report.ok
    assert sorted(spy.cells) == ["conv/fp32/test-avx2", "digits/fp32/test-avx2"]
    notes = {o.cell.label: o.cache_note for o in report.outcomes if o.status == "built"}
    assert notes == {"conv/fp32/test-avx2": "changed: target_spec", "digits/fp32/test-avx2": "changed: target_spec"}


def test_a_corrupt_cache_entry_is_detected_and_rebuilt(built, tmp_path):
    paths = copy_of(built, tmp_path)
    cell = next(c for c in index(paths)["cells"] if c["target"] == "intel-npu-3720" and c["model"] == "digits")
    entry = paths["cache"] / "entries" / cell["key"]
    victim = next(p for p in entry.rglob("model.bin"))  # the OpenVINO IR's weights
    data = bytearray(victim.read_bytes())
    data[-5] ^= 0xFF
    victim.write_bytes(bytes(data))
    spy = Spy()
    report = run(paths, spawn=spy, profile=False)
    assert report.ok and spy.cells == ["digits/fp16/intel-npu-3720"]
    rebuilt = next(o for o in report.outcomes if o.cell.label == "digits/fp16/intel-npu-3720")
    assert "corrupt" in rebuilt.cache_note and "model.bin" in rebuilt.cache_note
    # the dist copy never took the corrupt bytes
    assert not any(a.file_problems() for a in find_artifacts(paths["dist"]))


def test_a_crashing_cell_is_reported_in_its_cell_and_the_others_finish(built, tmp_path, capsys):
    paths = copy_of(built, tmp_path)
    for cell in index(paths)["cells"]:
        if cell["model"] == "conv" and cell["target"] in ("intel-npu-3720", "snapdragon-8gen3"):
            shutil.rmtree(paths["cache"] / "entries" / cell["key"])
    spy = Spy(crash="conv/fp16/intel-npu-3720")
    report = run(paths, spawn=spy, profile=False)
    by = {o.cell.label: o for o in report.outcomes}
    assert not report.ok
    assert by["conv/fp16/intel-npu-3720"].status == "error" and "signal 11" in by["conv/fp16/intel-npu-3720"].message
    assert by["conv/int8/snapdragon-8gen3"].status == "built"
    assert sum(o.status == "cached" for o in report.outcomes) == 4
    data = index(paths)
    assert data["summary"]["error"] == 1 and not data["summary"]["ok"]
    # the crashed cell's old artifact is not left in dist looking current
    assert not (paths["dist"] / "conv" / "fp16" / "intel-npu-3720").exists()


def test_a_worker_killed_mid_cell_is_replaced_for_the_next_cell(built, tmp_path):
    paths = copy_of(built, tmp_path)
    doomed = [c for c in index(paths)["cells"] if c["model"] == "digits" and c["target"] != "test-avx2"]
    for cell in doomed:
        shutil.rmtree(paths["cache"] / "entries" / cell["key"])
    pool = WorkerPool(1)
    killed: list[int] = []

    def kill_first(request: Path, log: Path, timeout: float) -> int:
        if not killed:  # SIGKILL the serving worker while it builds the first cell
            def shoot() -> None:
                while not pool._all:
                    time.sleep(0.05)
                killed.append(pool._all[0].proc.pid)
                os.kill(killed[0], signal.SIGKILL)
            threading.Thread(target=shoot).start()
        return pool(request, log, timeout)

    try:
        report = run(paths, spawn=kill_first, profile=False)
    finally:
        pool.close()
    statuses = sorted(o.status for o in report.outcomes)
    assert statuses == ["built", "cached", "cached", "cached", "cached", "error"], statuses
    crashed = next(o for o in report.outcomes if o.status == "error")
    assert "signal 9" in crashed.message
    assert len(pool._all) == 2 and pool._all[1].proc.pid != killed[0]  # a fresh worker built the other cell


def test_compare_on_real_profiles_uses_the_release_thresholds(built, tmp_path, capsys):
    paths = copy_of(built, tmp_path)
    baseline = tmp_path / "baseline"
    assert main(["baseline", "update", str(paths["dist"]), str(baseline)]) == 0
    assert (baseline / "index.json").is_file()
    report = tmp_path / "r.xml"
    assert main(["compare", str(baseline), str(paths["dist"]), "--junit", str(report), "--all"]) == 0
    suite = validate_junit(report.read_text())
    assert int(suite.get("tests")) >= 6 * 4 and suite.get("failures") == "0"
    out = capsys.readouterr().out
    tvm_rows = [line for line in out.splitlines() if "test-avx2/tvm/fp32" in line and " latency " in line]
    assert tvm_rows and " 1.3 " in tvm_rows[0]  # the per-target threshold from release.toml
    # a real slowdown of one measured cell, one cell gone, one new: regression + removed + added, exit 1
    tvm = next(p for p in paths["dist"].rglob("profile.json") if "test-avx2" in str(p) and "digits" in str(p))
    profile = json.loads(tvm.read_text())
    profile["latency_samples_ms"] = [x * 1.5 for x in profile["latency_samples_ms"]]
    profile["latency_ms_p50"] *= 1.5
    tvm.write_text(json.dumps(profile))
    gone = paths["dist"] / "conv" / "int8" / "snapdragon-8gen3"
    moved = paths["dist"] / "conv" / "int8" / "other"
    data = json.loads((gone / "profile.json").read_text())
    gone.rename(moved)
    (moved / "profile.json").write_text(json.dumps({**data, "target": "other-chip"}))
    summary = tmp_path / "s.md"
    assert main(["compare", str(baseline), str(paths["dist"]), "--junit", str(report), "--summary", str(summary)]) == 1
    text = summary.read_text()
    assert "digits/test-avx2/tvm/fp32 | latency | **regression**" in text
    assert "Added: conv/other-chip/qnn/int8" in text and "Removed: conv/snapdragon-8gen3/qnn/int8" in text
    # the release still lists the vanished cell, so its absence fails the gate too (issue 18), beside the regression
    assert "conv/snapdragon-8gen3/qnn/int8 | present | **failed**" in text
    assert validate_junit(report.read_text()).get("failures") == "2"


SMALL = """
targets = ["snapdragon-8gen3", "intel-npu-3720"]
[[model]]
path = "example"
[profile]
enabled = false
"""


def _small(tmp_path: Path, text: str = SMALL) -> Path:
    (tmp_path / "release.toml").write_text(text)
    return tmp_path / "release.toml"


def _cli(args: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen(CHIPFIT + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_concurrent_runs_share_one_cache_safely(tmp_path):
    file = _small(tmp_path)
    cache = tmp_path / "cache"
    runs = [_cli(["release", str(file), "-o", str(tmp_path / f"dist{n}"), "--cache", str(cache)]) for n in (1, 2)]
    for proc in runs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    summaries = [json.loads((tmp_path / f"dist{n}" / "index.json").read_text())["summary"] for n in (1, 2)]
    # each cell was built once in all: the other run waited on the lock, then took the entry
    assert sum(s["built"] for s in summaries) == 2 and sum(s["cached"] for s in summaries) == 2
    assert len(list((cache / "entries").iterdir())) == 2
    assert not list((cache / "tmp").glob(f"*{STAGING_MARK}*"))
    for n in (1, 2):
        assert not any(a.file_problems() for a in find_artifacts(tmp_path / f"dist{n}"))


def test_a_killed_run_resumes_and_the_artifacts_are_reproducible(tmp_path):
    # jobs 1 builds in this order; the kill lands in the TVM cell, after the first cell is cached
    file = _small(tmp_path, SMALL.replace('"snapdragon-8gen3", "intel-npu-3720"',
                                          '"snapdragon-8gen3", "x86-64-avx2", "intel-npu-3720"'))
    cache, dist = tmp_path / "cache", tmp_path / "dist"
    proc = _cli(["release", str(file), "-o", str(dist), "--cache", str(cache)], start_new_session=True)
    deadline = time.monotonic() + 240
    while not ((cache / "entries").is_dir() and any((cache / "entries").iterdir())):
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the first cell never reached the cache"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its worker, mid-matrix
    proc.communicate()
    assert not (dist / "index.json").exists()
    done = _cli(["release", str(file), "-o", str(dist), "--cache", str(cache), "--check-reproducible"])
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err[-2000:]
    data = json.loads((dist / "index.json").read_text())
    assert data["summary"]["cached"] >= 1 and data["summary"]["cached"] + data["summary"]["built"] == 3
    checks = [c for cell in data["cells"] for c in cell["reproducible"]]
    assert len(checks) == 3 and all(c["ok"] and c["detail"] == "byte-identical" for c in checks), checks
    leftovers = [p for p in dist.rglob("*") if STAGING_MARK in p.name] + \
        [p for p in (cache / "tmp").iterdir() if STAGING_MARK in p.name]
    assert not leftovers
    assert "reproducible" in (dist / "summary.md").read_text()


def test_cli_exit_codes_for_bad_release_input(tmp_path, capsys):
    (tmp_path / "bad.toml").write_text("targets = ['host']\n[[model]]\npath = 'nope.pt2'\n")
    assert main(["release", str(tmp_path / "bad.toml"), "-o", str(tmp_path / "d"), "--cache", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "model[0].path = 'nope.pt2': no such file" in err
    assert not (tmp_path / "d").exists()  # nothing written for a bad file
    assert main(["release", str(tmp_path / "missing.toml")]) == 2


def test_settings_a_target_cannot_honour_are_refused_while_planning(tmp_path, capsys):
    # x86-64-avx2 declares no VNNI: full-range int8 weights would saturate there (the build's planner refuses them)
    file = _small(tmp_path, 'targets = ["x86-64-avx2"]\n[[model]]\npath = "example"\nprecision = "int8"\n'
                            'int8_weights = "int8"\n')
    assert main(["release", str(file), "-o", str(tmp_path / "dist"), "--cache", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert "model[0] (example): target x86-64-avx2:" in err and "--int8-weights" in err
    assert not (tmp_path / "dist").exists() and not (tmp_path / "cache").exists()  # refused before any work


def test_one_release_at_a_time_writes_a_dist_folder(built, tmp_path):
    import fcntl

    from compiler.errors import UsageError

    paths = copy_of(built, tmp_path)
    with open(paths["dist"] / ".release.lock", "a+") as held:  # as a running release holds it
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(UsageError, match="another chipfit release is writing to this folder"):
            run(paths, spawn=no_worker)
    assert run(paths, spawn=no_worker, profile=False).ok
    assert (paths["dist"] / "report.html").is_file()  # from the module's profiled release


def test_a_cell_that_fails_verification_is_kept_for_inspection_and_not_cached(tmp_path, capsys):
    spec = (SPECS / "intel-npu-3720.toml").read_text().replace('id = "intel-npu-3720"', 'id = "strict-npu"')
    # fp16 cannot meet a zero tolerance: the artifact builds and fails verification
    (tmp_path / "strict.toml").write_text(spec.replace("atol = 1e-2\nrtol = 1e-2", "atol = 0.0\nrtol = 0.0", 1))
    file = _small(tmp_path, 'targets = ["strict.toml", "snapdragon-8gen3"]\n[[model]]\npath = "example"\n'
                            '[profile]\nenabled = false\n')
    dist, cache = tmp_path / "dist", tmp_path / "cache"
    assert main(["release", str(file), "-o", str(dist), "--cache", str(cache), "-q"]) == 1
    err = capsys.readouterr().err
    assert "example/fp16/strict-npu: openvino: verification failed (min cosine" in err
    assert "tolerance atol 0.0, rtol 0.0" in err and "kept: example/fp16/strict-npu.failed" in err
    data = json.loads((dist / "index.json").read_text())
    by = {c["target"]: c for c in data["cells"]}
    assert by["strict-npu"]["status"] == "failed" and by["strict-npu"]["artifacts"] == []
    assert by["snapdragon-8gen3"]["status"] == "built"
    assert (dist / "example" / "fp16" / "strict-npu.failed" / "manifest.json").is_file()
    assert [a.target for a in find_artifacts(dist)] == ["snapdragon-8gen3"]
    assert len(list((cache / "entries").iterdir())) == 1  # the failure was not cached


def test_dry_run_says_what_would_be_built_and_touches_nothing(built, tmp_path, capsys):
    paths = copy_of(built, tmp_path)
    spec = paths["root"] / "test-avx2.toml"
    spec.write_text(spec.read_text().replace('description = "', 'description = "(edited) ', 1))
    cell = next(c for c in index(paths)["cells"] if c["target"] == "intel-npu-3720" and c["model"] == "conv")
    victim = next((paths["cache"] / "entries" / cell["key"]).rglob("model.bin"))
    victim.write_bytes(victim.read_bytes()[:-10])
    before = sorted(p.name for p in (paths["cache"] / "entries").iterdir())
    assert main(["release", str(paths["file"]), "-o", str(paths["dist"]), "--cache", str(paths["cache"]),
                 "--dry-run"]) == 0
    rows = {tuple(line.split()[:3]): line for line in capsys.readouterr().out.splitlines()[2:]}
    assert rows[("digits", "fp32", "test-avx2")].endswith("build: changed: target_spec")
    assert "corrupt" in rows[("conv", "fp16", "intel-npu-3720")]
    assert rows[("digits", "int8", "snapdragon-8gen3")].endswith("cached")
    assert sorted(p.name for p in (paths["cache"] / "entries").iterdir()) == before  # nothing removed
