"""Measured against estimated latency on this host, repeatability, and the profiler's own overhead.

    .venv/bin/python benchmarks/profiling.py [THREADS]   # e.g. 1: pin the runner to one CPU

Builds the bundled example (ONNX Runtime and TVM) and a ResNet-18-sized net (ONNX Runtime) for
`host`, profiles them twice, and prints per artifact: measured p50 of both runs and their
difference (target: within 3% on an idle machine), the roofline estimate after the per-backend
efficiency fit and its ratio to the measurement, and the wall time of a profile against the time
spent inside timed runs (the profiler's overhead: child process start, imports, warm-up).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from models import ResNet18, randomized  # noqa: E402

from compiler.build import BuildOptions, build  # noqa: E402
from compiler.frontend import load_model, trace_module  # noqa: E402
from profiles.profile import ProfileOptions, profile_artifacts  # noqa: E402


def main() -> None:
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else None
    options = ProfileOptions(runs=200, min_runs=20, warmup=10, budget_s=10.0, threads=threads)
    with tempfile.TemporaryDirectory(prefix="chipfit-prof-") as tmp:
        out = Path(tmp)
        build(load_model("example"), BuildOptions(targets=["host"], out_dir=out, measure_latency=False))
        resnet = trace_module(randomized(ResNet18()), (torch.zeros(1, 3, 224, 224),), name="resnet18")
        build(resnet, BuildOptions(targets=["host"], out_dir=out, backend="onnxruntime", measure_latency=False))
        runs, walls = [], []
        for _ in range(2):
            start = time.perf_counter()
            runs.append(profile_artifacts(out, options))
            walls.append(time.perf_counter() - start)
    first, second = ({(p.model, p.backend): p for p in r.profiles} for r in runs)
    print(f"{'artifact':<26} {'p50 run1 ms':>12} {'p50 run2 ms':>12} {'diff %':>7} {'estimate ms':>12} {'est/meas':>9} {'runs':>5}")
    timed = 0.0
    for key, p in first.items():
        q = second[key]
        a, b = p.latency_ms_p50, q.latency_ms_p50
        timed += sum(p.latency_samples_ms) / 1e3
        est = p.estimate["latency_ms"]
        print(f"{key[0] + ' ' + key[1]:<26} {a:>12.3f} {b:>12.3f} {abs(a - b) / a * 100:>7.2f} {est:>12.3f} "
              f"{est / a:>9.2f} {p.latency.runs:>5}")
    for backend, fit in (runs[0].fit or {}).items():
        print(f"efficiency fit {backend}: {fit['efficiency']:.4f} over {fit['points']} artifacts, worst error "
              f"{fit['max_rel_error'] * 100:.1f}%")
    print(f"profile wall time {walls[0]:.1f} s, of which timed runs {timed:.1f} s "
          f"(overhead {walls[0] - timed:.1f} s for {len(first)} artifacts: child start, imports, warm-up, op profile)")


if __name__ == "__main__":
    main()
