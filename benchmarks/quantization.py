"""Float vs int8 vs int4 on this host: latency, artifact size and accuracy, side by side; and int8 accuracy of
chipfit against ONNX Runtime's own quantizer on models trained here.

    .venv/bin/python benchmarks/quantization.py [--runs 30] [--accuracy-only]

Accuracy: a conv net trained on scikit-learn's digits, as trained and rescaled per channel between its
convolutions (function-preserving; spreads of 1 and 3 decades). Each is quantized by `quantize_static`
(QDQ, per-tensor and per-channel weights, MinMax / Percentile / Entropy) and by chipfit for `host`
(per-channel weights as the target declares; each method; pre-quantization passes chosen automatically),
and judged on 397 held-out labelled digits: top-1 drop in points against the float model.

Builds each model with chipfit for the `host` target (ONNX Runtime backend) at fp32, int8
(minmax, calibrated on 32 seeded samples) and, for the transformer, int4 weight-only; then times
each artifact's runner (median of --runs, batch 1) and reports the ratio to fp32. Accuracy is the
output agreement with the float model on 32 held-out seeded samples (the models have random
weights: there is no task accuracy to measure), plus the worst output SQNR.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from models import ResNet18, TinyTransformer, randomized  # noqa: E402

from targets.manifest import read_artifact  # noqa: E402
from compiler.backends import backend_registry  # noqa: E402
from compiler.build import BuildOptions, build  # noqa: E402
from compiler.frontend import trace_module  # noqa: E402
from profiles.latency import time_callable  # noqa: E402
from targets.host import detect_host  # noqa: E402
from targets.registry import target_registry  # noqa: E402


def _samples(shape, count, seed, positive=False):
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((count, *shape[1:])).astype(np.float32)
    return np.abs(data) if positive else data


def bench(name, module, example, input_name, precisions, runs, workdir: Path) -> list[dict]:
    traced = trace_module(module, (example,), name=name)
    calib = workdir / f"{name}-calib.npz"
    evals = workdir / f"{name}-eval.npz"
    np.savez(calib, **{input_name: _samples(example.shape, 32, 1)})
    np.savez(evals, **{input_name: _samples(example.shape, 32, 2)})
    rows = []
    registry, backends, host = target_registry(), backend_registry(), detect_host()
    for precision in precisions:
        results = build(traced, BuildOptions(targets=["host"], out_dir=workdir / precision, backend="onnxruntime",
                                             precision=precision, calibration=str(calib), eval=str(evals),
                                             samples=str(evals), measure_latency=False))
        result = results[0]
        artifact = read_artifact(result.artifact)
        m = artifact.manifest
        plan = backends.get("onnxruntime").plan_run(artifact.path, m.backend.options, m.signature, registry.get("host"),
                                                    host)
        one = {input_name: _samples(example.shape, 1, 3)}
        latency = time_callable(lambda: plan.runner.run(one), warmup=5, min_runs=runs, max_runs=runs, budget_s=0)
        accuracy = (result.quantization or {}).get("accuracy")
        onnx_bytes = artifact.manifest.files["model.onnx"].bytes
        rows.append({
            "model": name, "precision": precision, "latency_ms_p50": latency.latency_ms_p50, "cv": latency.cv,
            "model_onnx_mb": onnx_bytes / 1e6, "status": result.status,
            "agreement_pct": accuracy["agreement_with_float_pct"] if accuracy else 100.0,
            "sqnr_db": min((o["sqnr_db"] for o in accuracy["outputs"]), default=None) if accuracy else None,
        })
    return rows


def _top1(outputs: np.ndarray, labels: np.ndarray) -> float:
    return float((outputs.argmax(1) == labels).mean() * 100)


def accuracy_table(workdir: Path) -> None:
    import onnxruntime as ort
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    from models import trained_digits

    print("int8 top-1 drop (points) on 397 held-out digits; lower is better; chipfit: every layer int8 unless noted\n")
    print(f"{'model':<22} {'float top-1':>11} " + " ".join(f"{h:>13}" for h in
          ("ORT tensor mm", "ORT chan mm", "ORT chan pct", "ORT chan ent", "chipfit mm", "chipfit pct",
           "chipfit ent", "chipfit mse")) + "  chipfit's pre-quantization choice (minmax)")
    for label, decades in (("digits", 0.0), ("digits, 1 decade", 1.0), ("digits, 3 decades", 3.0)):
        net, train, test, labels = trained_digits(decades)
        with torch.no_grad():
            float_top1 = _top1(net(torch.from_numpy(test)).numpy(), labels)
        traced = trace_module(net, (torch.from_numpy(test[:1]),), name="digits")
        folder = workdir / label.replace(" ", "_").replace(",", "")
        folder.mkdir()
        np.savez(folder / "calib.npz", image=train[:256])
        np.savez(folder / "eval.npz", image=test, label=labels)
        plain = folder / "float.onnx"
        onnx_model = traced.onnx_model
        import onnx

        onnx.save(onnx_model, plain)
        name = onnx_model.graph.input[0].name

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.items = iter([{name: train[i:i + 1]} for i in range(256)])

            def get_next(self):
                return next(self.items, None)

        cells = []
        for per_channel, method in ((False, "MinMax"), (True, "MinMax"), (True, "Percentile"), (True, "Entropy")):
            out = folder / f"ort-{per_channel}-{method}.onnx"
            quantize_static(str(plain), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod[method])
            session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
            outputs = np.concatenate([session.run(None, {name: test[i:i + 1]})[0] for i in range(len(test))])
            cells.append(f"{float_top1 - _top1(outputs, labels):13.2f}")
        choice = ""
        for method in ("minmax", "percentile", "entropy", "mse"):
            (r,) = build(traced, BuildOptions(["host"], folder / method, backend="onnxruntime", precision="int8",
                                              method=method, calibration=str(folder / "calib.npz"),
                                              eval=str(folder / "eval.npz"), measure_latency=False))
            q = json.loads((Path(r.artifact) / "manifest.json").read_text())["quantization"]
            kept = f"*{len(q['kept_in_float'])}" if q.get("kept_in_float") else ""
            cells.append(f"{q['accuracy']['top1_drop_points']:12.2f}{kept or ' '}")
            if method == "minmax":
                pre = q.get("pre_quantization", {})
                choice = f"{pre.get('chosen', 'none')} (" + ", ".join(
                    f"{t['variant']} {t['drop']:g}" for t in pre.get("tried", [])) + ")"
        print(f"{label:<22} {float_top1:11.2f} " + " ".join(cells) + f"  {choice}")
    print("\nORT: onnxruntime.quantization.quantize_static, QDQ, uint8 activations, int8 weights, 256 calibration "
          "samples; tensor/chan: per-tensor or per-channel weights. *N: N layers kept in float (none here).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--accuracy-only", action="store_true", help="only the int8 accuracy table")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="chipfit-bench-acc-") as tmp:
        accuracy_table(Path(tmp))
    if args.accuracy_only:
        return
    print()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="chipfit-bench-") as tmp:
        work = Path(tmp)
        rows = bench("resnet18", randomized(ResNet18()), torch.zeros(1, 3, 224, 224), "image", ["fp32", "int8"], args.runs, work)
        rows += bench("transformer", randomized(TinyTransformer()), torch.zeros(1, 64, 256), "tokens",
                      ["fp32", "int8", "int4"], args.runs, work)
    print(f"host: {detect_host().model_name}, onnxruntime CPU, batch 1, median of {args.runs} runs\n")
    print(f"{'model':<12} {'precision':<9} {'p50 ms':>8} {'vs fp32':>8} {'cv':>6} {'model.onnx MB':>14} {'agree %':>8} {'SQNR dB':>8}  status")
    base = {}
    for r in rows:
        if r["precision"] == "fp32":
            base[r["model"]] = r
        b = base[r["model"]]
        speed = b["latency_ms_p50"] / r["latency_ms_p50"]
        sqnr = "-" if r["sqnr_db"] is None else f"{r['sqnr_db']:.1f}"
        print(f"{r['model']:<12} {r['precision']:<9} {r['latency_ms_p50']:>8.3f} {speed:>7.2f}x {r['cv']:>6.3f} "
              f"{r['model_onnx_mb']:>14.2f} {r['agreement_pct']:>8.1f} {sqnr:>8}  {r['status']}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
