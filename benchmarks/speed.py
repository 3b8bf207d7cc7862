"""chipfit's artifacts against the runtimes a user already has, side by side, in interleaved rounds.

    .venv/bin/python benchmarks/speed.py [--models resnet18,mobilenetv2,bert,llama,hf-bert,hf-vit] [--rounds 7]
                                         [--tune-trials N]

Models are built from Hugging Face configs with random weights (no download), batch 1:
ResNet-18 and MobileNetV2 (224x224 images), a BERT-base-shaped encoder stack (hidden 768, 12 heads,
FFN 3072, 4 layers, 128 tokens) and a Llama forward (2 layers of width 512, 64-token prefill).

``hf-bert`` and ``hf-vit`` are Hugging Face folders (`compiler.frontend.optimum.synthetic`: BERT-base width, hidden
768, 12 heads, 4 layers, a sequence classifier at 128 tokens; ViT-base width, 4 layers, 224x224 images) built the way
a user builds them: ``chipfit build FOLDER`` (optimum's export in its environment, int8 calibrated through the model's
processor on sentences / images) for host (ONNX Runtime and OpenVINO) and x86-64-avx2 (ONNX Runtime, fp32); untuned
TVM is left out (`HF_BACKENDS`). Their peers start from optimum's own export, unchanged:
ONNX Runtime on it at ORT_ENABLE_ALL, after ONNX Runtime's transformer optimizer (`optimize_model`, model_type bert /
vit: its attention and LayerNorm fusions, what optimum's ORTOptimizer runs), and ORT int8 QDQ of the export as above.

Contenders, all timed in the same interleaved rounds (this host's speed drifts 2-3x between minutes):

* chipfit: `build` for host, x86-64-avx2, arm64-cortex-a76 and intel-core-ultra-cpu at fp32 and int8 (calibrated
  on 32 samples); every artifact that runs here, through the backend's own runner, i.e. as a user's runtime
  loads it (ONNX Runtime at its default ORT_ENABLE_ALL; TVM's VM; ExecuTorch's runtime; OpenVINO's CPU plugin
  at an f32 precision hint). The Arm target's artifact runs here only as a proxy (the same .pte / ONNX file on
  this CPU);
* peers at their best settings: ONNX Runtime on the plain `torch.onnx.export` graph at ORT_ENABLE_ALL;
  ORT int8 QDQ (`quantize_static`, per-channel) with uint8 and with int8 activations, the faster one kept;
  ExecuTorch/XNNPACK fp32 and int8 (XNNPACKQuantizer); OpenVINO on the same plain export (`convert_model`, CPU
  plugin at f32: its bf16 default on AVX-512 BF16 CPUs is not an fp32 peer) and NNCF int8 (`nncf.quantize`
  with its defaults); torch eager.

Ratios are best fp32 peer / contender (above 1: faster than the best peer). With ``--tune-trials N`` ResNet-18's
TVM kernels are tuned for the host first (`chipfit tune`, records kept in a scratch cache) and the TVM host
artifact is built again with them; the trials and tuning time are printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGETS = ("host", "x86-64-avx2", "arm64-cortex-a76", "intel-core-ultra-cpu")


class _Logits(torch.nn.Module):
    """A Hugging Face model's first output as a plain tensor (traceable, one output)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, return_dict=False)[0]


def build_model(name: str) -> tuple[torch.nn.Module, torch.Tensor, Callable[[int], np.ndarray]]:
    """(module, example input, samples(n) for calibration)."""
    import transformers

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    images = (lambda n: rng.normal(size=(n, 1, 3, 224, 224)).astype(np.float32))
    if name == "resnet18":
        config = transformers.ResNetConfig(layer_type="basic", depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512],
                                           embedding_size=64)
        return _Logits(transformers.ResNetForImageClassification(config).eval()), torch.randn(1, 3, 224, 224), images
    if name == "mobilenetv2":
        model = transformers.MobileNetV2ForImageClassification(transformers.MobileNetV2Config()).eval()
        return _Logits(model), torch.randn(1, 3, 224, 224), images
    tokens = (lambda vocab, length: lambda n: rng.integers(0, vocab, size=(n, 1, length)).astype(np.int64))
    if name == "bert":
        config = transformers.BertConfig(hidden_size=768, num_attention_heads=12, intermediate_size=3072,
                                         num_hidden_layers=4, vocab_size=30522)
        return _Logits(transformers.BertModel(config).eval()), torch.randint(0, 30522, (1, 128)), tokens(30522, 128)
    if name == "llama":
        config = transformers.LlamaConfig(hidden_size=512, num_hidden_layers=2, num_attention_heads=8,
                                          num_key_value_heads=8, intermediate_size=1376, vocab_size=32000,
                                          max_position_embeddings=512, use_cache=False)
        return (_Logits(transformers.LlamaForCausalLM(config).eval()), torch.randint(0, 32000, (1, 64)),
                tokens(32000, 64))
    raise SystemExit(f"unknown model {name!r}")


def _ort_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()  # the runtime's defaults: ORT_ENABLE_ALL, all cores
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session, session.get_inputs()[0].name


def best_ort_int8(plain: Path, calibration: list[dict[str, np.ndarray]], feed: dict[str, np.ndarray],
                  work: Path) -> tuple[str, Callable[[], object]] | None:
    """ORT int8 QDQ (`quantize_static`, per-channel) of ``plain`` with uint8, int8 and uint8 + 7-bit weights
    activations/weights (ONNX Runtime's own guidance for CPUs without VNNI), the fastest kept: (its label, its call)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calibration)

        def get_next(self):
            return next(self.items, None)

    best = None
    for activation, reduce in ((QuantType.QUInt8, False), (QuantType.QInt8, False), (QuantType.QUInt8, True)):
        out = work / f"peer-int8-{activation.name}{'-7bit' if reduce else ''}.onnx"
        try:
            quantize_static(str(plain), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=activation, weight_type=QuantType.QInt8, reduce_range=reduce)
        except Exception as exc:  # noqa: BLE001 - a peer that cannot quantize this model is reported, not fatal
            print(f"  ORT int8 ({activation.name}) failed: {type(exc).__name__}: {str(exc)[:120]}")
            continue
        session, _ = _ort_session(out)
        call = (lambda s=session: s.run(None, feed))
        seconds = statistics.median(_once(call) for _ in range(5))
        if best is None or seconds < best[0]:
            best = (seconds, activation.name + (", 7-bit weights" if reduce else ""), call)
    return None if best is None else best[1:]


def ort_peers(module, example, samples, work: Path) -> dict[str, tuple[str, Callable[[], object]]]:
    plain = work / "peer.onnx"
    torch.onnx.export(module, (example,), str(plain), dynamo=True, input_names=["x"], external_data=False)
    session, name = _ort_session(plain)
    feed = {name: example.numpy()}
    peers = {"ORT fp32 (plain export, ENABLE_ALL)": ("fp32", lambda s=session, f=feed: s.run(None, f))}
    best = best_ort_int8(plain, [{name: c} for c in samples(32)], feed, work)
    if best is not None:
        peers[f"ORT int8 QDQ ({best[0]} activations, the faster)"] = ("int8", best[1])
    return peers


def _once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def openvino_peers(module, example, samples, work: Path) -> dict[str, tuple[str, Callable[[], object]]]:
    import nncf
    import openvino as ov

    plain = work / "peer.onnx"  # written by ort_peers: the same plain export
    core, peers = ov.Core(), {}
    model = ov.convert_model(str(plain))
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    feed = [example.numpy()]
    peers["OpenVINO fp32 (plain export, CPU plugin, f32)"] = ("fp32", lambda c=compiled: c(feed))
    try:
        quantized = nncf.quantize(ov.convert_model(str(plain)), nncf.Dataset(list(samples(32))), subset_size=32)
        compiled8 = core.compile_model(quantized, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        peers["OpenVINO int8 (NNCF defaults, CPU plugin)"] = ("int8", lambda c=compiled8: c(feed))
    except Exception as exc:  # noqa: BLE001
        print(f"  OpenVINO int8 failed: {type(exc).__name__}: {str(exc)[:120]}")
    return peers


def executorch_peers(module, example, samples, work: Path) -> dict[str, tuple[str, Callable[[], object]]]:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    peers = {}
    program = torch.export.export(module, (example,))
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    for precision in ("fp32", "int8"):
        try:
            ep = program
            if precision == "int8":
                prepared = prepare_pt2e(program.module(), quantizer)
                for sample in samples(32):
                    prepared(torch.from_numpy(sample))
                ep = torch.export.export(convert_pt2e(prepared), (example,))
            pte = work / f"peer-{precision}.pte"
            pte.write_bytes(to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch().buffer)
            method = Runtime.get().load_program(pte).load_method("forward")
            peers[f"ExecuTorch XNNPACK {precision}"] = (precision, lambda m=method: m.execute([example]))
        except Exception as exc:  # noqa: BLE001
            print(f"  ExecuTorch {precision} failed: {type(exc).__name__}: {str(exc)[:120]}")
    return peers


def chipfit_contenders(name: str, module, example, samples, work: Path, progress) -> dict[str, tuple[str, Callable]]:
    from compiler.build import BuildOptions, build
    from compiler.frontend import load_model
    from targets.host import detect_host
    from targets.manifest import read_artifact
    from targets.registry import backend_registry, target_registry

    pt2 = work / f"{name}.pt2"
    torch.export.save(torch.export.export(module, (example,)), pt2)
    np.savez(work / "calibration.npz", **{"x": samples(32)[:, 0]})
    model = load_model(str(pt2))
    contenders: dict[str, tuple[str, Callable]] = {}
    targets, backends, host = target_registry(), backend_registry(), detect_host()
    for precision in ("fp32", "int8"):
        start = time.perf_counter()
        results = build(model, BuildOptions(list(TARGETS), work / precision, precision=precision,
                                            calibration=str(work / "calibration.npz")))
        progress(f"  chipfit build {precision}: {time.perf_counter() - start:.0f} s")
        for r in results:
            label = f"chipfit {r.target} {r.backend} {precision}"
            if r.status != "verified":
                print(f"  {label}: {r.status} {(r.message or (r.numerics.reason if r.numerics else ''))[:160]}")
                continue
            if r.choice:
                figures = ", ".join(f"{c.backend} {c.latency_ms if c.latency_ms is not None else c.status}"
                                    for c in r.choice.candidates)
                print(f"  {r.target} {precision}: chose {r.choice.chosen} among {figures}")
            artifact = read_artifact(Path(r.artifact))
            m = artifact.manifest
            plan = backends.get(m.backend.name).plan_run(artifact.path, m.backend.options, m.signature,
                                                         targets.get(m.target.id), host)
            batch = {m.signature.inputs[0].name: example.numpy()}
            contenders[label + (" (proxy here)" if plan.proxy else "")] = (
                precision, lambda p=plan, b=batch: p.runner.run(b))
    return contenders


def tuned_tvm(name: str, work: Path, trials: int, example) -> dict[str, tuple[str, Callable]]:
    """ResNet-18's TVM host artifact after `chipfit tune` (records in a scratch cache)."""
    import subprocess

    from compiler.build import BuildOptions, build
    from compiler.frontend import load_model
    from targets.host import detect_host
    from targets.manifest import read_artifact
    from targets.registry import backend_registry, target_registry

    env = {**os.environ, "CHIPFIT_CACHE_DIR": str(work / "tune-cache")}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "compiler.cli", "tune", str(work / f"{name}.pt2"), "-t", "host",
                           "--trials", str(trials), "-q"], env=env, capture_output=True, text=True, cwd=ROOT)
    print(f"  chipfit tune {name} -t host --trials {trials}: {time.perf_counter() - start:.0f} s; "
          f"{done.stdout.strip() or done.stderr[-500:]}")
    os.environ["CHIPFIT_CACHE_DIR"] = env["CHIPFIT_CACHE_DIR"]
    try:
        (r,) = build(load_model(str(work / f"{name}.pt2")), BuildOptions(["host"], work / "tuned", backend="tvm"))
    finally:
        del os.environ["CHIPFIT_CACHE_DIR"]
    m = read_artifact(Path(r.artifact)).manifest
    applied = next(p for p in m.passes if p["name"] == "tvm-schedules")["tuned_records_applied"]
    print(f"  tuned records applied to {len(applied)} kernels")
    plan = backend_registry().get("tvm").plan_run(Path(r.artifact), m.backend.options, m.signature,
                                                  target_registry().get("host"), detect_host())
    batch = {m.signature.inputs[0].name: example.numpy()}
    return {f"chipfit host tvm fp32, tuned ({trials} trials)": ("fp32", lambda: plan.runner.run(batch))}


HF_FOLDERS = {"hf-bert": ("bert", "bert"), "hf-vit": ("vit", "vit")}  # name -> (synthetic kind, ORT model_type)
#: the backends built for the Hugging Face folders, per target: untuned TVM is left out (at BERT-base width its race
#: against the fusion-free variant alone ran past 15 minutes on 2 cores, and untuned it is far slower than ONNX Runtime);
#: x86-64-avx2 is built at fp32 only: on a VNNI host its int8 candidates are judged through the numpy emulation of the
#: chip's int16 pairs, which ran past 13 minutes at BERT-base width
HF_BACKENDS = (("onnxruntime", ("host", "x86-64-avx2")), ("openvino", ("host",)))


def hf_round(name: str, work: Path, progress) -> tuple[dict[str, tuple[str, Callable]], dict[str, tuple[str, Callable]]]:
    """(chipfit's contenders, the peers) for a Hugging Face folder, all on the processor's first sample."""
    from onnxruntime.transformers.optimizer import optimize_model

    from compiler.build import BuildOptions, build
    from compiler.frontend import load_model
    from compiler.frontend.optimum import exported_graph, write_reference_inputs
    from compiler.frontend.optimum.synthetic import hf_folder
    from targets.host import detect_host
    from targets.manifest import read_artifact
    from targets.registry import backend_registry, target_registry

    kind, model_type = HF_FOLDERS[name]
    folder = hf_folder(work / name, kind, hidden=768, layers=4, heads=12)
    start = time.perf_counter()
    model = load_model(folder)
    progress(f"  optimum export + check against transformers: {time.perf_counter() - start:.0f} s")
    if kind == "bert":
        calibration = work / "sentences.txt"
        calibration.write_text("\n".join(f"sentence {i} about a model that runs on a small board." for i in range(32)))
    else:
        calibration = write_reference_inputs(work / "images", "image")
    feed = {k: v[:1] for k, v in model.samples.items()}
    targets, backends, host = target_registry(), backend_registry(), detect_host()
    contenders: dict[str, tuple[str, Callable]] = {}
    for precision in ("fp32", "int8"):
        start = time.perf_counter()
        results = []
        for backend, target_ids in HF_BACKENDS:
            target_ids = [t for t in target_ids if precision == "fp32" or t != "x86-64-avx2"]
            results += build(model, BuildOptions(target_ids, work / precision / backend, precision=precision,
                                                 calibration=str(calibration), backend=backend))
        progress(f"  chipfit build {precision}: {time.perf_counter() - start:.0f} s")
        for r in results:
            if r.status != "verified":
                print(f"  chipfit {r.target} {r.backend} {precision}: {r.status} {(r.message or '')[:160]}")
                continue
            m = read_artifact(Path(r.artifact)).manifest
            plan = backends.get(m.backend.name).plan_run(Path(r.artifact), m.backend.options, m.signature,
                                                         targets.get(m.target.id), host)
            contenders[f"chipfit {r.target} {r.backend} {precision}"] = (precision,
                                                                         lambda p=plan: p.runner.run(feed))
    # optimum's own export, as it wrote it (the cached export folder chipfit checked against transformers)
    plain = exported_graph(model)
    peers: dict[str, tuple[str, Callable]] = {}
    session, _ = _ort_session(plain)
    peers["ORT fp32 (optimum's export, ENABLE_ALL)"] = ("fp32", lambda s=session: s.run(None, feed))
    optimized = work / "peer-optimized.onnx"
    optimize_model(str(plain), model_type=model_type, num_heads=12, hidden_size=768).save_model_to_file(str(optimized))
    session, _ = _ort_session(optimized)
    peers["ORT fp32 (optimum's export + transformer optimizer)"] = ("fp32", lambda s=session: s.run(None, feed))
    count = len(next(iter(model.samples.values())))
    # quantized from the plain export: the optimizer's contrib ops have no inferred types for quantize_static
    best = best_ort_int8(plain, [{k: v[i:i + 1] for k, v in model.samples.items()} for i in range(count)], feed, work)
    if best is not None:
        peers[f"ORT int8 QDQ of optimum's export ({best[0]} activations, the fastest)"] = ("int8", best[1])
    return contenders, peers


def main() -> None:
    from compiler.speed import race

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet18,mobilenetv2,bert,llama")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--budget-s", type=float, default=20.0, help="timed seconds per model, over all rounds")
    parser.add_argument("--tune-trials", type=int, default=0, help="tune ResNet-18's TVM kernels with this many trials")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    from targets.host import detect_host

    host = detect_host()
    facts = host.facts()
    print(f"host: {facts.vendor} {facts.cpu}, {facts.arch}, {facts.cores} cores, {facts.memory_gb} GB; isa "
          f"{', '.join(facts.isa) or 'baseline'}; int8 arithmetic {facts.int8_arithmetic}; batch 1; "
          f"torch {torch.__version__}\n")
    summary = []
    for name in args.models.split(","):
        print(f"== {name}")
        with tempfile.TemporaryDirectory(prefix=f"chipfit-speed-{name}-") as tmp:
            work = Path(tmp)
            if name in HF_FOLDERS:
                contenders, peers = hf_round(name, work, print)
            else:
                module, example, samples = build_model(name)
                contenders = chipfit_contenders(name, module, example, samples, work, print)
                if args.tune_trials and name == "resnet18":
                    contenders |= tuned_tvm(name, work, args.tune_trials, example)
                peers = (ort_peers(module, example, samples, work) | openvino_peers(module, example, samples, work)
                         | executorch_peers(module, example, samples, work))
                with torch.no_grad():
                    peers["torch eager fp32"] = ("fp32", lambda: module(example))
                    peers["torch eager fp32"][1]()
            everything = {**{k: v[1] for k, v in contenders.items()}, **{k: v[1] for k, v in peers.items()}}
            timed = race(everything, rounds=args.rounds, budget_s=args.budget_s)
        best_fp32 = min(timed[k].median_ms for k, (p, _) in peers.items() if p == "fp32")
        best_int8 = min((timed[k].median_ms for k, (p, _) in peers.items() if p == "int8"), default=None)
        print(f"{'contender':<62} {'prec':<5} {'ms p50':>9} {'best fp32 peer / it':>20} {'spread':>7}")
        kinds = {**{k: ("chipfit", p) for k, (p, _) in contenders.items()}, **{k: ("peer", p) for k, (p, _) in peers.items()}}
        for label in sorted(timed, key=lambda k: timed[k].median_ms):
            ms = timed[label].median_ms
            print(f"{label:<62} {kinds[label][1]:<5} {ms:9.3f} {best_fp32 / ms:19.2f}x {timed[label].spread:6.2f}x")
        chosen = {k: timed[k].median_ms for k in contenders}
        for target in TARGETS:
            for precision in ("fp32", "int8"):
                mine = [ms for k, ms in chosen.items() if f" {target} " in k and k.split(" ")[3] == precision]
                if mine:
                    peer = best_fp32 if precision == "fp32" else best_int8
                    summary.append((name, target, precision, min(mine), peer))
        print()
    print(f"{'model':<12} {'target':<18} {'prec':<5} {'chipfit ms':>10} {'best peer ms':>12} {'peer/chipfit':>13}")
    for name, target, precision, mine, peer in summary:
        ratio = f"{peer / mine:12.2f}x" if peer else "           -"
        print(f"{name:<12} {target:<18} {precision:<5} {mine:10.3f} {peer if peer else float('nan'):12.3f} {ratio}")
    print("\npeer/chipfit above 1: chipfit's artifact is faster than the best peer of that precision "
          "(int8 peers: ORT QDQ, OpenVINO NNCF, ExecuTorch int8). Arm artifacts are timed here as proxies.")


if __name__ == "__main__":
    main()
