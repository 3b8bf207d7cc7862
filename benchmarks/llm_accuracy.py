"""int4 decoder accuracy: perplexity of each weight method chipfit builds, beside the peers' int4 on the same weights.

    .venv/bin/python benchmarks/llm_accuracy.py [--rounds 5] [--threads 2] [--workdir DIR]

The model is the small Llama the tests train on Python standard-library sources (`compiler.llm.synthetic.
stdlib_model`: vocabulary 1024, 2 layers, trained here once and cached by content), so its perplexity on held-out
stdlib sources means something. chipfit builds it at int4 as a user does, for each decoder backend of the CPU
targets: ``-t host --backend onnxruntime`` and ``-t intel-core-ultra-cpu --backend openvino`` (each weight method
the backend offers is built and the lowest held-out perplexity ships: the manifest keeps every variant's figure),
``-t host --backend llamacpp`` (Q4_K_M) and ``-t arm64-cortex-a76 --backend executorch`` (8da4w, run here as a proxy).
Verification prompts are code (``--samples``), as a user verifies on their own domain. Peers on the same weights,
at their own defaults: onnxruntime-genai's builder ``-p int4 -e cpu`` and llama.cpp's converter + quantizer (Q4_0,
Q4_K_M; without an importance matrix: llama-cpp-python does not build ``llama-imatrix``). Every perplexity is the
one chipfit's verification measures: 8 windows of 128 tokens of stdlib modules no training or calibration text
uses, through the artifact's own runtime. Then the decode rate of the shipped calibrated variant against the RTN one
of the same backend (both built with ``--weight-method``), interleaved rounds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CODE_PROMPTS = ('def __init__(self, name, value=None):', '    """Return the number of items in the queue."""',
                "import os", "from collections import", "class Error(Exception):", "    def __repr__(self):")
#: (target, backend) whose int4 artifacts chipfit builds; those with several weight methods race them
CHIPFIT = (("host", "onnxruntime"), ("intel-core-ultra-cpu", "openvino"), ("host", "llamacpp"),
           ("arm64-cortex-a76", "executorch"))


def build(model, target: str, backend: str, out: Path, samples: Path, **options):
    from compiler.build import BuildOptions, build as chipfit_build

    (result,) = chipfit_build(model, BuildOptions([target], out, backend=backend, precision="int4",
                                                  samples=str(samples), measure_latency=False, **options))
    return result


def runner_of(folder: Path, threads: int):
    """The artifact's decoder runner as chipfit's verification and profiler load it."""
    from targets.host import detect_host
    from targets.manifest import read_artifact
    from targets.registry import backend_registry, target_registry

    manifest = read_artifact(folder).manifest
    plan = backend_registry().get(manifest.backend.name).plan_generate(
        folder, manifest.backend.options, target_registry().get(manifest.target.id), detect_host())
    plan.runner.set_threads(threads)
    return plan.runner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", help="keep the artifacts here (default: a temporary folder)")
    args = parser.parse_args()
    from benchmarks.llm import genai_builder, llama_cpp_peer
    from compiler.backends.llamacpp import backend as llamacpp
    from compiler.backends.llamacpp.runner import LlamaCppRunner
    from compiler.backends.onnxruntime.genai import GenaiRunner
    from compiler.build.inputs import held_out
    from compiler.frontend import load_model
    from compiler.llm.perplexity import perplexity
    from compiler.llm.synthetic import stdlib_model
    from targets.manifest import read_artifact

    work = Path(args.workdir or tempfile.mkdtemp(prefix="chipfit-llm-accuracy-"))
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    folder = stdlib_model()
    model = load_model(folder)
    print(f"model: {folder} ({time.perf_counter() - start:.0f} s to train or find)")
    samples = work / "code-prompts.txt"
    samples.write_text("\n".join(CODE_PROMPTS) + "\n")
    text = held_out(model, 512)
    reference = perplexity(model.reference_logits, text)
    rows: list[tuple[str, str, float | None]] = [("float (transformers)", "fp32", reference)]
    shipped: dict[str, tuple[str, Path]] = {}
    for target, backend in CHIPFIT:
        start = time.perf_counter()
        result = build(model, target, backend, work / f"chipfit-{backend}", samples)
        seconds = time.perf_counter() - start
        if not result.artifact:
            rows.append((f"chipfit {target}@{backend}", f"error: {result.message[:120]}", None))
            continue
        manifest = read_artifact(result.artifact).manifest
        choice = manifest.llm.weight_choice
        if choice:
            for variant in choice["variants"]:
                mark = " (ships)" if variant["method"] == choice["chosen"] else ""
                rows.append((f"chipfit {target}@{backend}", f"{variant['method']}{mark}", variant["perplexity"]))
            shipped[backend] = (choice["chosen"], Path(result.artifact))
        else:
            scored = (result.numerics.generation or {}).get("perplexity") or {}
            kinds = "/".join(sorted({str(v) for v in manifest.llm.weight_precisions.values()}))
            rows.append((f"chipfit {target}@{backend}", f"{kinds}{'' if result.status == 'verified' else ' ' + result.status}",
                         scored.get("artifact")))
        print(f"chipfit -t {target} --backend {backend} --precision int4: {seconds:.0f} s, {result.status}")
    peer = work / "genai-builder-int4"
    if not peer.exists():
        genai_builder(folder, peer)
    rows.append(("onnxruntime-genai builder (-p int4 -e cpu)", "its default", perplexity(
        GenaiRunner(peer, on_cpu=True, threads=args.threads).logits, text)))
    gguf = work / "llama.cpp"
    if not (gguf / "Q4_K_M.gguf").exists():
        llama_cpp_peer(folder, gguf, ("Q4_0", "Q4_K_M"))
    for kind in ("Q4_0", "Q4_K_M"):
        runner = LlamaCppRunner(llamacpp.environment_state().python_exe, gguf / f"{kind}.gguf", 512, args.threads)
        rows.append(("llama.cpp (convert f16 + llama_model_quantize)", kind, perplexity(runner.logits, text)))

    print(f"\nperplexity on {text.origin} ({sum(len(w) for w in text.windows)} tokens); float {reference:.3f}\n")
    print("| path | weights | perplexity | increase over float |")
    print("|---|---|---|---|")
    for path, what, value in rows:
        figure = "-" if value is None else f"{value:.3f}"
        increase = "-" if value is None else f"{(value / reference - 1) * 100:+.2f} %"
        print(f"| {path} | {what} | {figure} | {increase} |")
    rtn = {path: value for path, what, value in rows if what.startswith("rtn") and value}
    for path, what, value in rows:
        if what.endswith("(ships)") and path in rtn and value:
            share = (value - reference) / (rtn[path] - reference) if rtn[path] > reference else float("nan")
            print(f"\n{path}: the shipped {what.split()[0]} has {share:.2f}x RTN's perplexity increase")
    peers = [value for path, what, value in rows if not path.startswith(("chipfit", "float")) and value]
    if peers:
        print(f"best peer: perplexity {min(peers):.3f} ({(min(peers) / reference - 1) * 100:+.2f} %)")

    # decode rate: the shipped calibrated variant against RTN on the same backend, as its runtime loads them
    contenders = {}
    for backend, (method, artifact) in shipped.items():
        target = next(t for t, b in CHIPFIT if b == backend)
        pinned = build(model, target, backend, work / f"rtn-{backend}", samples, weight_method="rtn")
        if pinned.artifact and method != "rtn":
            contenders[f"{backend} rtn"] = runner_of(Path(pinned.artifact), args.threads)
            contenders[f"{backend} {method}"] = runner_of(artifact, args.threads)
    if not contenders:
        return
    prompt = [t for window in text.windows for t in window][:64]
    times: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for runner in contenders.values():
        runner.generate(prompt[:8], 4)  # warm-up
    for r in range(args.rounds):  # interleaved, in a rotating order
        for name in names[r % len(names):] + names[:r % len(names)]:
            generation = contenders[name].generate(prompt, 64)
            times[name].append(len(generation.token_s) / sum(generation.token_s))
    print(f"\ndecode tok/s (64-token prompt, 64 new, {args.threads} threads, {args.rounds} interleaved rounds, median):")
    for name, rates in times.items():
        print(f"  {name}: {statistics.median(rates):.1f}")
    for backend, (method, _) in shipped.items():
        if f"{backend} rtn" in times and f"{backend} {method}" in times:
            ratio = statistics.median(times[f"{backend} {method}"]) / statistics.median(times[f"{backend} rtn"])
            print(f"  {backend}: {method} decodes at {ratio:.2f}x RTN's rate")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
