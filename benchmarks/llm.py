"""A small LLM on this host: chipfit's shipped int4 artifact and each of its decoder backends, against
onnxruntime-genai's own builder and llama.cpp's own converter and quantizer, side by side in one run.

    .venv/bin/python benchmarks/llm.py [--layers 24] [--rounds 3] [--prompt 128] [--new 64] [--threads 2]

The model is Qwen2.5-0.5B-shaped (its widths, heads and 151936-token vocabulary; --layers of its 24, random
weights, tied embeddings). chipfit builds it for ``host`` at int4 as a user does (``chipfit build -t host
--precision int4``): every decoder backend of the host builds, verifies and races, the fastest ships as ``host``,
the others stay beside it. The decoder backends of two other CPU targets are built too and run here as they run
there (``-t arm64-cortex-a76 --backend executorch``: ExecuTorch's ``.pte``; ``-t intel-core-ultra-cpu --backend
openvino``: OpenVINO GenAI's folder; their "MB read" counts every weight file). Peers at their own best settings: ``python -m onnxruntime_genai.models.builder -p int4
-e cpu`` (its CPU defaults: accuracy_level 4, the tied lm_head quantized with the embedding), and llama.cpp's
flow: ``convert_hf_to_gguf.py --outtype f16`` (the converter of the tree chipfit's toolchain keeps; its pre-tokenizer
check is mended as chipfit's build mends it, since this model's tokenizer is trained here), then
``llama_model_quantize`` (what ``llama-quantize`` calls) to Q4_0 and Q4_K_M. ONNX Runtime folders run through
onnxruntime-genai, GGUF files through llama-cpp-python, as apps load them, all with ``--threads``; every path
generates from the same prompt in each round (interleaved; a pause between paths so that ONNX Runtime's spinning
pool threads do not steal from the next one). Printed: TTFT, prefill and decode tokens/s (medians), the bytes a
decode step reads, and the share of this host's read bandwidth (a read-only sweep) each path reaches.
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
#: decoder backends of other CPU targets whose artifacts run on this host as they run there
OTHER_CPU_BACKENDS = (("arm64-cortex-a76", "executorch"), ("intel-core-ultra-cpu", "openvino"))


def make_model(folder: Path, layers: int) -> Path:
    import transformers

    from compiler.llm.synthetic import save

    config = transformers.Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864,
                                      num_hidden_layers=layers, num_attention_heads=14, num_key_value_heads=2,
                                      max_position_embeddings=32768, rope_theta=1000000.0, tie_word_embeddings=True,
                                      bos_token_id=0, eos_token_id=1, pad_token_id=2)
    return save(folder, config, init_std=0.02)


def genai_builder(model: Path, out: Path) -> None:
    with tempfile.TemporaryDirectory() as scratch:  # the builder imports top-level modules from its cwd
        subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(model), "-o", str(out),
                        "-p", "int4", "-e", "cpu", "-c", str(Path(scratch) / "cache")], cwd=scratch, check=True,
                       capture_output=True)


def llama_cpp_peer(model: Path, out: Path, kinds: tuple[str, ...]) -> None:
    """llama.cpp's documented flow: convert to f16, then quantize each type from it."""
    from compiler.backends.llamacpp import backend

    state = backend.environment_state()
    source = state.source("llama-cpp-python") / "vendor" / "llama.cpp"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        request = Path(scratch) / "request.json"
        request.write_text(json.dumps({"op": "convert", "source": str(source), "model": str(model),
                                       "outfile": str(out / "f16.gguf"), "outtype": "f16",
                                       "result": str(Path(scratch) / "result.json")}))
        subprocess.run([sys.executable, "-m", "compiler.backends.llamacpp.convert", str(request)], check=True,
                       capture_output=True, cwd=scratch, env={**os.environ, "NO_LOCAL_GGUF": "1"})
    runtime = ROOT / "compiler" / "backends" / "llamacpp" / "runtime.py"
    for kind in kinds:
        subprocess.run([str(state.python_exe), str(runtime), "quantize", str(out / "f16.gguf"), str(out / f"{kind}.gguf"),
                        kind, str(os.cpu_count())], check=True, capture_output=True)


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


class Gguf:
    def __init__(self, path: Path, threads: int, context: int) -> None:
        from compiler.backends.llamacpp import backend
        from compiler.backends.llamacpp.runner import LlamaCppRunner

        self.runner = LlamaCppRunner(backend.environment_state().python_exe, path, context, threads)

    def run(self, ids, new):
        g = self.runner.generate(ids, new)  # times measured inside llama.cpp's process
        return g.prefill_s, sum(g.token_s)


class Artifact:
    """A chipfit decoder artifact of another CPU target, run here by its own runtime (chipfit's runner for it)."""

    def __init__(self, folder: Path, threads: int) -> None:
        from targets.host import detect_host
        from targets.manifest import read_artifact
        from targets.registry import backend_registry, target_registry

        manifest = read_artifact(folder).manifest
        target = target_registry().get(manifest.target.id)
        plan = backend_registry().get(manifest.backend.name).plan_generate(folder, manifest.backend.options, target,
                                                                            detect_host())
        self.runner = plan.runner
        self.runner.set_threads(threads)
        # weights only (the tokenizer files are read once): what a decode step streams, the embedding's rows aside
        self.weight_bytes = sum(f.bytes for name, f in manifest.files.items()
                                if name.endswith((".pte", ".bin")) and "tokenizer" not in name)

    def run(self, ids, new):
        g = self.runner.generate(ids, new)
        return g.prefill_s, sum(g.token_s)


def onnx_bytes_per_token(folder: Path) -> int:
    """Weight bytes a decode step reads: every initializer but a table only gathered from (one row is read)."""
    import onnx

    graph = onnx.load(str(folder / "model.onnx"), load_external_data=False).graph
    users: dict[str, set[str]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, set()).add(node.op_type)
    total = 0
    for tensor in graph.initializer:
        external = {e.key: e.value for e in tensor.external_data}
        size = int(external.get("length", 0)) if external else len(tensor.raw_data)
        if users.get(tensor.name, set()) <= {"Gather", "GatherBlockQuantized"} and users.get(tensor.name):
            continue
        total += size
    return total


def gguf_bytes_per_token(path: Path) -> int:
    """Weight bytes a decode step reads from a GGUF: every tensor but an untied token embedding (one row read)."""
    from compiler.backends.llamacpp import backend

    source = backend.environment_state().source("llama-cpp-python") / "vendor" / "llama.cpp" / "gguf-py"
    sys.path.insert(0, str(source))
    from gguf import GGUFReader

    tensors = {t.name: int(t.n_bytes) for t in GGUFReader(str(path)).tensors}
    return sum(tensors.values()) - (tensors.get("token_embd.weight", 0) if "output.weight" in tensors else 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between paths in a round")
    parser.add_argument("--workdir", help="keep the models and artifacts here (default: a temporary folder)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="chipfit-llm-bench-"))
    model = work / "qwen2.5-0.5b-shaped"
    timings: dict[str, float] = {}
    if not model.exists():
        start = time.perf_counter()
        make_model(model, args.layers)
        timings["make the model"] = time.perf_counter() - start
    built = work / "chipfit"
    if not built.exists():
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "compiler.cli", "build", str(model), "-t", "host", "--precision",
                               "int4", "-o", str(built)], cwd=ROOT, capture_output=True, text=True)
        timings["chipfit build -t host --precision int4"] = time.perf_counter() - start
        print("\n".join(line for line in done.stderr.splitlines() if "host:" in line))
        if done.returncode not in (0, 1):
            raise SystemExit(f"chipfit build failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    # the decoder backends of other CPU targets, which run on this host as they run there: ExecuTorch's .pte
    # (arm64-cortex-a76) and OpenVINO GenAI's folder (intel-core-ultra-cpu)
    for target, backend in OTHER_CPU_BACKENDS:
        if not (built / model.name / target).exists() and not (built / model.name / f"{target}.failed").exists():
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "compiler.cli", "build", str(model), "-t", target, "--backend",
                                   backend, "--precision", "int4", "--context", "512", "-o", str(built)], cwd=ROOT,
                                  capture_output=True, text=True)
            timings[f"chipfit build -t {target} --backend {backend} --precision int4"] = time.perf_counter() - start
            if done.returncode not in (0, 1):
                raise SystemExit(f"chipfit build failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    paths: dict[str, Path] = {}
    for target, backend in OTHER_CPU_BACKENDS:
        for folder in (built / model.name / target, built / model.name / f"{target}.failed"):
            if (folder / "manifest.json").exists():
                paths[f"chipfit {folder.name}: {backend}"] = folder
    for folder in sorted((built / model.name).iterdir()):
        if folder.name.startswith("host") and (folder / "manifest.json").exists():
            manifest = json.loads((folder / "manifest.json").read_text())
            label = "chipfit host (shipped)" if folder.name == "host" else f"chipfit {folder.name}"
            paths[f"{label}: {manifest['backend']['name']}"] = folder
    if not paths:
        raise SystemExit(f"chipfit built no verified host artifact; see {built}")
    peer = work / "genai-builder-int4"
    if not peer.exists():
        start = time.perf_counter()
        genai_builder(model, peer)
        timings["onnxruntime-genai builder int4"] = time.perf_counter() - start
    paths["onnxruntime-genai builder int4"] = peer
    gguf = work / "llama.cpp"
    if not (gguf / "Q4_K_M.gguf").exists():
        start = time.perf_counter()
        llama_cpp_peer(model, gguf, ("Q4_0", "Q4_K_M"))
        timings["llama.cpp convert f16 + quantize Q4_0, Q4_K_M"] = time.perf_counter() - start
    paths["llama.cpp Q4_0"] = gguf / "Q4_0.gguf"
    paths["llama.cpp Q4_K_M"] = gguf / "Q4_K_M.gguf"
    for what, seconds in timings.items():
        print(f"{what}: {seconds:.0f} s")

    context = args.prompt + args.new + 8
    runners, reads, sizes = {}, {}, {}
    for name, path in paths.items():
        if name.startswith("chipfit") and not name.startswith("chipfit host"):
            runners[name] = Artifact(path, args.threads)
            reads[name], sizes[name] = runners[name].weight_bytes, runners[name].weight_bytes
        elif path.suffix == ".gguf" or (path / "model.gguf").exists():
            file = path if path.suffix == ".gguf" else path / "model.gguf"
            runners[name], reads[name], sizes[name] = Gguf(file, args.threads, context), gguf_bytes_per_token(file), \
                file.stat().st_size
        else:
            runners[name], reads[name] = Genai(path, args.threads), onnx_bytes_per_token(path)
            sizes[name] = sum(f.stat().st_size for f in path.glob("model.onnx*"))
    ids = np.random.default_rng(0).integers(3, 150000, args.prompt).tolist()
    for runner in runners.values():
        runner.run(ids[:16], 4)  # warm-up
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
    names = list(runners)
    for r in range(args.rounds):  # interleaved, in a rotating order
        for name in names[r % len(names):] + names[:r % len(names)]:
            samples[name].append(runners[name].run(ids, args.new))
            time.sleep(args.pause)
    from profiles.llm import host_bandwidth_gbs

    bandwidth = host_bandwidth_gbs(threads=args.threads)
    print(f"\n{args.layers} layers, {args.prompt}-token prompt, {args.new} new tokens, {args.threads} threads, "
          f"{args.rounds} interleaved rounds; read bandwidth {bandwidth:.1f} GB/s (read-only sweep, {args.threads} "
          "threads)\n")
    print(f"| path | file MB | TTFT ms | prefill tok/s | decode tok/s | MB read per token | share of read bound |")
    print("|---|---|---|---|---|---|---|")
    rates = {}
    for name, rows in samples.items():
        ttft = statistics.median(r[0] for r in rows)
        decode = (args.new - 1) / statistics.median(r[1] for r in rows)
        rates[name] = (args.prompt / ttft, decode)
        share = decode * reads[name] / (bandwidth * 1e9)
        print(f"| {name} | {sizes[name] / 1e6:.0f} | {ttft * 1e3:.0f} | {args.prompt / ttft:.1f} | {decode:.1f} | "
              f"{reads[name] / 1e6:.0f} | {share * 100:.0f} % |")
    shipped = next((n for n in rates if n.startswith("chipfit host (shipped)")), None)
    if shipped is None:  # random weights: int4 may fail verification everywhere; the candidates are timed as built
        print("\nno chipfit candidate verified, so none shipped as host (the .failed ones above are timed as built)")
        return
    peers = [n for n in rates if not n.startswith("chipfit")]
    best_decode = max(peers, key=lambda n: rates[n][1])
    best_prefill = max(peers, key=lambda n: rates[n][0])
    print(f"\nchipfit shipped ({shipped.split(': ')[1]}): decode {rates[shipped][1] / rates[best_decode][1]:.2f}x the "
          f"best peer ({best_decode}), prefill {rates[shipped][0] / rates[best_prefill][0]:.2f}x the best peer "
          f"({best_prefill})")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
