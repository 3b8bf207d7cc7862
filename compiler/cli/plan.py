"""``chipfit plan``: will this decoder fit on that chip, and how fast and at what energy will it run, before building.

From a Hugging Face folder's config and safetensors headers (or a ``config.json`` alone), nothing loaded and
nothing built: per target, the context and memory plan the build would make (`plan_context`, the build's own)
and the roofline estimate a profile makes of an unreachable target (`profiles.llm.estimate_decoder`), labelled
with the figures it used and those it lacks.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from compiler.errors import UsageError

PROMPT_TOKENS = 128


def plan_target(spec, name: str, target, backends, precision: str | None, context: int | None,
                prompt_tokens: int, bandwidth: tuple[float | None, str], vision=None) -> dict[str, Any]:
    """The memory plan and estimate of ``spec`` on ``target`` (what `chipfit plan` prints for one row); with
    ``vision`` (a vision-language model's `VisionSpec`), the backends that build its family and its encoder's
    weights in the memory plan, as a build plans them."""
    from compiler.build.kinds.decoder import plan_context
    from profiles.llm import estimate_decoder
    from targets.decoder import LanguageModelRecord
    from targets.schema import to_json

    precision = precision or target.default_precision
    if precision not in target.precisions:
        raise UsageError(f"target {target.id} runs {', '.join(target.precisions)}, not {precision} "
                         f"({target.source_file}: supports.precisions)")
    family = vision.family if vision else spec.model_type

    def families(b):
        return b.capabilities.vision_language_families if vision else b.capabilities.decoder_families

    able = [b for b in backends if family in families(b) and precision in b.capabilities.decoder_precisions]
    if not able:
        known = sorted({f for b in backends for f in families(b)})
        raise UsageError(f"target {target.id}: none of its backends ({', '.join(b.name for b in backends)}) builds "
                         f"{family} at {precision}; their families: {', '.join(known) or 'none'}")
    backend = able[0]  # the target's first: the one a build ships where nothing can be timed
    q = target.quantization
    block = q.int4_block_sizes[0] if q and q.int4_block_sizes else 32
    extra = vision.encoder_bytes("fp32" if precision == "fp32" else "fp16") if vision else 0
    tokens, memory = plan_context(spec, name, target, precision, context, block, extra)
    record = LanguageModelRecord(
        decoder=spec, context=tokens, cache_form="dynamic", prefill_chunk=None, programs=("decoder",),
        runtime=backend.name, memory_plan=memory, weight_precisions={"matmuls": precision}, tokenizer_files=(),
        trust_remote_code=False, generation={}, windowed_cache=True)
    figures, unit = target.figures_for(backend.name, backend.capabilities.compute_unit)
    estimate = estimate_decoder(record, figures, [min(prompt_tokens, tokens)], bandwidth_gbs=bandwidth[0],
                                bandwidth_source=bandwidth[1])
    prompt = estimate["prompts"][0]
    return {
        "target": target.id, "backend": backend.name, "compute_unit": unit, "precision": precision,
        "context": tokens, "memory_plan": to_json(memory), "fits": memory.fits,
        "ttft_ms": prompt["ttft_ms_p50"], "prompt_tokens": prompt["tokens"], "prefill_tok_s": prompt["prefill_tok_s"],
        "decode_tok_s": estimate["decode_tok_s"], "j_per_token": estimate["j_per_generated_token"],
        "method": estimate["method"], "inputs": estimate["inputs"], "missing": estimate["missing"],
        "assumptions": estimate["assumptions"],
        **({"image_tokens": vision.max_image_tokens, "vision_encoder_bytes": extra,
            "images_per_context": tokens // max(1, vision.max_image_tokens)} if vision else {}),
    }


def _bandwidth(target) -> tuple[float | None, str]:
    """A local target's bandwidth is this machine's (the spec cannot say it), as `chipfit profile` measures it."""
    if target.reach.kind == "local":
        from profiles.llm import host_bandwidth_gbs

        return host_bandwidth_gbs(), "measured on this machine (best of 5 read-only sweeps of 256 MiB on every core)"
    return None, "the spec"


def _f(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def cmd_plan(args: argparse.Namespace) -> int:
    from compiler.cli.text import table
    from compiler.frontend.huggingface import is_decoder_config, read_config, read_layout, read_vision_layout
    from targets.registry import backend_registry, target_registry

    if args.context is not None and args.context < 1:
        raise UsageError(f"--context {args.context}: must be at least 1")
    path = Path(args.model)
    if not path.exists():
        raise UsageError(f"{path}: no such model folder or config.json")
    folder = path if path.is_dir() else path.parent
    if not is_decoder_config(read_config(folder)):
        raise UsageError(f"{folder}: not a decoder LM (its config.json names {read_config(folder).get('architectures')}"
                         "); `chipfit plan` estimates language models from their layout. Build it instead: `chipfit "
                         "build` exports it with optimum and profiles the artifacts (memory, latency, energy)")
    spec, name, basis = read_layout(path, args.trust_remote_code)
    vision = read_vision_layout(path)
    targets = target_registry()
    ids = targets.names() if args.target == ["all"] else args.target
    loaded = backend_registry()
    rows, skipped = [], {}
    for target_id in ids:
        target = targets.get(target_id)
        backends = [loaded.get(b) for b in target.backends]
        try:
            rows.append(plan_target(spec, name, target, backends, args.precision, args.context, args.prompt_tokens,
                                    _bandwidth(target), vision))
        except UsageError as exc:
            if args.target != ["all"]:
                raise
            skipped[target_id] = str(exc)  # "all": the targets that cannot take it are listed, not fatal
    result = {"model": name, "source": str(path), "parameters": spec.parameters, "parameters_from": basis,
              "architecture": spec.architecture, "model_type": spec.model_type, "targets": rows,
              "skipped": skipped}
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True, default=str))
        return 0
    gib = 2 ** 30
    print(f"{name}: {spec.architecture} ({spec.model_type}), {spec.parameters / 1e6:.1f} M parameters (from {basis})")
    print(table(("target", "backend", "prec", "context", "weights GiB", "KV GiB", "total GiB", "fits",
                 f"TTFT ms ({args.prompt_tokens})", "prefill tok/s", "decode tok/s", "mJ/token"),
                [(r["target"], r["backend"], r["precision"], r["context"],
                  f"{r['memory_plan']['weight_bytes'] / gib:.3f}", f"{r['memory_plan']['kv_cache_bytes'] / gib:.3f}",
                  f"{r['memory_plan']['total_bytes'] / gib:.3f}", "yes" if r["fits"] else "no",
                  _f(r["ttft_ms"], ".1f"), _f(r["prefill_tok_s"], ".1f"), _f(r["decode_tok_s"], ".1f"),
                  _f(r["j_per_token"] * 1e3 if r["j_per_token"] is not None else None, ".2f")) for r in rows]))
    print("\nestimated:roofline from each spec's figures, nothing built or run; memory per target as a build plans it")
    if vision:
        print(f"vision: {vision.family} encoder of {vision.encoder_parameters / 1e6:.1f} M parameters counted in the "
              f"weights (fp16; fp32 at --precision fp32); an image takes up to {vision.max_image_tokens} tokens of the "
              "context; the estimate is of text turns (image encode time is not estimated)")
    for r in rows:
        if r["missing"]:
            print(f"{r['target']}: missing {'; '.join(r['missing'])}")
    for target_id, why in skipped.items():
        print(f"{target_id}: not planned: {why}")
    return 0
