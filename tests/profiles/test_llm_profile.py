"""Decoder LMs profiled: TTFT, prefill and decode rates at KV depths, energy per token; estimated where they cannot run."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys

import pytest

from compiler.build import BuildOptions, build
from compiler.frontend import load_model
from compiler.llm.synthetic import config, save
from profiles.compare import compare
from profiles.llm import measure_decoder, summarize_measurement
from profiles.meters import RaplMeter
from profiles.profile import profile_artifacts
from profiles.report import html_report
from targets.backend import Generation
from targets.host import detect_host
from targets.manifest import read_artifact
from targets.registry import backend_registry, target_registry
from targets.request import ProfileRequest

FAST = ProfileRequest(runs=80, prompt_lengths=(16, 64), new_tokens=12)


@pytest.fixture(scope="module")
def llm_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("llm-profile")
    folder = save(root / "story", config("llama", hidden_size=128, intermediate_size=256), train_steps=60)
    model = load_model(folder)
    # the chips' own runtimes, which cannot run here (the race would ship llama.cpp's file, run here as a proxy)
    results = (build(model, BuildOptions(["host"], root / "build"))
               + build(model, BuildOptions(["arm64-cortex-a76"], root / "build", backend="tvm"))
               + build(model, BuildOptions(["apple-a17"], root / "build", backend="coreml")))
    assert all(r.ok for r in results), [(r.target, r.message) for r in results]
    return root / "build" / "story"


@pytest.fixture(scope="module")
def profiled(llm_build):
    return profile_artifacts(llm_build, FAST)


def test_a_host_decoder_is_measured_with_every_figure_labelled(profiled):
    host = {p.backend: p for p in profiled.profiles if p.target == "host"}
    assert set(host) == {"onnxruntime", "tvm", "llamacpp", "openvino"}
    for p in host.values():
        llm = p.llm
        assert llm["method"] == "measured:host" and p.latency_method == "measured:host"
        assert [q["tokens"] for q in llm["prompts"]] == [16, 64]
        for prompt in llm["prompts"]:
            assert prompt["ttft_ms_p50"] > 0 and prompt["prefill_tok_s"] > 0 and prompt["decode_tok_s"] > 0
            assert len(prompt["ttft_ms_samples"]) >= 2 and len(prompt["decode_ms_samples"]) >= 11
        depths = llm["depths"]
        assert [d["fraction"] for d in depths] == [0.0, 0.25, 0.5, 1.0]
        assert depths[0]["kv_bytes"] < depths[-1]["kv_bytes"]
        assert all(d["tok_s"] > 0 for d in depths)
        assert p.peak_memory_mb > 10 and llm["load_s"] > 0
        assert p.energy_method.startswith("estimated:roofline-llm-v1")  # no meter on this machine
        assert llm["roofline"]["decode_bound_tok_s"] > 0 and llm["roofline"]["decode_reached_pct"] > 0
        assert "measured on this machine" in llm["roofline"]["inputs"]["bandwidth_source"]
        assert llm["fits"] and llm["context"] == 256
        assert set(llm["estimate_error_pct"]) == {"decode_tok_s", "ttft_ms"}


def test_targets_that_cannot_run_here_are_estimated_and_say_what_is_unknown(profiled):
    others = {p.target: p for p in profiled.profiles if p.target != "host"}
    for target in ("arm64-cortex-a76", "apple-a17"):
        p = others[target]
        assert p.runner == "estimate" and p.llm["method"] == "estimated:roofline-llm-v1"
        assert p.energy_mj > 0 and p.llm["prompts"][0]["ttft_ms_p50"] > 0
    # the A17's bandwidth is unknown: no decode rate (compute alone would flatter it), and the figure named
    apple = others["apple-a17"].llm["estimate"]
    assert apple["decode_tok_s"] is None and any(m.startswith("memory_bandwidth_gbs") for m in apple["missing"])
    # the Pi 5's was measured elsewhere (its spec says so): a decode rate, and energy from its power under load
    pi = others["arm64-cortex-a76"].llm["estimate"]
    assert pi["decode_tok_s"] > 0 and pi["inputs"]["energy_basis"].startswith("power under load")


def test_measured_energy_per_token_matches_a_hand_computation(llm_build, tmp_path):
    """A powercap tree whose counter moves by a known amount per prompt token and per generated token."""
    zone = tmp_path / "intel-rapl:0"
    zone.mkdir()
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    (zone / "energy_uj").write_text("0\n")
    per_prompt_uj, per_token_uj = 200, 5000
    artifact = read_artifact(llm_build / "host")
    plan = backend_registry().get(artifact.manifest.backend.name).plan_generate(artifact.path, artifact.manifest.backend.options,
                                                                target_registry().get("host"), detect_host())

    class Metered:
        description = "metered"

        def generate(self, ids, new_tokens, stop=(), on_token=None) -> Generation:
            g = plan.runner.generate(ids, new_tokens, stop, on_token)
            used = int((zone / "energy_uj").read_text()) + per_prompt_uj * len(ids) + per_token_uj * len(g.tokens)
            (zone / "energy_uj").write_text(f"{used}\n")
            return g

    raw = measure_decoder(Metered(), artifact.manifest.llm, [16], 9, 2, meter=RaplMeter(tmp_path))
    energy = summarize_measurement(raw)["energy"]
    assert energy["j_per_generated_token"] == pytest.approx(per_token_uj / 1e6, rel=1e-9)
    assert energy["j_per_prompt_token"] == pytest.approx((per_prompt_uj * 16 + per_token_uj) / 16 / 1e6, rel=1e-9)
    assert energy["method"] == "measured:rapl"


def test_compare_catches_a_twenty_percent_decode_slowdown_and_passes_itself(profiled):
    p = next(q for q in profiled.profiles if q.target == "host" and q.backend == "onnxruntime")
    slower = p.replace(latency_samples_ms=tuple(x * 1.2 for x in p.latency_samples_ms),
                       latency_ms_p50=p.latency_ms_p50 * 1.2)
    verdicts, _, _ = compare({p.key: p}, {p.key: slower}, {"decode": 1.10})
    decode = next(v for v in verdicts if v.metric == "decode")
    assert decode.status == "regression" and decode.test.startswith("bootstrap") and decode.unit == "ms/token"
    verdicts, _, _ = compare({p.key: p}, {p.key: p})
    assert not [v for v in verdicts if v.status == "regression"]
    assert {"decode", "ttft", "prefill", "energy"} <= {v.metric for v in verdicts}


def test_a_quantized_decoder_no_faster_than_its_float_sibling_raises_an_alarm(profiled):
    p = next(q for q in profiled.profiles if q.target == "host" and q.backend == "onnxruntime")
    int4 = dataclasses.replace(p, precision="int4")
    verdicts, _, _ = compare({}, {p.key: p, int4.key: int4})
    assert any(v.metric == "quantized_vs_float" and v.status == "alarm" for v in verdicts)


def test_bad_llm_profile_input_exits_2(llm_build, tmp_path):
    def chipfit(*args):
        return subprocess.run([sys.executable, "-m", "compiler.cli", "profile", *map(str, args)], capture_output=True,
                              text=True, timeout=300)

    too_long = chipfit(llm_build / "host", "--prompt-lengths", "300")
    assert too_long.returncode == 2 and "exceed the artifact's context of 256" in too_long.stderr
    zero = chipfit(llm_build / "host", "--new-tokens", "0")
    assert zero.returncode == 2 and "--new-tokens = 0" in zero.stderr
    not_llm = tmp_path / "graph"
    build(load_model("example"), BuildOptions(["host"], not_llm, backend="onnxruntime", measure_latency=False))
    flags = chipfit(not_llm, "--prompt-lengths", "16")
    assert flags.returncode == 2 and "holds no language model artifact" in flags.stderr
    meter = chipfit(llm_build / "host", "--meter", f"rapl:{tmp_path / 'nothing'}")
    assert meter.returncode == 2 and "no powercap tree" in meter.stderr


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (.ci/setup installs Debian's chromium)")
def test_the_html_report_renders_its_llm_plots(profiled, tmp_path):
    page = tmp_path / "report.html"
    page.write_text(html_report(profiled.profiles, profiled.fit, profiled.errors))
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--virtual-time-budget=3000",
             f"--user-data-dir={tmp_path / 'chrome'}", "--window-size=1200,3000"]
    for _ in range(2):
        done = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
        if 'id="llm-depth"' in done.stdout:
            break
    for plot in ('id="llm-pareto"', 'id="llm-ttft"', 'id="llm-depth"'):
        assert plot in done.stdout, done.stderr[-1000:]
    assert done.stdout.count("<svg") >= 3 and "decode rate (tokens/s" in done.stdout
