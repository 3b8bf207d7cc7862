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
from compiler.backends.onnxruntime.options import DECODER_WEIGHT_METHODS
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
                  block_size: int | None, method: str = "rtn", calibration: Sequence[Sequence[int]] = (),
                  calibration_origin: str = "", int8_share: float = 0.0) -> Lowered:
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
    if method not in ("rtn",) + (DECODER_WEIGHT_METHODS if precision == "int4" else ()):
        raise LowerError(f"onnxruntime weight method {method!r} at {precision}: it offers "
                         f"{', '.join(DECODER_WEIGHT_METHODS) if precision == 'int4' else 'rtn'}")
    every_int8 = precision == "int4" and int8_share >= 1.0  # int4 missed the accuracy budget: the builder's int8
    if every_int8:
        precision, method = "int8", "rtn"
    data_aware = method == "awq+scale_estimation"
    if method == "k_quant":
        builder_options["algo_config"] = "k_quant"
    built_at = "fp32" if data_aware else precision  # NNCF compresses the builder's float graph
    notes = _run_builder(model, built_at, workdir, {} if data_aware else builder_options)
    config_path = workdir / CONFIG
    config = json.loads(config_path.read_text())
    weight_pass: dict[str, Any] = {"name": "onnxruntime-genai-model-builder", "weight_method": method}
    if every_int8:
        weight_pass.update(int8_share=1.0, int8_layers=["every MatMul (MatMulNBits, 8 bits)"])
    if data_aware:
        weight_pass = _compress_with_nncf(workdir / config["model"]["decoder"]["filename"], block_size or 32,
                                          model.spec.head_dim, calibration, calibration_origin, int8_share)
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
        passes=({"name": "onnxruntime-genai-model-builder", "precision": built_at,
                 **({} if data_aware else builder_options), "op_histogram": histogram},
                *([weight_pass] if precision in ("int4", "int8") else [])),
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


def _compress_with_nncf(path: Path, block: int, head_dim: int, calibration: Sequence[Sequence[int]],
                        origin: str, int8_share: float = 0.0) -> dict[str, Any]:
    """int4 weights by NNCF's AWQ and scale estimation on the builder's float graph, in place: each MatMul's
    weight becomes a block-wise int4 DequantizeLinear (groups of ``block`` along its input), which ONNX Runtime
    fuses into MatMulNBits when it loads the model (accuracy level 4, as the builder writes them); the lm_head too,
    the embedding's Gather stays float, as the builder leaves an untied one. ``int8_share`` of the matmuls stay
    int8 per output channel (NNCF's ``ratio``; its data-aware sensitivity picks them)."""
    import contextlib
    import io
    import logging
    import warnings

    import nncf

    if not calibration:
        raise LowerError("weight method awq+scale_estimation needs calibration prompts; none reached the lowering")
    graph = onnx.load(str(path))
    pasts = [i for i in graph.graph.input if i.name.startswith("past_key_values.")]

    def inputs(ids: Sequence[int]) -> dict[str, np.ndarray]:
        tokens = np.asarray([list(ids)], dtype=np.int64)
        feed = {"input_ids": tokens, "attention_mask": np.ones_like(tokens)}
        for past in pasts:  # an empty cache: each prompt starts a request
            dims = [d.dim_value for d in past.type.tensor_type.shape.dim]
            feed[past.name] = np.zeros((1, dims[1], 0, dims[3] or head_dim), np.float32)
        return feed

    gathers = [n.name for n in graph.graph.node if n.op_type == "Gather" and "embed" in n.name]
    logging.getLogger("nncf").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        compressed = nncf.compress_weights(
            graph, mode=nncf.CompressWeightsMode.INT4_SYM, group_size=block, ratio=round(1.0 - int8_share, 4),
            all_layers=True,
            ignored_scope=nncf.IgnoredScope(names=gathers), dataset=nncf.Dataset(list(calibration), inputs),
            subset_size=len(calibration), awq=True, scale_estimation=True)
    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)
    onnx.save(compressed, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data.name)
    return {"name": "nncf.compress_weights", "nncf": nncf.__version__, "weight_method": "awq+scale_estimation",
            "mode": "int4_sym", "group_size": block, "lm_head": "int4", "embedding": "float (as the builder's)",
            "format": "block-wise DequantizeLinear -> MatMul, fused to MatMulNBits by ONNX Runtime at load",
            "calibration": origin, "samples": len(calibration),
            **({"int8_share": int8_share, "int8_layers": _int8_matmuls(compressed)} if int8_share else {})}


def _int8_matmuls(graph: onnx.ModelProto) -> list[str]:
    """The MatMuls whose weight is an int8 DequantizeLinear (NNCF's backup layers)."""
    eight = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
    initializers = {t.name: t.data_type for t in graph.graph.initializer}
    outputs = {n.output[0] for n in graph.graph.node
               if n.op_type == "DequantizeLinear" and initializers.get(n.input[0]) in eight}
    return sorted(n.name for n in graph.graph.node if n.op_type == "MatMul" and any(i in outputs for i in n.input))


def _weight_precisions(graph: onnx.ModelProto, precision: str) -> dict[str, str]:
    """What the builder actually wrote for the embedding, the body's matmuls and the lm_head."""
    def bits(node) -> str:
        value = next((a.i for a in node.attribute if a.name == "bits"), 4)
        return f"int{value}"

    initializers = {t.name: t for t in graph.graph.initializer}
    dequantized = {}  # DequantizeLinear outputs -> the element type they dequantize (NNCF's form)
    for node in graph.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in initializers:
            kind = initializers[node.input[0]].data_type
            dequantized[node.output[0]] = {onnx.TensorProto.INT4: "int4", onnx.TensorProto.UINT4: "int4",
                                           onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT8: "int8"}.get(kind, "fp32")
    embedding = "fp32"
    lm_head = "fp32"
    for node in graph.graph.node:
        if node.op_type == "GatherBlockQuantized":
            embedding = bits(node)
        if "lm_head" in node.name:
            lm_head = (bits(node) if node.op_type == "MatMulNBits" else
                       dequantized.get(node.input[1], "fp32") if node.op_type == "MatMul" else "fp32")
    body = {"fp32": "fp32", "int4": "int4", "int8": "int8"}[precision]
    backups = [name for name in _int8_matmuls(graph) if "lm_head" not in name]
    if precision == "int4" and backups:
        body = f"int4, {len(backups)} matmuls int8"
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
