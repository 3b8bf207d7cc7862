"""Decoder LMs: measure time to first token, prefill and decode rates and energy per token, or estimate them.

`measure_decoder` runs in the profiler's child process on the artifact's own runtime (the backend's
`DecoderRunner`): for each prompt length it times whole greedy generations (time to first token = the
prompt's prefill and the first token; then each further token), then decodes at KV-cache depths of 0,
25, 50 and 100% of the context, and with a meter reads energy per prompt token and per generated token.
Prompts are seeded random token ids (the rate does not depend on what the tokens say).

`estimate_decoder` is the roofline model for targets that cannot run here (`roofline-llm-v1`): decoding a
token reads every weight and the KV cache once, so it is bound by memory bandwidth; prefill does two
operations per weight per token (plus attention) and is bound by compute. Energy is operations x energy
per operation + bytes moved x DRAM energy per byte + static power x time, from the spec and
``data/energy_ops.toml``. What the spec leaves unknown is listed, never guessed.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from typing import Any, Mapping, Sequence

import numpy as np

from targets.decoder import LanguageModelRecord

MODEL_NAME = "roofline-llm-v1"
DEPTHS = (0.0, 0.25, 0.5, 1.0)
#: efficiencies the estimate assumes when nothing measured here fits them (labelled so)
DEFAULT_BANDWIDTH_EFFICIENCY = 0.6
DEFAULT_COMPUTE_EFFICIENCY = 0.3
#: a measurement fits the efficiencies only if its decode bound is at least this long per token
MIN_FIT_SECONDS = 1e-3


def _p(samples: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples, float), q)) if samples else float("nan")


def _prompt(length: int, vocab: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return rng.integers(3, max(vocab, 4), length).tolist()  # past the usual special tokens 0-2


def measure_decoder(runner, record: LanguageModelRecord, prompt_lengths: Sequence[int], new_tokens: int,
                    generations: int, sustained: int = 0, meter=None, energy_loops: int = 3) -> dict[str, Any]:
    """Raw samples of every figure (seconds -> ms in the result)."""
    vocab, context = record.decoder.vocab_size, record.context
    runner.generate(_prompt(8, vocab, 99), 4)  # warm-up: allocations, first-call compilation
    prompts = []
    for n, length in enumerate(prompt_lengths):
        ids = _prompt(length, vocab, n)
        ttft, per_token = [], []
        for _ in range(generations):
            g = runner.generate(ids, new_tokens)
            ttft.append(g.prefill_s * 1e3)
            per_token += [t * 1e3 for t in g.token_s]
        prompts.append({"tokens": length, "ttft_ms": ttft, "decode_ms": per_token})
    steps = max(2, min(new_tokens, 16))
    depths = []
    for fraction in DEPTHS:
        depth = max(1, min(int(round(fraction * context)), context - steps))
        ids = _prompt(depth, vocab, 1000 + depth)
        samples = []
        for _ in range(max(1, generations // 2)):
            samples += [t * 1e3 for t in runner.generate(ids, steps).token_s]
        depths.append({"fraction": fraction, "tokens": depth, "decode_ms": samples,
                       "kv_bytes": record.decoder.kv_bytes(depth, record.memory_plan.kv_bytes_per_element,
                                                           record.windowed_cache)})
    result: dict[str, Any] = {"prompts": prompts, "depths": depths}
    if sustained:
        ids = _prompt(prompt_lengths[0], vocab, 7)
        runs = []
        for _ in range(sustained):
            start = time.perf_counter()
            g = runner.generate(ids, new_tokens)
            runs.append({"decode_tok_s": len(g.token_s) / sum(g.token_s) if sum(g.token_s) else None,
                         "ttft_ms": g.prefill_s * 1e3, "seconds": time.perf_counter() - start})
        result["sustained"] = runs
    if record.vision is not None and hasattr(runner, "generate_images"):
        result["image"] = _measure_image(runner, record, new_tokens, generations, meter, energy_loops)
    if meter is not None:
        from profiles.meters import energy_per_inference

        ids = _prompt(prompt_lengths[0], vocab, 5)
        prefill = energy_per_inference(meter, lambda: runner.generate(ids, 1), iterations=energy_loops,
                                       repeats=energy_loops)
        whole = energy_per_inference(meter, lambda: runner.generate(ids, new_tokens), iterations=energy_loops,
                                     repeats=energy_loops)
        per_generated = [max(w - p, 0.0) / 1e3 / max(new_tokens - 1, 1)
                         for w, p in zip(whole.samples_mj, prefill.samples_mj)]
        result["energy"] = {"method": prefill.method, "idle_power_w": prefill.idle_power_w,
                            "prompt_tokens": len(ids), "new_tokens": new_tokens,
                            "j_per_prompt_token_samples": [p / 1e3 / len(ids) for p in prefill.samples_mj],
                            "j_per_generated_token_samples": per_generated}
    return result


#: the text after the image in a profiled vision-language prompt
IMAGE_PROMPT = " Describe the picture in one sentence."


def profile_image(spec) -> np.ndarray:
    """An image of the most tokens the model's processor gives one image (a square at its pixel limit), drawn as a
    colour gradient: what a profile times encoding (no resizing: its sides are multiples of a token's)."""
    factor = spec.patch_size * spec.merge_size
    side = max(factor, int(np.sqrt(spec.max_pixels)) // factor * factor)
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    image = np.stack([np.add.outer(ramp, ramp) / 2, np.add.outer(ramp, ramp[::-1]) / 2,
                      np.full((side, side), 128.0)], axis=-1)
    return image.astype(np.uint8)


def _measure_image(runner, record: LanguageModelRecord, new_tokens: int, generations: int, meter,
                   energy_loops: int) -> dict[str, Any]:
    """An image prompt: encode time, time to first token with the image, decode rate after it (and with a meter,
    the energy of the prompt with its image, beside the same text alone)."""
    from targets.vision import IMAGE_PLACEHOLDER

    image = profile_image(record.vision.spec)
    prompt = IMAGE_PLACEHOLDER + IMAGE_PROMPT
    runner.generate_images(prompt, [image], 2)  # warm-up: the vision graph's first allocation
    encode, ttft, decode = [], [], []
    for _ in range(generations):
        g = runner.generate_images(prompt, [image], new_tokens)
        encode.append(g.encode_s * 1e3)
        ttft.append(g.prefill_s * 1e3)
        decode += [t * 1e3 for t in g.token_s]
    out: dict[str, Any] = {"pixels": list(image.shape[:2]), "tokens": record.vision.image_tokens_per_image,
                           "encode_ms": encode, "ttft_ms": ttft, "decode_ms": decode}
    if meter is not None:
        from profiles.meters import energy_per_inference

        text_ids = runner.prompt_ids(IMAGE_PROMPT, [])
        with_image = energy_per_inference(meter, lambda: runner.generate_images(prompt, [image], 1),
                                          iterations=energy_loops, repeats=energy_loops)
        text_only = energy_per_inference(meter, lambda: runner.generate(text_ids, 1), iterations=energy_loops,
                                         repeats=energy_loops)
        out["energy"] = {"method": with_image.method,
                         "j_per_image_samples": [max(w - t, 0.0) / 1e3 for w, t in
                                                 zip(with_image.samples_mj, text_only.samples_mj)]}
    return out


def summarize_measurement(raw: Mapping[str, Any]) -> dict[str, Any]:
    """p50/p90 and rates from the raw samples (the samples are kept beside them)."""
    prompts = []
    for p in raw["prompts"]:
        ttft = _p(p["ttft_ms"], 50)
        prompts.append({"tokens": p["tokens"], "ttft_ms_p50": ttft, "ttft_ms_p90": _p(p["ttft_ms"], 90),
                        "prefill_tok_s": p["tokens"] / (ttft / 1e3) if ttft > 0 else None,
                        "decode_ms_per_token_p50": _p(p["decode_ms"], 50),
                        "decode_tok_s": 1e3 / _p(p["decode_ms"], 50) if p["decode_ms"] else None,
                        "ttft_ms_samples": p["ttft_ms"], "decode_ms_samples": p["decode_ms"]})
    depths = [{"fraction": d["fraction"], "tokens": d["tokens"], "kv_bytes": d["kv_bytes"],
               "ms_per_token_p50": _p(d["decode_ms"], 50), "ms_per_token_p90": _p(d["decode_ms"], 90),
               "tok_s": 1e3 / _p(d["decode_ms"], 50) if d["decode_ms"] else None, "decode_ms_samples": d["decode_ms"]}
              for d in raw["depths"]]
    summary: dict[str, Any] = {"prompts": prompts, "depths": depths}
    if raw.get("sustained"):
        rates = [r["decode_tok_s"] for r in raw["sustained"] if r["decode_tok_s"]]
        steady = rates[len(rates) // 2:] or rates
        summary["sustained"] = {"runs": raw["sustained"], "first_decode_tok_s": rates[0] if rates else None,
                                "steady_decode_tok_s": statistics.median(steady) if steady else None,
                                "spread_pct": (max(rates) - min(rates)) / statistics.median(rates) * 100
                                if len(rates) > 1 else 0.0}
    if raw.get("image"):
        i = raw["image"]
        summary["image"] = {"pixels": i["pixels"], "tokens": i["tokens"], "encode_ms_p50": _p(i["encode_ms"], 50),
                            "ttft_ms_p50": _p(i["ttft_ms"], 50),
                            "decode_tok_s": 1e3 / _p(i["decode_ms"], 50) if i["decode_ms"] else None,
                            "encode_ms_samples": i["encode_ms"], "ttft_ms_samples": i["ttft_ms"],
                            **({"energy": {**i["energy"], "j_per_image": statistics.median(
                                i["energy"]["j_per_image_samples"])}} if i.get("energy") else {})}
    if raw.get("energy"):
        e = raw["energy"]
        summary["energy"] = {**e, "j_per_prompt_token": statistics.median(e["j_per_prompt_token_samples"]),
                             "j_per_generated_token": statistics.median(e["j_per_generated_token_samples"])}
    return summary


# --- the roofline -----------------------------------------------------------------------------------


def _matmul_params(record: LanguageModelRecord) -> int:
    spec = record.decoder
    return spec.parameters - (0 if spec.tied_embeddings else spec.embedding_parameters)


def decode_ops(record: LanguageModelRecord, depth: int) -> float:
    """Operations for one token at KV depth ``depth``: 2 per matmul weight, plus attention over the cache."""
    spec = record.decoder
    attention = 2 * spec.layers * spec.heads * (spec.head_dim + spec.value_head_dim) * depth
    return 2.0 * _matmul_params(record) + attention


def prefill_ops(record: LanguageModelRecord, tokens: int) -> float:
    spec = record.decoder
    attention = 2 * spec.layers * spec.heads * (spec.head_dim + spec.value_head_dim) * tokens * (tokens + 1) / 2
    return 2.0 * _matmul_params(record) * tokens + attention


def decode_bytes(record: LanguageModelRecord, depth: int) -> float:
    """Bytes read for one token: every weight once, and the keys and values of ``depth`` tokens."""
    plan = record.memory_plan
    return plan.weight_bytes + record.decoder.kv_bytes(depth, plan.kv_bytes_per_element, record.windowed_cache)


def _compute_dtype(record: LanguageModelRecord) -> str:
    matmuls = record.weight_precisions.get("matmuls", "fp32")
    return {"int4": "int8", "int8": "int8", "fp16": "fp16"}.get(matmuls, "fp32")


def _known(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def estimate_decoder(record: LanguageModelRecord, figures: Mapping[str, Any], prompt_lengths: Sequence[int],
                     bandwidth_efficiency: float = DEFAULT_BANDWIDTH_EFFICIENCY,
                     compute_efficiency: float = DEFAULT_COMPUTE_EFFICIENCY, efficiency_source: str = "default",
                     bandwidth_gbs: float | None = None, bandwidth_source: str = "the spec") -> dict[str, Any]:
    """Time to first token, prefill and decode rates, and energy per token from the roofline."""
    from profiles.estimate import energy_table

    missing, assumptions = [], []
    peaks = {k: float(v) for k, v in dict(figures.get("peak_gops", {})).items() if _known(v)}
    dtype = _compute_dtype(record)
    peak = peaks.get(dtype) or next((peaks[d] for d in ("int8", "fp16", "fp32") if d in peaks), None)
    if peak is not None and dtype not in peaks:
        assumptions.append(f"{dtype} operations at the {next(d for d in ('int8', 'fp16', 'fp32') if d in peaks)} peak")
    if peak is None:
        missing.append("peak_gops: prefill (compute-bound) cannot be estimated")
    bandwidth = bandwidth_gbs if _known(bandwidth_gbs) else figures.get("memory_bandwidth_gbs")
    if not _known(bandwidth):
        missing.append("memory_bandwidth_gbs: decode (memory-bound) cannot be estimated")
        bandwidth = None
    power, node = figures.get("power_w"), figures.get("process_nm")
    table = energy_table()["horowitz_45nm"]
    scale = math.sqrt(float(node) / table["node_nm"]) if _known(node) else 1.0
    if not _known(node):
        missing.append("process_nm: 45 nm per-op energies used unscaled (energy is an upper bound)")
    prefix = {"int8": "int8", "fp16": "fp16"}.get(dtype, "fp32")
    pj_per_op = (table[f"{prefix}_mult_pj"] + table[f"{prefix}_add_pj"]) / 2 * scale
    pj_per_byte = table["dram_pj_per_byte"][0]

    def seconds(ops: float, bytes_: float, needs: str) -> tuple[float | None, str]:
        """The phase's time from the roofline; None where the figure that bounds it (``needs``: "compute" for a
        prefill, "memory" for a decode step) is unknown: the other one alone would only give a flattering floor."""
        parts = {}
        if peak:
            parts["compute"] = ops / (peak * 1e9 * compute_efficiency)
        if bandwidth:
            parts["memory"] = bytes_ / (bandwidth * 1e9 * bandwidth_efficiency)
        if needs not in parts:
            return None, "unknown"
        bound = max(parts, key=parts.get)
        return parts[bound], bound

    idle = figures.get("idle_power_w")

    def joules(ops: float, bytes_: float, t: float | None) -> float:
        """Static + dynamic: idle power x time, plus the energy of the operations and of the bytes moved; where the
        power under load is known, the whole power x time (it holds both terms, measured)."""
        if _known(power) and t:
            return float(power) * t
        dynamic = ops * pj_per_op * 1e-12 + bytes_ * pj_per_byte * 1e-12
        return dynamic + (float(idle) * t if _known(idle) and t else 0.0)

    prompts = []
    for length in prompt_lengths:
        ops, bytes_ = prefill_ops(record, length), decode_bytes(record, length)
        t, bound = seconds(ops, bytes_, "compute")
        step, _ = seconds(decode_ops(record, length), decode_bytes(record, length), "memory")
        prompts.append({"tokens": length, "ttft_ms_p50": t * 1e3 if t else None, "bound": bound,
                        "prefill_tok_s": length / t if t else None, "decode_tok_s": 1 / step if step else None,
                        "j_per_prompt_token": joules(ops, bytes_, t) / length})
    depths = []
    for fraction in DEPTHS:
        depth = max(1, int(round(fraction * record.context)))
        t, bound = seconds(decode_ops(record, depth), decode_bytes(record, depth), "memory")
        depths.append({"fraction": fraction, "tokens": depth, "ms_per_token_p50": t * 1e3 if t else None,
                       "tok_s": 1 / t if t else None, "bound": bound,
                       "kv_bytes": record.decoder.kv_bytes(depth, record.memory_plan.kv_bytes_per_element,
                                                           record.windowed_cache)})
    depth0 = prompt_lengths[0] if prompt_lengths else 1
    t_token, _ = seconds(decode_ops(record, depth0), decode_bytes(record, depth0), "memory")
    if _known(power):
        energy_basis = (f"power under load {power} W x the estimated time"
                        + (f"; idle {idle} W of it ({float(idle) / float(power):.0%})" if _known(idle) else
                           "; idle share unknown (idle_power_w)"))
        idle_share = float(idle) / float(power) if _known(idle) else None
    elif _known(idle) and t_token:
        dynamic = decode_ops(record, depth0) * pj_per_op * 1e-12 + decode_bytes(record, depth0) * pj_per_byte * 1e-12
        idle_share = float(idle) * t_token / (float(idle) * t_token + dynamic)
        energy_basis = f"idle {idle} W x the estimated time + per-op and per-byte energies"
    else:
        idle_share = None
        energy_basis = "per-op and per-byte energies only: no static power, a lower bound"
        missing.append("power_w (or idle_power_w): the static power term is left out")
    image = None
    if record.vision is not None:
        # the encoder sees every patch (image tokens x merge^2): 2 x its parameters per patch, attention left out;
        # then the image's tokens fill the decoder as a prefill does
        v = record.vision.spec
        tokens = record.vision.image_tokens_per_image
        encode_ops = 2.0 * v.encoder_parameters * tokens * v.merge_size ** 2
        encode_bytes = float(v.encoder_bytes(record.vision.encoder_precision or "fp16"))
        t_encode, encode_bound = seconds(encode_ops, encode_bytes, "compute")
        t_fill, _ = seconds(prefill_ops(record, tokens), decode_bytes(record, tokens), "compute")
        total = t_encode + t_fill if t_encode and t_fill else None
        image = {"tokens": tokens, "encode_ms_p50": t_encode * 1e3 if t_encode else None, "bound": encode_bound,
                 "ttft_ms_p50": total * 1e3 if total else None,
                 "j_per_image": joules(encode_ops + prefill_ops(record, tokens), encode_bytes
                                       + decode_bytes(record, tokens), total),
                 "basis": "vision encoder: 2 x its parameters per patch (attention left out), then the image's "
                          "tokens prefilled; the largest image the processor gives"}
    return {
        "method": f"estimated:{MODEL_NAME}", "prompts": prompts, "depths": depths,
        **({"image": image} if image else {}),
        "decode_tok_s": 1 / t_token if t_token else None, "ms_per_token": t_token * 1e3 if t_token else None,
        "j_per_generated_token": joules(decode_ops(record, depth0), decode_bytes(record, depth0), t_token),
        "inputs": {"peak_gops": peak, "compute_dtype": dtype, "bandwidth_gbs": bandwidth,
                   "bandwidth_source": bandwidth_source if bandwidth else None, "power_w": power, "process_nm": node,
                   "bandwidth_efficiency": bandwidth_efficiency, "compute_efficiency": compute_efficiency,
                   "efficiency_source": efficiency_source, "weight_bytes": record.memory_plan.weight_bytes,
                   "idle_power_w": idle, "energy_basis": energy_basis, "idle_share": idle_share},
        "missing": missing, "assumptions": assumptions + [f"DRAM energy {pj_per_byte} pJ/B for every byte moved"],
    }


def roofline(record: LanguageModelRecord, figures: Mapping[str, Any], measured: Mapping[str, Any],
             bandwidth_gbs: float | None, bandwidth_source: str) -> dict[str, Any]:
    """The bound each phase could reach on this chip (efficiency 1) and the share of it the artifact reached."""
    bound = estimate_decoder(record, figures, [p["tokens"] for p in measured["prompts"]], 1.0, 1.0, "bound",
                             bandwidth_gbs, bandwidth_source)
    first = measured["prompts"][0]
    decode_bound = bound["decode_tok_s"]  # at the first prompt length's KV depth
    prefill_bound = bound["prompts"][0]["prefill_tok_s"]
    return {
        "decode_bound_tok_s": decode_bound, "prefill_bound_tok_s": prefill_bound,
        "decode_reached_pct": 100 * first["decode_tok_s"] / decode_bound if decode_bound and first["decode_tok_s"]
        else None,
        "prefill_reached_pct": 100 * first["prefill_tok_s"] / prefill_bound if prefill_bound and first["prefill_tok_s"]
        else None,
        "inputs": bound["inputs"], "missing": bound["missing"],
        "decode_bytes_per_token": decode_bytes(record, first["tokens"]),
    }


def host_bandwidth_gbs(megabytes: int = 256, repeats: int = 5, threads: int | None = None) -> float:
    """This machine's memory read bandwidth, GB/s: the best of a few sweeps that read a large array once (an OR
    reduction, too cheap to be compute-bound, split across ``threads``, all cores by default: one core rarely
    saturates the memory system). Reads only, because decoding reads weights and cache: a copy moves each byte
    twice and mixes in the write bandwidth."""
    from concurrent.futures import ThreadPoolExecutor

    words = np.ones(megabytes * 2**20 // 8, dtype=np.int64)
    if not threads:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    chunks = np.array_split(words, threads)
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:  # numpy's reductions release the GIL
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(np.bitwise_or.reduce, chunks))
            best = min(best, time.perf_counter() - start)
    return words.nbytes / best / 1e9


def check_lengths(prompt_lengths: Sequence[int], new_tokens: int, context: int, where: str) -> None:
    from targets.errors import UsageError

    if new_tokens < 1 or any(length < 1 for length in prompt_lengths) or not prompt_lengths:
        raise UsageError(f"{where}: prompt lengths and --new-tokens must be positive")
    too_long = [length for length in prompt_lengths if length + new_tokens > context]
    if too_long:
        raise UsageError(f"{where}: prompt length(s) {too_long} + {new_tokens} new tokens exceed the artifact's "
                         f"context of {context} tokens (--prompt-lengths, --new-tokens)")


def generations(runs: int) -> int:
    """Whole generations timed per prompt length: a fortieth of ``--runs`` (each is many steps), 2 to 5."""
    return max(2, min(runs // 40, 5))


def fit_efficiencies(points: Sequence[tuple[float, float, float, float]]) -> tuple[float, float, str] | None:
    """Bandwidth and compute efficiency from (decode bound s, measured decode s, prefill bound s, measured prefill s)."""
    usable = [p for p in points if all(x and x > 0 for x in p)]
    if not usable:
        return None
    bw = statistics.median(b / m for b, m, _, _ in usable)
    comp = statistics.median(b / m for _, _, b, m in usable)
    return bw, comp, f"fitted on {len(usable)} LLM measurement(s) on this host"

