"""Host latency with and without fusion, ONNX Runtime CPU and TVM side by side.

    .venv/bin/python benchmarks/fusion.py [--runs 50]

For the bundled example conv net and a small BERT (4 layers, width 128, 64 tokens; built from a
config with random weights, no download):

* ONNX Runtime: the graph as traced vs after chipfit's fusion pipeline (the host target's
  [fusion] rules), both lowered with ONNX Runtime's graph optimization held at "basic", so the
  difference is chipfit's fusions alone;
* TVM: Relax without fusion (pipeline "default": legalize only) vs with TVM's fusion (pipeline
  "zero": FuseOps + FuseTIR), from the same torch program.

Ratios are "without / with": above 1 means fusion made it faster.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from compiler.backends import backend_registry
from compiler.frontend import load_model, trace_module
from compiler.passes.fusion import fusion_passes
from compiler.build.lowering import lower, make_job
from compiler.passes.pipeline import run_pipeline
from targets.signature import seeded_inputs
from profiles.latency import time_callable
from targets.host import detect_host
from targets.registry import target_registry
from targets.request import BuildRequest, ModelSource


def _bert():
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=1000, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                                     intermediate_size=512, max_position_embeddings=128)
    return trace_module(transformers.BertModel(config).eval(), {"input_ids": torch.randint(0, 1000, (1, 64))}, name="bert")


def _time(backend, model, spec, precision, workdir: Path, runs: int) -> float:
    workdir.mkdir(parents=True)
    request = BuildRequest(ModelSource(model.source, model.name), spec.id, precision=precision)
    lowered = lower(backend, make_job(backend, model, spec, precision, request, workdir, detect_host()))
    plan = backend.plan_run(workdir, lowered.options, lowered.signature, spec, detect_host())
    inputs = seeded_inputs(lowered.signature.concretized(), seed=0, symbolic_size=1)
    return time_callable(lambda: plan.runner.run(inputs), warmup=5, min_runs=runs, max_runs=runs, budget_s=0).latency_ms_p50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    host = target_registry().get("host")
    backends = backend_registry()
    ort, tvm = backends.get("onnxruntime"), backends.get("tvm")
    basic = replace(host, backend_options={**host.backend_options,
                                           "onnxruntime": {**host.backend_options["onnxruntime"], "graph_optimization": "basic",
                                                           "ort_format": False}})
    unfused_tvm = replace(host, backend_options={**host.backend_options,
                                                 "tvm": {**host.backend_options["tvm"], "pipeline": "default"}})
    rows = []
    with tempfile.TemporaryDirectory(prefix="chipfit-fusion-") as tmp:
        for model in (load_model("example"), _bert()):
            passes, _ = fusion_passes(list(host.fusions), ort.accepted_domains, "host")
            fused_graph, records = run_pipeline(model.onnx_model, passes)
            fired = ", ".join(f"{r['name']} x{r['fired']}" for r in records if r.get("fired")) or "none"
            fused = replace(model, onnx_model=fused_graph)
            w = _time(ort, model, basic, "fp32", Path(tmp, model.name, "ort-plain"), args.runs)
            f = _time(ort, fused, basic, "fp32", Path(tmp, model.name, "ort-fused"), args.runs)
            rows.append((model.name, "onnxruntime (basic)", w, f, fired))
            w = _time(tvm, model, unfused_tvm, "fp32", Path(tmp, model.name, "tvm-plain"), max(5, args.runs // 5))
            f = _time(tvm, model, host, "fp32", Path(tmp, model.name, "tvm-fused"), max(5, args.runs // 5))
            rows.append((model.name, "tvm", w, f, "Relax FuseOps/FuseTIR"))
    print(f"host: {detect_host().model_name}; batch 1; median latency in ms\n")
    print(f"{'model':<8} {'backend':<20} {'no fusion':>10} {'fused':>10} {'ratio':>7}  fusions")
    for name, backend, without, with_, fired in rows:
        print(f"{name:<8} {backend:<20} {without:>10.3f} {with_:>10.3f} {without / with_:>6.2f}x  {fired}")


if __name__ == "__main__":
    sys.exit(main())
