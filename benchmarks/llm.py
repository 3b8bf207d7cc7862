"""A small LLM on this host: chipfit's artifacts against onnxruntime-genai's own builder and transformers eager.

    .venv/bin/python benchmarks/llm.py [--layers 6] [--rounds 5] [--prompt 128] [--new 64] [--threads 2]

The model is Qwen2.5-0.5B-shaped (its widths, heads and 151936-token vocabulary; --layers of its 24, random
weights; tied embeddings). Built by chipfit for ``host`` at fp32 and int4 (ONNX Runtime GenAI folders), and by
``python -m onnxruntime_genai.models.builder`` itself at fp32 and int4; transformers eager is the third peer.
Every path generates the same greedy continuation of the same prompt, in interleaved rounds (this host's
speed drifts between minutes), with the same thread count. Printed: time to first token, prefill and decode
tokens/s (medians), the ratio of chipfit's rates to the builder's, and the decode rate's bound from memory
bandwidth ((weight + KV bytes per token) / measured bandwidth). Then `chipfit profile` twice on chipfit's
artifacts: its estimate against the measurement, and how well two profiles agree.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_model(folder: Path, layers: int) -> Path:
    import transformers

    from compiler.llm.synthetic import save

    config = transformers.Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864,
                                      num_hidden_layers=layers, num_attention_heads=14, num_key_value_heads=2,
                                      max_position_embeddings=32768, rope_theta=1000000.0, tie_word_embeddings=True,
                                      bos_token_id=0, eos_token_id=1, pad_token_id=2)
    return save(folder, config, init_std=0.02)


def builder(model: Path, out: Path, precision: str) -> float:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:  # the builder imports top-level modules from its cwd
        subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(model), "-o", str(out),
                        "-p", precision, "-e", "cpu", "-c", str(Path(scratch) / "cache")], cwd=scratch, check=True,
                       capture_output=True)
    return time.perf_counter() - start


class Genai:
    def __init__(self, folder: Path, threads: int) -> None:
        import onnxruntime_genai as og

        config = og.Config(str(folder))
        config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}))
        self.og, self.model = og, og.Model(config)

    def run(self, ids, new):
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(max_length=len(ids) + new, min_length=len(ids) + new, do_sample=False)
        g = self.og.Generator(self.model, params)
        start = time.perf_counter()
        g.append_tokens(np.asarray([ids], np.int32))
        g.generate_next_token()
        first = time.perf_counter()
        for _ in range(new - 1):
            g.generate_next_token()
        return first - start, time.perf_counter() - first


class Eager:
    def __init__(self, folder: Path, threads: int) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(threads)
        self.torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()

    def run(self, ids, new):
        torch = self.torch
        with torch.no_grad():
            start = time.perf_counter()
            out = self.model(input_ids=torch.tensor([ids]), use_cache=True)
            token = out.logits[0, -1].argmax()
            first = time.perf_counter()
            for _ in range(new - 1):
                out = self.model(input_ids=token.view(1, 1), past_key_values=out.past_key_values, use_cache=True)
                token = out.logits[0, -1].argmax()
        return first - start, time.perf_counter() - first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", help="keep the models and artifacts here (default: a temporary folder)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="chipfit-llm-bench-"))
    model = work / "qwen2.5-0.5b-shaped"
    if not model.exists():
        start = time.perf_counter()
        make_model(model, args.layers)
        print(f"model: {model} ({time.perf_counter() - start:.1f} s to make)")
    paths, build_s = {}, {}
    for precision in ("fp32", "int4"):
        out = work / f"chipfit-{precision}"
        if not out.exists():
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "compiler.cli", "build", str(model), "-t", "host", "--backend",
                                   "onnxruntime", "--precision", precision, "-o", str(out), "-q"], cwd=ROOT)
            build_s[f"chipfit {precision}"] = time.perf_counter() - start
            if done.returncode not in (0, 1):
                raise SystemExit(f"chipfit build {precision} failed (exit {done.returncode})")
        paths[f"chipfit {precision}"] = out / model.name / "host"
        if not paths[f"chipfit {precision}"].exists() and (out / model.name / "host.failed").exists():
            # random weights give near-uniform logits, whose argmax int4 rounding scrambles: the artifact is built and
            # runs, it only fails the token-agreement check (its manifest says by how much); timed as built
            print(f"chipfit {precision}: failed verification on random weights; timed from host.failed/")
            paths[f"chipfit {precision}"] = out / model.name / "host.failed"
        peer = work / f"builder-{precision}"
        if not peer.exists():
            build_s[f"builder {precision}"] = builder(model, peer, precision)
        paths[f"builder {precision}"] = peer
    for name, seconds in build_s.items():
        print(f"build {name}: {seconds:.1f} s")
    runners = {name: Genai(path, args.threads) for name, path in paths.items()}
    runners["transformers eager fp32"] = Eager(model, args.threads)
    ids = np.random.default_rng(0).integers(3, 1000, args.prompt).tolist()
    for runner in runners.values():
        runner.run(ids[:16], 4)  # warm-up
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
    for _ in range(args.rounds):  # interleaved: every path once per round
        for name, runner in runners.items():
            samples[name].append(runner.run(ids, args.new))
    from profiles.llm import host_bandwidth_gbs
    from targets.manifest import read_artifact

    bandwidth = host_bandwidth_gbs()
    print(f"\n{args.prompt}-token prompt, {args.new} new tokens, {args.threads} threads, {args.rounds} interleaved "
          f"rounds; host memory bandwidth {bandwidth:.1f} GB/s (copy)\n")
    print(f"{'path':<26} {'TTFT ms':>9} {'prefill tok/s':>14} {'decode tok/s':>13} {'vs builder':>11} {'bound tok/s':>12}")
    rates = {}
    for name, rows in samples.items():
        ttft = statistics.median(r[0] for r in rows)
        decode = (args.new - 1) / statistics.median(r[1] for r in rows)
        rates[name] = (args.prompt / ttft, decode)
        bound = "-"
        if name in paths:
            record = read_artifact(paths[name]).manifest.llm if (paths[name] / "manifest.json").exists() else None
            weights = sum(f.stat().st_size for f in paths[name].glob("model.onnx*"))
            kv = (record.decoder.kv_bytes(args.prompt + args.new // 2, 4) if record else 0)
            bound = f"{bandwidth * 1e9 / (weights + kv):.1f}"
        peer = name.replace("chipfit", "builder")
        ratio = f"{decode / rates[peer][1]:.2f}x" if name.startswith("chipfit") and peer in rates else "-"
        print(f"{name:<26} {ttft * 1e3:>9.1f} {args.prompt / ttft:>14.1f} {decode:>13.2f} {ratio:>11} {bound:>12}")
    for precision in ("fp32", "int4"):
        c, b = rates[f"chipfit {precision}"], rates[f"builder {precision}"]
        print(f"chipfit/builder {precision}: prefill {c[0] / b[0]:.2f}x, decode {c[1] / b[1]:.2f}x")
    # `chipfit profile` takes verified artifacts: int4 where it verified (random weights may fail it), else fp32
    profiled = "int4" if (work / "chipfit-int4" / model.name / "host").exists() else "fp32"
    print(f"\nchipfit profile of the {profiled} artifact (twice), the estimate against the measurement:")
    figures = []
    for run in (1, 2):
        done = subprocess.run([sys.executable, "-m", "compiler.cli", "profile", str(work / f"chipfit-{profiled}"),
                               "--prompt-lengths", str(args.prompt), "--new-tokens", str(args.new), "--runs", "120",
                               "--threads", str(args.threads), "--json", "-q"], capture_output=True, text=True, cwd=ROOT,
                              check=True)
        (profile,) = json.loads(done.stdout)["profiles"]
        llm = profile["llm"]
        first = llm["prompts"][0]
        figures.append(first["decode_tok_s"])
        print(f"  run {run}: decode {first['decode_tok_s']:.2f} tok/s (estimate {llm['estimate']['decode_tok_s']:.2f}, "
              f"off {llm['estimate_error_pct']['decode_tok_s']}%), TTFT {first['ttft_ms_p50']:.1f} ms, "
              f"{llm['roofline']['decode_reached_pct']:.0f}% of the bandwidth bound")
    print(f"  two profiles agree within {abs(figures[0] - figures[1]) / figures[0] * 100:.1f}% (decode tok/s)")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
