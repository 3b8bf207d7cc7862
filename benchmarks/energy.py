"""chipfit's decoder estimate held against published measurements: decode rate and energy per token.

    .venv/bin/python benchmarks/energy.py [--json]

For each public measurement (device, model, quantization, tok/s, W, J/token, source), the same model's shape is
written as a config.json (the published configs' values) and `chipfit plan`'s estimator runs on the matching
built-in target at the measured precision: the ratio estimate / measurement for the decode rate and for J/token,
with the idle share where the spec knows idle power. Nothing is built or run; the figures are the specs'.
A row whose figure comes from the same report as the measurement says so (that part of it is in-sample).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: published configs (config.json values) of the models the measurements ran
SHAPES = {
    "Qwen2.5-0.5B": {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 896,
                     "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
                     "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 32768,
                     "tie_word_embeddings": True, "rope_theta": 1000000.0},
    "Llama-3.2-1B": {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
                     "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
                     "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256,
                     "max_position_embeddings": 131072, "tie_word_embeddings": True, "rope_theta": 500000.0},
}

#: (device, target, model, precision, runtime and quantization, decode tok/s, prefill tok/s, W, J/token, source, note)
MEASUREMENTS = (
    ("Raspberry Pi 5 (4x A76, 2.4 GHz)", "arm64-cortex-a76", "Qwen2.5-0.5B", "int4",
     "llama.cpp CPU, Q4_K_M (0.398 GB file), 4 threads", 25.77, None, 6.37, 0.2585,
     "https://github.com/ggml-org/llama.cpp/issues/26484",
     "the spec's bandwidth (11.59 GB/s) and power under load (6.37 W) come from this report: J/token is in-sample"),
    ("OnePlus 12 (Snapdragon 8 Gen 3)", "snapdragon-8gen3", "Llama-3.2-1B", "int4",
     "ExecuTorch XNNPACK (CPU), SpinQuant int4", 50.2, 260.5, None, None,
     "https://github.com/pytorch/executorch/blob/main/examples/models/llama/README.md (as cited in chipfit issue 27)",
     "the spec's 76.8 GB/s is the whole SoC's (third party) and the NPU's peak; the measurement ran on the CPU cores"),
)


def rows() -> list[dict]:
    from compiler.cli.plan import plan_target
    from compiler.frontend.huggingface import read_layout
    from targets.registry import backend_registry, target_registry

    targets, backends = target_registry(), backend_registry()
    out = []
    with tempfile.TemporaryDirectory(prefix="chipfit-energy-") as scratch:
        for device, target_id, model, precision, how, tok_s, prefill, watts, joules, source, note in MEASUREMENTS:
            folder = Path(scratch) / model
            folder.mkdir(exist_ok=True)
            (folder / "config.json").write_text(json.dumps(SHAPES[model]))
            spec, name, _ = read_layout(folder)
            target = targets.get(target_id)
            plan = plan_target(spec, name, target, [backends.get(b) for b in target.backends], precision, 2048,
                               128, (None, "the spec"))
            ratio = lambda est, meas: round(est / meas, 3) if est is not None and meas else None
            out.append({
                "device": device, "target": target_id, "model": model, "precision": precision, "measured_with": how,
                "measured": {"decode_tok_s": tok_s, "prefill_tok_s": prefill, "watts": watts, "j_per_token": joules},
                "estimated": {"decode_tok_s": plan["decode_tok_s"], "prefill_tok_s": plan["prefill_tok_s"],
                              "j_per_token": plan["j_per_token"], "weight_bytes": plan["memory_plan"]["weight_bytes"],
                              "energy_basis": plan["inputs"]["energy_basis"], "idle_share": plan["inputs"]["idle_share"],
                              "bandwidth_gbs": plan["inputs"]["bandwidth_gbs"], "missing": plan["missing"]},
                "ratio_decode": ratio(plan["decode_tok_s"], tok_s),
                "ratio_j_per_token": ratio(plan["j_per_token"], joules) if watts else None,
                "source": source, "note": note,
            })
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    table = rows()
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    fmt = lambda v, f: "-" if v is None else format(v, f)
    print("| device | target | model | measured tok/s | estimated tok/s | ratio | measured J/token | estimated J/token "
          "| ratio | idle share | note |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---|---|")
    for r in table:
        m, e = r["measured"], r["estimated"]
        print(f"| {r['device']} | {r['target']} | {r['model']} {r['precision']} | {fmt(m['decode_tok_s'], '.2f')} | "
              f"{fmt(e['decode_tok_s'], '.2f')} | {fmt(r['ratio_decode'], '.2f')} | {fmt(m['j_per_token'], '.3f')} | "
              f"{fmt(e['j_per_token'] if m['j_per_token'] else None, '.3f')} | {fmt(r['ratio_j_per_token'], '.2f')} | "
              f"{'unknown' if e['idle_share'] is None else format(e['idle_share'], '.0%')} | {r['note']} |")
    for r in table:
        print(f"\n{r['device']}: {r['measured_with']}; source {r['source']}; estimate's energy: "
              f"{r['estimated']['energy_basis']}" + (f"; missing: {'; '.join(r['estimated']['missing'])}"
                                                      if r["estimated"]["missing"] else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
