"""Decoder LMs for ONNX Runtime: a folder that ONNX Runtime GenAI loads as it is, and its runner.

The folder is made by onnxruntime-genai's own model builder (`genai_builder`, in a child process):
``genai_config.json``, the decoder graph (``past_key_values.*`` in, ``present.*`` out, GroupQueryAttention
with rotary embedding inside, MatMulNBits for int4/int8 weights) and the tokenizer files. chipfit sets the
context it was asked for, names the target's execution provider, and verifies by generating through
onnxruntime-genai itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import onnx

from compiler.backends import DecoderForm, Generation, Lowered
from compiler.errors import LowerError, UsageError
from compiler.frontend.onnx_file import signature_from_onnx
from targets.spec import TargetSpec

#: precisions the builder makes graphs for that run on the CPU provider (fp16/bf16 graphs are for GPUs)
CPU_PRECISIONS = ("fp32", "int8", "int4")
#: execution provider option value -> the name genai_config.json uses for it
PROVIDER_NAMES = {"QNNExecutionProvider": "qnn", "OpenVINOExecutionProvider": "OpenVINO",
                  "CoreMLExecutionProvider": "coreml", "CUDAExecutionProvider": "cuda", "DmlExecutionProvider": "dml"}
CONFIG = "genai_config.json"
BUILD_TIMEOUT_S = 3600.0


def lower_decoder(model, target: TargetSpec, precision: str, workdir: Path, context: int, options: Mapping[str, Any],
                  block_size: int | None) -> Lowered:
    provider = options["execution_provider"]
    if precision not in CPU_PRECISIONS:
        raise UsageError(f"target {target.id}: onnxruntime-genai's model builder makes {precision} decoders for GPU "
                         f"providers only (its {precision} graph does not run on the CPU provider this artifact is "
                         f"verified on); build {', '.join(CPU_PRECISIONS)} (--precision)")
    if model.spec.head_dim % 16:
        raise LowerError(f"{model.name} has attention heads of {model.spec.head_dim} dimensions; ONNX Runtime's "
                         "GroupQueryAttention kernel, which onnxruntime-genai's decoders use, takes multiples of 16")
    builder_options = {}
    if precision in ("int4", "int8"):
        # accuracy_level 4: int8 activations in MatMulNBits, the builder's CPU default, named so the manifest says it
        # (onnxruntime/mobius PR 402: 39 -> 92 tok/s on Qwen2.5-0.5B); every MatMul, lm_head included, at the
        # precision (a tied lm_head shares the embedding's quantized table)
        builder_options["block_size"] = block_size or 32
        builder_options["accuracy_level"] = 4
    notes = _run_builder(model, precision, workdir, builder_options)
    config_path = workdir / CONFIG
    config = json.loads(config_path.read_text())
    config["model"]["context_length"] = context
    config["search"]["max_length"] = context
    if provider != "CPUExecutionProvider":
        # The folder names the provider it is meant for; here the same graph is verified on the CPU provider.
        name = PROVIDER_NAMES.get(provider, provider)
        config["model"]["decoder"]["session_options"]["provider_options"] = [
            {name: {k: str(v) for k, v in options.get("provider_options", {}).items()}}]
    config_path.write_text(json.dumps(config, indent=4) + "\n")
    graph = onnx.load(str(workdir / config["model"]["decoder"]["filename"]), load_external_data=False)
    files = tuple(sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*") if p.is_file()))
    primary = config["model"]["decoder"]["filename"]
    histogram: dict[str, int] = {}
    for node in graph.graph.node:
        histogram[node.op_type] = histogram.get(node.op_type, 0) + 1
    form = DecoderForm(
        cache_form="dynamic", programs=("decoder",), runtime="onnxruntime-genai", context=context,
        kv_bytes_per_element=4, weight_precisions=_weight_precisions(graph, precision),
        tokenizer_files=tuple(f for f in files if f.startswith(("tokenizer", "special_tokens", "vocab", "merges"))),
        generation={k: v for k, v in config["search"].items()} | {"eos_token_id": config["model"].get("eos_token_id")},
    )
    extra, static_files, layout = (), [], None
    if options.get("static_decoder"):
        from compiler.backends.onnxruntime.static_decoder import export_static

        static_form, static_files, layout = export_static(model, workdir, context, None)
        extra = (static_form,)
        notes = list(notes) + [f"static/ holds the static-shape programs for {provider} at fp32; quantizing them for "
                               "the NPU is the vendor compiler's step (QNN / OpenVINO tools), not done here"]
    files = tuple(f for f in files if f not in static_files)
    return Lowered(
        files=(primary,) + tuple(f for f in files if f != primary) + tuple(static_files),
        signature=signature_from_onnx(graph),
        options={**dict(options), "builder_precision": precision, "builder_extra_options": builder_options,
                 "execution_provider_in_config": provider, "static_layout": layout},
        passes=({"name": "onnxruntime-genai-model-builder", "precision": precision, **builder_options,
                 "op_histogram": histogram},),
        notes=tuple(notes) + (("onnxruntime-genai's builder makes no graph for this provider; the folder is the "
                               f"CPU-provider form with {provider} named in genai_config.json",)
                              if provider not in ("CPUExecutionProvider",) else ()),
        decoder=form,
        extra_decoder_forms=extra,
    )


def _run_builder(model, precision: str, workdir: Path, extra: Mapping[str, Any]) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="chipfit-genai-") as scratch:
        request = Path(scratch) / "request.json"
        result = Path(scratch) / "result.json"
        request.write_text(json.dumps({"input": str(model.directory), "output": str(workdir), "precision": precision,
                                       "execution_provider": "cpu", "cache_dir": str(Path(scratch) / "cache"),
                                       "extra_options": dict(extra), "result": str(result)}))
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
        try:
            done = subprocess.run([sys.executable, "-m", "compiler.backends.onnxruntime.genai_builder", str(request)],
                                  cwd=scratch, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, env=env)
        except subprocess.TimeoutExpired as exc:
            raise LowerError(f"onnxruntime-genai's model builder ran past {BUILD_TIMEOUT_S:.0f} s") from exc
        if done.returncode != 0 or not result.is_file():
            tail = [line for line in (done.stderr or done.stdout).strip().splitlines() if line.strip()][-1:]
            raise LowerError(f"onnxruntime-genai's model builder could not build {model.spec.architecture} "
                             f"({model.spec.model_type}) at {precision}: {tail[0] if tail else f'exit {done.returncode}'}")
        return json.loads(result.read_text())["notes"]


def _weight_precisions(graph: onnx.ModelProto, precision: str) -> dict[str, str]:
    """What the builder actually wrote for the embedding, the body's matmuls and the lm_head."""
    def bits(node) -> str:
        value = next((a.i for a in node.attribute if a.name == "bits"), 4)
        return f"int{value}"

    embedding = "fp32"
    lm_head = "fp32"
    for node in graph.graph.node:
        if node.op_type == "GatherBlockQuantized":
            embedding = bits(node)
        if "lm_head" in node.name:
            lm_head = bits(node) if node.op_type == "MatMulNBits" else "fp32"
    body = {"fp32": "fp32", "int4": "int4", "int8": "int8"}[precision]
    return {"embedding": embedding, "matmuls": body, "lm_head": lm_head}


class GenaiRunner:
    """Greedy generation and teacher-forced logits through onnxruntime-genai, as a deployed app runs them."""

    def __init__(self, folder: Path, on_cpu: bool, threads: int | None = None) -> None:
        import onnxruntime_genai as og

        self._og, self._folder, self._on_cpu = og, folder, on_cpu
        config = og.Config(str(folder))
        if on_cpu:
            config.clear_providers()
        if threads:
            config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads,
                                                                                  "inter_op_num_threads": 1}}}}))
        self.model = og.Model(config)
        self.description = f"onnxruntime-genai {og.__version__} ({'CPU provider' if on_cpu else 'configured provider'})"
        window = json.loads((folder / CONFIG).read_text())["model"]["decoder"].get("sliding_window") or {}
        # a windowed KV cache must hold at least the window, however short the sequence
        self._floor = int(window.get("window_size", 0)) if window.get("layers") else 0

    def set_threads(self, threads: int) -> bool:
        self.__init__(self._folder, self._on_cpu, threads)
        return True

    def _generator(self, total: int, exact: bool):
        params = self._og.GeneratorParams(self.model)
        params.set_search_options(max_length=max(total, self._floor), min_length=total if exact else 0, do_sample=False)
        return self._og.Generator(self.model, params)

    def generate(self, ids: Sequence[int], new_tokens: int, stop: Sequence[int] = (),
                 on_token: Callable[[int], None] | None = None) -> Generation:
        generator = self._generator(len(ids) + new_tokens, exact=not stop)
        tokens: list[int] = []
        times: list[float] = []
        start = time.perf_counter()
        generator.append_tokens(np.asarray([list(ids)], dtype=np.int32))
        while len(tokens) < new_tokens and not generator.is_done():
            generator.generate_next_token()
            token = int(generator.get_next_tokens()[0])
            now = time.perf_counter()
            times.append(now - start)
            start = now
            tokens.append(token)
            if on_token is not None:
                on_token(token)
            if token in stop:
                break
        return Generation(tuple(tokens), times[0] if times else 0.0, tuple(times[1:]))

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        generator = self._generator(len(ids) + 1, exact=True)
        generator.append_tokens(np.asarray([list(ids)], dtype=np.int32))
        return np.asarray(generator.get_output("logits"))[0].astype(np.float32)
