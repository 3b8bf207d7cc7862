"""Decoder LMs for OpenVINO: a stateful IR that `openvino_genai.LLMPipeline` loads, weights compressed by NNCF.

The folder is laid out as Intel's own exporter (optimum-intel) lays one out, so OpenVINO GenAI runs it unchanged:
``openvino_model.xml`` takes ``input_ids``, ``attention_mask``, ``position_ids`` and ``beam_idx`` and returns
``logits``; the KV cache is the model's state (ReadValue/Assign pairs made by OpenVINO's MakeStateful
transformation from explicit ``past_key_values.i.key`` inputs and ``present.i.key`` outputs), reordered by
``beam_idx`` before each step and zero-length when a request starts. ``openvino_tokenizer.xml`` and
``openvino_detokenizer.xml`` are the tokenizer converted by openvino-tokenizers.

The graph is the transformers model traced by `ov.convert_model` over a step whose cache is transformers' own
`DynamicCache` filled from the explicit inputs. Every layer keeps a full-length cache (a sliding-window layer's
mask does the windowing), so the state of each layer grows the same way. Weights: fp32 as traced, fp16 stored as
f16, int8 and int4 by ``nncf.compress_weights`` (int8 asymmetric per output channel; int4 symmetric in groups of
the block size, with the embedding and lm_head int8 as NNCF keeps them); the CPU plugin computes int weights with
activations quantized dynamically in groups (its ``DYNAMIC_QUANTIZATION_GROUP_SIZE``).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from compiler.backends import DecoderForm, Lowered
from compiler.errors import LowerError
from targets.backend import Generation
from targets.signature import Signature, TensorSpec

IR, WEIGHTS = "openvino_model.xml", "openvino_model.bin"
TOKENIZER, DETOKENIZER = "openvino_tokenizer.xml", "openvino_detokenizer.xml"
CONFIG = "ov_config.json"
COPIED = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
          "special_tokens_map.json")
#: the KV cache's element type per weight precision: exact at fp32 (verified against the float reference), the CPU
#: plugin's own default (u8, per-token scales) where the weights are already rounded
#: LLMPipeline's own properties, which the CPU plugin refuses
PIPELINE_ONLY = ("ATTENTION_BACKEND",)
KV_CACHE = {"fp32": ("f32", 4), "fp16": ("u8", 1), "int8": ("u8", 1), "int4": ("u8", 1)}
#: ``--kv-cache``: the CPU plugin's KV_CACHE_PRECISION per asked type (bytes per element)
KV_CACHE_ASKED = {"fp32": ("f32", 4), "fp16": ("f16", 2), "int8": ("u8", 1)}


def _step(model):
    """The torch step with the cache explicit: (input_ids, attention_mask, position_ids, k_0, v_0, ...) ->
    (logits, k_0', v_0', ...), the caches ``[batch, kv_heads, past, head_dim]`` growing by the step's tokens."""
    import torch
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    config = model.config.get_text_config()
    layers = config.num_hidden_layers

    class Step(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, position_ids, *past):
            cache = DynamicCache(config=config)
            # plain layers for every layer: a sliding layer would drop keys, and the state of each layer must grow
            # by exactly the step's tokens
            cache.layers = [DynamicLayer() for _ in range(layers)]
            for i, layer in enumerate(cache.layers):
                # set, not `update`d: an empty first tensor would be concatenated, which the converter refuses
                layer.keys, layer.values = past[2 * i], past[2 * i + 1]
                layer.device, layer.is_initialized = past[0].device, True
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             past_key_values=cache, use_cache=True)
            result = [out.logits]
            for layer in cache.layers:
                result += [layer.keys, layer.values]
            return tuple(result)

    return Step()


def _make_stateful(ov_model, past: list[str], present: list[str], kv_heads: Sequence[int],
                   head_dims: Sequence[int]) -> None:
    """The explicit cache becomes the model's state, as optimum-intel's `patch_stateful` does it: ``beam_idx``
    gathers each cache before use, MakeStateful pairs inputs with outputs, and each state starts empty with the
    request's batch."""
    import openvino as ov
    from openvino import opset13
    from openvino._offline_transformations import apply_make_stateful_transformation

    for i, name in enumerate(past):
        # head counts and widths static: the empty initial state takes its shape from them
        ov_model.input(name).get_node().set_partial_shape(ov.PartialShape([-1, kv_heads[i], -1, head_dims[i]]))
    beam = opset13.parameter(name="beam_idx", dtype=ov.Type.i32, shape=ov.PartialShape([-1]))
    beam.output(0).get_tensor().add_names({"beam_idx"})
    ov_model.add_parameters([beam])
    for name in past:
        port = ov_model.input(name)
        consumers = port.get_target_inputs()
        gathered = opset13.gather(port, beam, opset13.constant(0))
        for consumer in consumers:
            consumer.replace_source_output(gathered.output(0))
    ov_model.validate_nodes_and_infer_types()
    apply_make_stateful_transformation(ov_model, dict(zip(past, present)))
    batch = opset13.gather(opset13.shape_of(ov_model.input("input_ids"), output_type="i64"),
                           opset13.constant([0]), opset13.constant(0))
    for op in ov_model.get_ops():
        if op.get_type_name() != "ReadValue":
            continue
        dims: list[Any] = [d.min_length for d in op.get_output_partial_shape(0)]
        dims[0] = batch
        dims = [opset13.constant(np.array([d], np.int64)) if isinstance(d, int) else d for d in dims]
        zero = opset13.constant(0.0, dtype=op.get_output_element_type(0))
        op.set_arguments([opset13.broadcast(zero, opset13.concat(dims, axis=0))])
    ov_model.validate_nodes_and_infer_types()


def _compress(ov_model, precision: str, block: int, method: str = "rtn",
              calibration: Sequence[Sequence[int]] = (), origin: str = "", int8_share: float = 0.0
              ) -> tuple[Any, dict[str, Any]]:
    """int8 / int4 weights by NNCF: the compressed model and the pass record. ``method`` "rtn" is data-free;
    "awq+scale_estimation" and "gptq+scale_estimation" are NNCF's data-aware algorithms, run on ``calibration``
    (token ids; the stateful model's state is reset before each prompt, as NNCF's engine does). ``int8_share`` of the
    matmuls stay int8 (NNCF's ``ratio``: its sensitivity metric picks them, on the data where there is data)."""
    import nncf

    if precision == "int4" and int8_share >= 1.0:
        # every matmul int8 (per output channel, as the int8 precision): NNCF reads ratio 0 as "no ratio"
        compressed, record = _compress(ov_model, "int8", block)
        return compressed, {**record, "weight_method": method, "int8_share": 1.0,
                            "int8_layers": _int8_matmuls(compressed)}
    mode = nncf.CompressWeightsMode.INT4_SYM if precision == "int4" else nncf.CompressWeightsMode.INT8_ASYM
    settings: dict[str, Any] = {"mode": mode}
    if precision == "int4":
        # every matmul int4 but the embedding and lm_head, int8 as NNCF's default keeps them: with them int4 too a
        # trained model's logits fell to cosine 0.979 against 0.986 (tests/compiler/backends/test_openvino.py's
        # model, 200 tokens of stdlib source)
        settings.update(group_size=block, ratio=round(1.0 - int8_share, 4))
    algorithms = [a for a in method.split("+") if a != "rtn"]
    unknown = [a for a in algorithms if a not in ("awq", "scale_estimation", "gptq")]
    if unknown or (algorithms and precision != "int4"):
        raise LowerError(f"OpenVINO weight method {method!r} at {precision}: NNCF's data-aware methods here are "
                         "rtn, awq+scale_estimation, gptq+scale_estimation (int4)")
    if algorithms:
        if not calibration:
            raise LowerError(f"weight method {method} needs calibration prompts; none were given to the lowering")
        settings.update({a: True for a in algorithms}, dataset=nncf.Dataset(list(calibration), _calibration_inputs),
                        subset_size=len(calibration))
    logging.getLogger("nncf").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        compressed = nncf.compress_weights(ov_model, **settings)
    record = {"name": "nncf.compress_weights", "nncf": nncf.__version__, "mode": mode.value, "weight_method": method,
              **({"group_size": block, "ratio": settings["ratio"],
                  "embedding_and_lm_head": "int8 asymmetric (NNCF's backup mode)"}
                 if precision == "int4" else
                 {"granularity": "per output channel"}),
              **({"algorithms": algorithms, "calibration": origin, "samples": len(calibration)} if algorithms else {}),
              **({"int8_share": int8_share, "int8_layers": _int8_matmuls(compressed)} if int8_share else {})}
    return compressed, record


def _int8_matmuls(ov_model) -> list[str]:
    """The MatMuls whose weights NNCF left at 8 bits, the embedding's and lm_head's aside (int8 at every share)."""
    eight = {"u8", "i8"}
    names = []
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() != "Constant" or op.get_element_type().get_type_name() not in eight:
            continue
        frontier, hops = [op], 0
        while frontier and hops < 5:  # Constant -> Convert -> Subtract -> Multiply (-> Reshape) -> MatMul
            nxt = []
            for node in frontier:
                for out in node.outputs():
                    for target in out.get_target_inputs():
                        consumer = target.get_node()
                        if consumer.get_type_name() == "MatMul":
                            names.append(consumer.get_friendly_name())
                        elif consumer.get_type_name() in ("Convert", "Subtract", "Multiply", "Reshape"):
                            nxt.append(consumer)
            frontier, hops = nxt, hops + 1
    return sorted({n for n in names if "lm_head" not in n})


def _calibration_inputs(ids: Sequence[int]) -> dict[str, np.ndarray]:
    """One calibration prompt as the stateful model's inputs at the start of a request."""
    tokens = np.asarray([list(ids)], dtype=np.int64)
    return {"input_ids": tokens, "attention_mask": np.ones_like(tokens),
            "position_ids": np.arange(tokens.shape[1], dtype=np.int64)[None], "beam_idx": np.zeros(1, np.int32)}


def _tokenizers(source: Path, workdir: Path) -> None:
    import openvino as ov
    import openvino_tokenizers
    from transformers import AutoTokenizer

    try:
        tokenizer, detokenizer = openvino_tokenizers.convert_tokenizer(AutoTokenizer.from_pretrained(source),
                                                                       with_detokenizer=True)
    except Exception as exc:
        raise LowerError(f"openvino-tokenizers could not convert the tokenizer in {source}: {type(exc).__name__}: "
                         f"{str(exc)[:300]}; OpenVINO GenAI loads the converted one beside the model") from exc
    ov.save_model(tokenizer, str(workdir / TOKENIZER))
    ov.save_model(detokenizer, str(workdir / DETOKENIZER))


def lower_decoder(model, precision: str, workdir: Path, context: int, block: int, options: Mapping[str, Any],
                  method: str = "rtn", calibration: Sequence[Sequence[int]] = (), calibration_origin: str = "",
                  int8_share: float = 0.0, kv_cache: str | None = None) -> Lowered:
    import openvino as ov
    import torch

    from compiler.backends.openvino.lower import stable_names

    from compiler.llm.static import cache_shapes_of

    spec = model.spec
    torch_model = model.torch_model()
    config = torch_model.config.get_text_config()
    shapes = cache_shapes_of(config, context)
    layers = len(shapes) // 2
    if precision == "int4":
        widths = sorted({m.in_features for m in torch_model.modules() if isinstance(m, torch.nn.Linear)})
        if any(width % block for width in widths):
            raise LowerError(f"int4 groups of {block} do not divide every input width of {spec.architecture}'s "
                             f"linear layers ({', '.join(map(str, widths))}); give --block-size a divisor of them")
    past_names = [f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    present_names = [f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    # the converter keeps the lengths symbolic, but the tracer fixes the branches Python took on them: past longer
    # than a sliding window, so the windowed mask is in the graph (gemma3's decode steps went wrong without)
    tokens, past_len = 3, max(2, (getattr(config, "sliding_window", None) or 0) + 1)
    example = (torch.ones(1, tokens, dtype=torch.long), torch.ones(1, past_len + tokens, dtype=torch.long),
               torch.arange(past_len, past_len + tokens).view(1, -1),
               *[torch.zeros(1, s[1], past_len, s[3]) for s in shapes])
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer warns at each Python branch on a shape
            ov_model = ov.convert_model(_step(torch_model), example_input=example)
        for port, name in zip(ov_model.inputs, ["input_ids", "attention_mask", "position_ids", *past_names]):
            port.get_tensor().set_names({name})
        for port, name in zip(ov_model.outputs, ["logits", *present_names]):
            port.get_tensor().set_names({name})
        _make_stateful(ov_model, past_names, present_names, [s[1] for s in shapes], [s[3] for s in shapes])
    except Exception as exc:
        raise LowerError(f"OpenVINO could not convert {spec.architecture}'s decoder: {type(exc).__name__}: "
                         f"{str(exc)[:300]}") from exc
    passes: list[dict[str, Any]] = [
        {"name": "openvino.convert_model", "source": "torch (transformers DynamicCache step)", "cache": "explicit"},
        {"name": "openvino.make_stateful", "states": len(past_names), "inputs": ["input_ids", "attention_mask",
                                                                               "position_ids", "beam_idx"]}]
    if precision in ("int8", "int4"):
        ov_model, record = _compress(ov_model, precision, block, method if precision == "int4" else "rtn",
                                     calibration, calibration_origin, int8_share if precision == "int4" else 0.0)
        passes.append(record)
    stable_names(ov_model)
    ov.save_model(ov_model, str(workdir / IR), compress_to_fp16=precision == "fp16")
    passes.append({"name": "openvino.save_model", "compress_to_fp16": precision == "fp16"})
    _tokenizers(model.directory, workdir)
    copied = [name for name in COPIED if (model.directory / name).is_file()]
    for name in copied:
        shutil.copy2(model.directory / name, workdir / name)
    kv_type, kv_bytes = KV_CACHE_ASKED[kv_cache] if kv_cache else KV_CACHE[precision]
    # SDPA: the stateful model as written. LLMPipeline's default on the CPU rewrites it to PagedAttention for
    # continuous batching, which lost gemma3's sliding windows (its decode steps left the reference's tokens)
    properties = {**dict(options.get("config", {})), "KV_CACHE_PRECISION": kv_type, "ATTENTION_BACKEND": "SDPA"}
    runtime = {"device": options.get("device", "CPU"), "config": properties, "model": IR,
               "openvino_version": ov.get_version()}
    (workdir / CONFIG).write_text(json.dumps(runtime, indent=2, sort_keys=True) + "\n")
    weights = {"fp32": "fp32", "fp16": "fp16", "int8": "int8", "int4": f"int4 (groups of {block})"}[precision]
    if precision == "int4" and int8_share >= 1.0:
        weights = "int8 (every matmul: int4 missed the accuracy budget)"
    elif precision == "int4" and int8_share:
        weights += f", {len(record['int8_layers'])} matmuls int8"
    edges = "int8" if precision == "int4" else weights  # the embedding and lm_head
    ops: dict[str, int] = {}
    for op in ov_model.get_ordered_ops():
        ops[op.get_type_name()] = ops.get(op.get_type_name(), 0) + 1
    return Lowered(
        files=(IR, WEIGHTS, TOKENIZER, TOKENIZER.replace(".xml", ".bin"), DETOKENIZER,
               DETOKENIZER.replace(".xml", ".bin"), CONFIG, *copied),
        signature=Signature((TensorSpec("input_ids", (1, "tokens"), "int64"),
                             TensorSpec("attention_mask", (1, "total"), "int64"),
                             TensorSpec("position_ids", (1, "tokens"), "int64"),
                             TensorSpec("beam_idx", (1,), "int32")),
                            (TensorSpec("logits", (1, "tokens", spec.vocab_size), "float32"),)),
        options={**dict(options), "decoder": {"context": context, "config": properties}},
        passes=tuple(passes),
        notes=(f"the KV cache is {kv_type} (KV_CACHE_PRECISION in {CONFIG}, what the application passes)",),
        structure={"format": "OpenVINO IR, stateful (OpenVINO GenAI LLMPipeline folder)", "states": len(past_names),
                   "weights": weights, "ops": dict(sorted((k, v) for k, v in ops.items()
                                                          if k not in ("Parameter", "Result", "Constant")))},
        decoder=DecoderForm(cache_form="dynamic", programs=("openvino_model",), runtime="openvino-genai",
                            context=context, kv_bytes_per_element=kv_bytes,
                            weight_precisions={"embedding": edges, "matmuls": weights, "lm_head": edges},
                            tokenizer_files=(TOKENIZER, DETOKENIZER, *copied), windowed_cache=False,
                            generation=dict(model.generation)),
    )


class OpenVinoDecoderRunner:
    """The folder in OpenVINO GenAI's `LLMPipeline` (greedy, token ids in and out, timed by a streamer), and its
    model in a plain infer request for teacher-forced logits."""

    def __init__(self, folder: Path, properties: Mapping[str, Any], context: int, threads: int) -> None:
        import openvino as ov
        import openvino_genai

        self._folder, self._properties, self.context = folder, dict(properties), context
        self._ov, self._genai = ov, openvino_genai
        self.threads = max(1, threads)
        self._pipeline = self._request = None
        self.description = (f"openvino-genai {openvino_genai.__version__.split('-')[0]} LLMPipeline, CPU plugin, "
                            f"{self.threads} threads on this host ({folder.name}, "
                            f"KV cache {self._properties.get('KV_CACHE_PRECISION', 'default')})")

    def _config(self) -> dict[str, Any]:
        return {**self._properties, "INFERENCE_NUM_THREADS": self.threads}

    def set_threads(self, threads: int) -> bool:
        self.threads = max(1, threads)
        self._pipeline = self._request = None  # both size their pools when compiled
        return True

    def generate(self, ids: Sequence[int], new_tokens: int, stop: Sequence[int] = (),
                 on_token: Callable[[int], None] | None = None) -> Generation:
        if self._pipeline is None:
            self._pipeline = self._genai.LLMPipeline(str(self._folder), "CPU", **self._config())
        genai, stops = self._genai, set(int(s) for s in stop)
        config = genai.GenerationConfig()
        config.max_new_tokens, config.do_sample, config.ignore_eos = int(new_tokens), False, True
        tokens: list[int] = []
        stamps: list[float] = []

        class Streamer(genai.StreamerBase):
            def write(self, token):
                for t in ([token] if isinstance(token, int) else list(token)):
                    stamps.append(time.perf_counter())
                    tokens.append(int(t))
                    if on_token is not None:
                        on_token(int(t))
                    if int(t) in stops:
                        return genai.StreamingStatus.STOP
                return genai.StreamingStatus.RUNNING

            def end(self):
                return None

        prompt = np.asarray([list(ids)], np.int64)
        inputs = genai.TokenizedInputs(self._ov.Tensor(prompt), self._ov.Tensor(np.ones_like(prompt)))
        start = time.perf_counter()
        self._pipeline.generate(inputs, config, Streamer())
        tokens, stamps = tokens[:new_tokens], stamps[:new_tokens]
        gaps = tuple(b - a for a, b in zip(stamps, stamps[1:]))
        return Generation(tuple(tokens), (stamps[0] - start) if stamps else 0.0, gaps)

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        if self._request is None:
            core = self._ov.Core()
            plugin = {k: v for k, v in self._config().items() if k not in PIPELINE_ONLY}
            compiled = core.compile_model(core.read_model(str(self._folder / IR)), "CPU", plugin)
            self._request = compiled.create_infer_request()
        n = len(ids)
        self._request.reset_state()
        self._request.infer({"input_ids": np.asarray([list(ids)], np.int64),
                             "attention_mask": np.ones((1, n), np.int64),
                             "position_ids": np.arange(n, dtype=np.int64)[None],
                             "beam_idx": np.zeros(1, np.int32)})
        return np.asarray(self._request.get_tensor("logits").data)[0].astype(np.float32)
