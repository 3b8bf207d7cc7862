"""Profiling real artifacts: on this host, by estimate, over TVM RPC on 127.0.0.1, and bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from compiler.build import BuildOptions, build
from compiler.cli import main
from profiles.profile import PROFILE_NAME, ProfileError, ProfileOptions, profile_artifacts
from profiles.report import html_report

FAST = ProfileOptions(runs=30, min_runs=10, warmup=3, budget_s=2.0)


@pytest.fixture(scope="module")
def built(example_traced, tmp_path_factory):
    out = tmp_path_factory.mktemp("profiled")
    results = build(example_traced, BuildOptions(targets=["host", "apple-a17", "snapdragon-8gen3", "arm64-cortex-a76"],
                                                 out_dir=out, measure_latency=False))
    assert all(r.ok for r in results)
    return out


@pytest.fixture(scope="module")
def profiled(built):
    return profile_artifacts(built, FAST)


def test_host_artifacts_are_measured_in_a_child_process(profiled):
    host = {p.backend: p for p in profiled.profiles if p.target == "host"}
    assert set(host) == {"onnxruntime", "tvm", "openvino"}
    for p in host.values():
        assert p.runner == "host" and p.latency_method == "measured:host"
        assert len(p.latency_samples_ms) >= 10 and p.latency.latency_ms_p50 > 0
        assert p.peak_memory_mb > 10
        assert p.estimate["method"] == "estimated:roofline-v1"
        assert p.energy_method.startswith("estimated:roofline-v1")  # no meter on this machine
    assert host["onnxruntime"].per_op and host["onnxruntime"].per_op[0]["mean_us"] > 0
    assert host["onnxruntime"].per_op_source == "onnxruntime profiler"
    assert set(profiled.fit) == {"onnxruntime", "tvm", "openvino"}


def test_unreachable_targets_are_estimated_and_say_so(profiled):
    others = {p.target: p for p in profiled.profiles if p.target != "host"}
    for target in ("apple-a17", "snapdragon-8gen3", "arm64-cortex-a76"):
        p = others[target]
        assert p.runner == "estimate" and p.latency_method == "estimated:roofline-v1"
        assert p.latency_ms_p50 > 0 and p.energy_mj > 0
        assert p.not_measured_because
        assert "standing in" in p.estimate["efficiency_source"] or p.backend in p.estimate["efficiency_source"]
    assert "proxy" in others["snapdragon-8gen3"].not_measured_because


def test_profile_json_is_written_with_host_facts_and_digest(built, profiled):
    data = json.loads((built / "example" / "host" / PROFILE_NAME).read_text())
    assert data["schema_version"] == 2 and len(data["artifact_digest"]) == 64
    assert data["host"]["cpu"] and "loadavg" in data["host"] and data["tool_versions"]["onnxruntime"]


def test_html_report_has_its_plots(profiled, tmp_path):
    page = html_report(profiled.profiles, profiled.fit, profiled.errors)
    for plot in ('id="latency-distribution"', 'id="latency-vs-energy"', 'class="plot top-ops"'):
        assert plot in page
    # matplotlib draws markers, boxes and bars as SVG paths (the old hand-drawn plots used rects)
    assert page.count("<path") > 20 and page.count("<svg") >= 3 and "estimated:roofline-v1" in page


def test_tampered_artifact_is_refused_and_its_old_profile_kept(built, tmp_path):
    copy = tmp_path / "m" / "host"
    shutil.copytree(built / "example" / "host", copy)
    before = (copy / PROFILE_NAME).read_text()
    with open(copy / "model.onnx", "ab") as f:
        f.write(b"\0")
    run = profile_artifacts(tmp_path, FAST)
    assert "refusing to profile a modified artifact" in run.errors[str(copy)]
    assert (copy / PROFILE_NAME).read_text() == before


def test_bad_paths_are_usage_errors(tmp_path, capsys):
    with pytest.raises(ProfileError, match="no such artifact folder"):
        profile_artifacts(tmp_path / "nope")
    with pytest.raises(ProfileError, match="holds no chipfit artifact"):
        profile_artifacts(tmp_path)
    assert main(["profile", str(tmp_path)]) == 2
    assert "holds no chipfit artifact" in capsys.readouterr().err


def test_missing_meter_is_reported(built, tmp_path):
    run = profile_artifacts(built / "example" / "host", ProfileOptions(runs=10, min_runs=5, warmup=1, budget_s=1,
                                                                       meter=f"rapl:{tmp_path / 'no-powercap'}"))
    (p,) = run.profiles
    assert "no powercap tree" in p.energy_error
    assert p.energy_method.startswith("estimated")


def test_memory_capacity_too_small_fails_the_profile(built, tmp_path, monkeypatch):
    import targets.registry as registry_module

    real = registry_module.target_registry

    def tiny_host_registry(*args, **kwargs):
        registry = real(*args, **kwargs)
        spec = registry.get("host")
        figures = dict(spec.hardware.figures, memory_gb=0.001)
        from dataclasses import replace

        registry._loaded["host"] = replace(spec, hardware=replace(spec.hardware, figures=figures))
        return registry

    monkeypatch.setattr("profiles.profile.target_registry", tiny_host_registry)
    run = profile_artifacts(built / "example" / "host", ProfileOptions(runs=10, min_runs=5, warmup=1, budget_s=1))
    assert "target host has 0.001 GB" in next(iter(run.errors.values()))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def rpc_farm():
    """A TVM RPC tracker and one server (key 'testbox') on 127.0.0.1, as a device farm would run them."""
    tracker_port, server_port = _free_port(), _free_port()
    tracker = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1",
                                "--port", str(tracker_port), "--port-end", str(tracker_port + 1)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    server = None
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", tracker_port)) == 0:
                    break
            time.sleep(0.1)
        server = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1",
                                   "--port", str(server_port), "--port-end", str(server_port + 1), "--tracker", f"127.0.0.1:{tracker_port}",
                                   "--key", "testbox"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        from tvm import rpc

        for _ in range(100):
            try:
                if "testbox" in rpc.connect_tracker("127.0.0.1", tracker_port).summary().get("queue_info", {}):
                    break
            except Exception:
                pass
            time.sleep(0.2)
        yield f"127.0.0.1:{tracker_port}"
    finally:
        for proc in (server, tracker):
            if proc is not None:  # the whole group: the server's session workers would outlive it
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=10)


def test_tvm_artifact_is_timed_over_rpc(built, rpc_farm):
    run = profile_artifacts(built / "example" / "host@tvm", ProfileOptions(rpc=rpc_farm, key="testbox", runs=10))
    assert not run.errors, run.errors
    (p,) = run.profiles
    assert p.runner == "rpc:testbox" and p.latency_method == "measured:rpc:testbox"
    assert len(p.latency_samples_ms) == 10 and p.latency_ms_p50 > 0


def test_rpc_errors_are_clear_and_do_not_hang(built, rpc_farm):
    start = time.perf_counter()
    run = profile_artifacts(built / "example" / "host@tvm", ProfileOptions(rpc=rpc_farm, key="rpi5"))
    assert "no device registered with key 'rpi5'" in next(iter(run.errors.values()))
    dead = f"127.0.0.1:{_free_port()}"
    run = profile_artifacts(built / "example" / "host@tvm", ProfileOptions(rpc=dead, key="testbox"))
    assert f"no TVM RPC tracker at {dead}" in next(iter(run.errors.values()))
    assert time.perf_counter() - start < 30


def test_cli_profile_prints_the_cross_target_table(built, tmp_path, capsys):
    report = tmp_path / "report.html"
    code = main(["profile", str(built), "--runs", "20", "--budget-s", "1", "--html", str(report), "-q"])
    out = capsys.readouterr().out
    assert code == 0
    assert "measured:host" in out and "estimated:roofline-v1" in out
    assert report.read_text().startswith("<!doctype html>")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (.ci/setup installs Debian's chromium)")
def test_html_report_renders_with_its_plots_in_a_headless_browser(profiled, tmp_path):
    from PIL import Image

    page = tmp_path / "report.html"
    page.write_text(html_report(profiled.profiles, profiled.fit, profiled.errors))
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--force-color-profile=srgb", "--hide-scrollbars", "--virtual-time-budget=3000",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1100,2400"]
    plots = ('id="latency-distribution"', 'id="latency-vs-energy"', 'class="plot top-ops"')
    shot = tmp_path / "report.png"
    # Headless Chromium now and then exits at start-up on a busy machine without rendering: one retry.
    for _ in range(2):
        done = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
        if all(plot in done.stdout for plot in plots):
            break
    for plot in plots:
        assert plot in done.stdout, done.stderr[-2000:]
    # a box is its fill and its outline: a steady artifact's box (a narrow quartile range on a log axis shared
    # with slower ones) may be a few pixels of fill inside its outline
    colours = {"box": ((158, 202, 225), (49, 130, 189)), "estimated point": ((31, 119, 180),),
               "op bar": ((116, 196, 118),)}

    def counts() -> dict[str, int]:
        pixels = list(Image.open(shot).convert("RGB").getdata())
        # within a few levels of the plot's colour: colour management and anti-aliasing may nudge it
        return {name: sum(1 for p in pixels if any(max(abs(a - b) for a, b in zip(p, rgb)) <= 4 for rgb in rgbs))
                for name, rgbs in colours.items()}

    found: dict[str, int] = {}
    for _ in range(2):
        shot.unlink(missing_ok=True)
        done = subprocess.run([*flags, f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True,
                              timeout=120)
        if shot.is_file() and min((found := counts()).values()) > 20:
            break
    assert shot.is_file(), done.stderr[-2000:]
    for name, count in found.items():
        assert count > 20, f"no {name} pixels in the rendered report ({found})"
