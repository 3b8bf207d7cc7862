"""A vision-language model on this host: chipfit's shipped artifact against llama.cpp's own export path and
transformers, side by side in one run: image encode time, time to first token with an image, decode rate.

    .venv/bin/python benchmarks/vlm.py [--layers 4] [--vision-layers 8] [--rounds 3] [--side 448] [--new 32]

The model is Qwen2.5-VL-3B-shaped (its text widths, heads and 151936-token vocabulary with tied embeddings, its
vision encoder's widths, patch, merge and window; --layers of its 36 text layers and --vision-layers of its 32
vision blocks, random weights). chipfit builds it as a user does (``chipfit build -t host --precision int4``: the
decoder at llama.cpp's Q4_K_M, the vision part at f16, verified from images). The peer is llama.cpp's documented
flow with the tree chipfit's toolchain keeps: ``convert_hf_to_gguf.py --outtype f16`` and ``--mmproj --outtype
f16``, then ``llama_model_quantize`` to Q4_K_M, run with mtmd's own image settings (chipfit's artifact carries the
model's processor's bounds instead). Both pairs run through llama-cpp-python's mtmd bindings as an app loads them
(chipfit's runner, with ``--threads``); transformers eager fp32 (the reference) is the third path. Each round
every path encodes the same drawn image (--side pixels square) and generates --new tokens after it, in a rotating
order (interleaved), with a pause between paths.
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
sys.path.insert(0, str(ROOT))
PROMPT = "<image> Describe the picture in one sentence."


def make_model(folder: Path, layers: int, vision_layers: int, side: int) -> Path:
    from compiler.llm.synthetic import vision_language

    text = dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=layers,
                num_attention_heads=16, num_key_value_heads=2, max_position_embeddings=32768,
                tie_word_embeddings=True,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]})
    vision = dict(depth=vision_layers, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                  fullatt_block_indexes=list(range(3, vision_layers, 4)), window_size=112)
    return vision_language(folder, text=text, vision=vision, init_std=0.02, max_pixels=max(side * side, 56 * 56))


def llama_cpp_peer(model: Path, out: Path) -> None:
    """llama.cpp's documented flow: the text model and the mmproj at f16, then Q4_K_M from the f16 text model."""
    from compiler.backends.llamacpp import backend

    state = backend.environment_state()
    source = state.source("llama-cpp-python") / "vendor" / "llama.cpp"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        for outfile, mmproj in (("f16.gguf", False), ("mmproj-f16.gguf", True)):
            request = Path(scratch) / "request.json"
            request.write_text(json.dumps({"op": "convert", "source": str(source), "model": str(model),
                                           "outfile": str(out / outfile), "outtype": "f16", "mmproj": mmproj,
                                           "result": str(Path(scratch) / "result.json")}))
            subprocess.run([sys.executable, "-m", "compiler.backends.llamacpp.convert", str(request)], check=True,
                           capture_output=True, cwd=scratch, env={**os.environ, "NO_LOCAL_GGUF": "1",
                                                                  "PYTHONPATH": str(ROOT)})
    runtime = ROOT / "compiler" / "backends" / "llamacpp" / "runtime.py"
    subprocess.run([str(state.python_exe), str(runtime), "quantize", str(out / "f16.gguf"), str(out / "Q4_K_M.gguf"),
                    "Q4_K_M", str(os.cpu_count())], check=True, capture_output=True)


class Mtmd:
    """A text GGUF + mmproj pair through llama.cpp's mtmd (chipfit's runner: times taken inside llama.cpp's process)."""

    def __init__(self, text: Path, mmproj: Path, threads: int, context: int, image_token: int,
                 min_tokens: int = 0, max_tokens: int = 0) -> None:
        from compiler.backends.llamacpp import backend
        from compiler.backends.llamacpp.runner import LlamaCppRunner, VisionPart

        self.runner = LlamaCppRunner(backend.environment_state().python_exe, text, context, threads, "F16",
                                     VisionPart(mmproj, min_tokens, max_tokens, image_token))

    def tokens(self, image) -> int:
        return self.runner.prompt_ids(PROMPT, [image]).count(self.runner.vision.image_token)

    def run(self, image, new):
        g = self.runner.generate_images(PROMPT, [image], new)
        return g.encode_s, g.prefill_s, sum(g.token_s) / max(1, len(g.token_s))


class Transformers:
    def __init__(self, folder: Path, threads: int) -> None:
        import torch

        from compiler.frontend import load_model

        torch.set_num_threads(threads)
        self.model = load_model(folder)
        self.torch = torch

    def tokens(self, image) -> int:
        from compiler.vlm.families import reference_inputs

        _, ids = reference_inputs(self.model, PROMPT, [image])
        return ids.count(self.model.vision.image_token_id)

    def run(self, image, new):
        from compiler.vlm.families import reference_features, reference_inputs

        torch, model = self.torch, self.model.torch_model()
        start = time.perf_counter()
        reference_features(self.model, image)
        encode = time.perf_counter() - start
        inputs, _ = reference_inputs(self.model, PROMPT, [image])
        with torch.no_grad():
            start = time.perf_counter()
            model.generate(**inputs, max_new_tokens=1, min_new_tokens=1, do_sample=False)
            ttft = time.perf_counter() - start
            start = time.perf_counter()
            model.generate(**inputs, max_new_tokens=new, min_new_tokens=new, do_sample=False)
            whole = time.perf_counter() - start
        return encode, ttft, max(whole - ttft, 1e-9) / max(1, new - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vision-layers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--side", type=int, default=448, help="the image's side in pixels (a multiple of 28)")
    parser.add_argument("--new", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pause", type=float, default=1.0)
    parser.add_argument("--workdir", help="keep the models and artifacts here (default: a temporary folder)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="chipfit-vlm-bench-"))
    model = work / "qwen2.5-vl-3b-shaped"
    timings: dict[str, float] = {}
    if not model.exists():
        start = time.perf_counter()
        make_model(model, args.layers, args.vision_layers, args.side)
        timings["make the model"] = time.perf_counter() - start
    built = work / "chipfit"
    artifact = built / model.name / "host"
    if not artifact.exists() and not (built / model.name / "host.failed").exists():
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "compiler.cli", "build", str(model), "-t", "host", "--precision",
                               "int4", "--context", "1024", "-o", str(built)], cwd=ROOT, capture_output=True, text=True)
        timings["chipfit build -t host --precision int4"] = time.perf_counter() - start
        print(done.stdout[-1500:])
        if done.returncode not in (0, 1):
            raise SystemExit(f"chipfit build failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    if not artifact.exists():
        artifact = built / model.name / "host.failed"  # random weights may fail int4 agreement: timed as built
    peer = work / "llama.cpp"
    if not (peer / "Q4_K_M.gguf").exists():
        start = time.perf_counter()
        llama_cpp_peer(model, peer)
        timings["llama.cpp convert f16 + mmproj f16 + quantize Q4_K_M"] = time.perf_counter() - start
    for what, seconds in timings.items():
        print(f"{what}: {seconds:.0f} s")

    from targets.manifest import read_artifact

    manifest = read_artifact(artifact).manifest
    settings = manifest.llm.vision.runtime_settings
    context = 1024
    paths = {
        "chipfit host (llama.cpp Q4_K_M + mmproj f16)": Mtmd(
            artifact / "model.gguf", artifact / "mmproj.gguf", args.threads, context, settings["image_token_id"],
            settings["image_min_tokens"], settings["image_max_tokens"]),
        "llama.cpp's own flow (Q4_K_M + mmproj f16)": Mtmd(
            peer / "Q4_K_M.gguf", peer / "mmproj-f16.gguf", args.threads, context, settings["image_token_id"]),
        "transformers eager fp32": Transformers(model, args.threads),
    }
    from PIL import Image, ImageDraw

    picture = Image.new("RGB", (args.side, args.side), (30, 90, 200))
    ImageDraw.Draw(picture).ellipse((args.side // 8, args.side // 8, args.side // 2, args.side // 2),
                                    fill=(240, 200, 10))
    image = np.asarray(picture, dtype=np.uint8)
    tokens = {name: path.tokens(image) for name, path in paths.items()}
    for path in paths.values():
        path.run(image, 2)  # warm-up
    samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in paths}
    names = list(paths)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            samples[name].append(paths[name].run(image, args.new))
            time.sleep(args.pause)
    print(f"\n{args.layers}/36 text layers, {args.vision_layers}/32 vision blocks, a {args.side}x{args.side} image, "
          f"{args.new} new tokens, {args.threads} threads, {args.rounds} interleaved rounds\n")
    print(f"| path | image tokens | encode ms | TTFT ms (with the image) | decode tok/s |")
    print("|---|---|---|---|---|")
    rows = {}
    for name, runs in samples.items():
        encode = statistics.median(s[0] for s in runs) * 1e3
        ttft = statistics.median(s[1] for s in runs) * 1e3
        decode = 1 / statistics.median(s[2] for s in runs)
        rows[name] = (encode, ttft, decode)
        print(f"| {name} | {tokens[name]} | {encode:.1f} | {ttft:.1f} | {decode:.1f} |")
    ours, theirs = rows[names[0]], rows[names[1]]
    print(f"\nchipfit / llama.cpp's own flow: encode {theirs[0] / ours[0]:.2f}x as fast, TTFT "
          f"{theirs[1] / ours[1]:.2f}x, decode {ours[2] / theirs[2]:.2f}x; chipfit / transformers: encode "
          f"{rows[names[2]][0] / ours[0]:.2f}x, TTFT {rows[names[2]][1] / ours[1]:.2f}x, decode "
          f"{ours[2] / rows[names[2]][2]:.2f}x")
    print(f"chipfit's artifact numerics: {manifest.numerics.status}: "
          f"{(manifest.numerics.generation or {}).get('summary', manifest.numerics.reason)}")


if __name__ == "__main__":
    main()
