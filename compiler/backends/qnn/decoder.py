"""Decoder LMs through QNN: the static prefill and decode programs quantized as Qualcomm's HTP LLMs run them
(8-bit weights, 16-bit activations: w8a16), compiled into one HTP context binary that holds their weights once.

1. `compiler.llm.static_onnx` exports the programs (a chunk of tokens; one token) over a fixed-size cache.
2. Two rewrites the HTP needs, found on its simulator: the attention mask's float32 minimum becomes `MASK_VALUE`
   (with it, the 16-bit range of every tensor the mask reaches is spent on -3.4e38 and the model collapses), and
   ``Reciprocal(x)`` becomes ``Div(1, x)`` (QNN's 16-bit Reciprocal gave 1/sqrt(mean) wrong by 90 % on the
   simulator; Div is exact to the quantization step).
3. Calibration: the float programs run on the build's calibration prompts (the user's ``--samples``, else the
   stdlib text set) as the runtime runs them, chunked prompt then greedy steps; every program input seen is a
   calibration sample. Each layer's cache input, the update scattered into it and the cache output share one
   symmetric range: QNN's ScatterElements does not requantize between them (found on the simulator: 6 % error).
4. ONNX Runtime's QNN quantization recipe (`get_qnn_qdq_config`: uint16 activations, uint8 weights) writes the
   QDQ programs; both are compiled with ``ep.share_ep_contexts`` into one context binary.

The simulator cannot load a weight-sharing context binary (QNN_COMMON_ERROR_NOT_SUPPORTED), so verification
compiles the same two QDQ programs on it one by one, from the artifact's ``qnn/*.qdq.onnx``, and says so.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from compiler.backends import DecoderForm, GenerationPlan, Lowered, NotRunnable
from compiler.backends.qnn import ep
from compiler.backends.qnn.lower import placement_record
from compiler.backends.qnn.quantize import qnn_qdq
from compiler.backends.qnn.socs import soc_for
from compiler.errors import LowerError
from compiler.llm.static import ChunkedRunner, cache_shapes
from compiler.llm.static_onnx import DEFAULT_CHUNK, SessionPairRunner, export_programs, save_sharing_weights

PROGRAMS = ("prefill", "decode")
FOLDER = "qnn"
WEIGHTS = "weights.data"
#: the attention mask's "minus infinity": exp(-100) is 4e-44, and a 16-bit range that must hold it keeps a step of
#: 0.0015 for the scores beside it
MASK_VALUE = -100.0
#: float32 constants at or below this are the mask's minimum
_MASK_BELOW = -1e30
#: calibration: prompts used, and greedy steps after each (every step is one decode-program sample)
CALIBRATION_PROMPTS = 8
CALIBRATION_STEPS = 4
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json")


def _htp_ready(graph: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, int]]:
    """The program with the mask bounded and Reciprocal as Div (module docstring, step 2)."""
    masks = 0

    def bounded(tensor: onnx.TensorProto) -> onnx.TensorProto | None:
        if tensor.data_type != onnx.TensorProto.FLOAT:
            return None
        values = numpy_helper.to_array(tensor)
        if not values.size or not (values <= _MASK_BELOW).any():
            return None
        return numpy_helper.from_array(np.where(values <= _MASK_BELOW, np.float32(MASK_VALUE), values)
                                       .astype(np.float32), tensor.name)

    for tensor in graph.graph.initializer:
        new = bounded(tensor)
        if new is not None:
            tensor.CopyFrom(new)
            masks += 1
    nodes, reciprocals = [], 0
    for node in graph.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                new = bounded(attr.t) if attr.name == "value" else None
                if new is not None:
                    attr.t.CopyFrom(new)
                    masks += 1
        if node.op_type == "Reciprocal":
            one = f"{node.name or node.output[0]}_one"
            graph.graph.initializer.append(numpy_helper.from_array(np.array(1.0, np.float32), one))
            nodes.append(onnx.helper.make_node("Div", [one, node.input[0]], list(node.output), name=node.name))
            reciprocals += 1
        else:
            nodes.append(node)
    del graph.graph.node[:]
    graph.graph.node.extend(nodes)
    return graph, {"mask_constants_bounded": masks, "reciprocals_as_div": reciprocals}


def _calibration(floats: Mapping[str, Path], prompts: Sequence[Sequence[int]], chunk: int, context: int,
                 shapes: list[tuple[int, ...]]) -> tuple[dict[str, list[dict]], dict[str, float]]:
    """Program inputs seen while the float programs run the prompts; and each cache's largest magnitude."""
    import onnxruntime as ort

    seen: dict[str, list[dict]] = {name: [] for name in PROGRAMS}
    largest: dict[str, float] = {}

    def recording(name: str):
        session = ort.InferenceSession(str(floats[name]), providers=["CPUExecutionProvider"])
        inputs = [i.name for i in session.get_inputs()]
        outputs = [o.name for o in session.get_outputs()]

        def step(ids, positions, past):
            feed = dict(zip(inputs, [ids, positions, *past]))
            seen[name].append(feed)
            out = session.run(None, feed)
            for key, value in list(zip(outputs, out)) + list(feed.items()):
                if key.startswith(("past.", "present.")):
                    cache = key.replace("past.", "present.")
                    largest[cache] = max(largest.get(cache, 0.0), float(np.abs(value).max()))
            return out[0], out[1:]

        return step

    runner = ChunkedRunner(recording("prefill"), recording("decode"), chunk,
                           lambda: [np.zeros(s, np.float32) for s in shapes], context, "float calibration")
    for ids in list(prompts)[:CALIBRATION_PROMPTS]:
        ids = list(ids)[: max(1, context - CALIBRATION_STEPS)]
        runner.generate(ids, CALIBRATION_STEPS)
    return seen, largest


def _cache_overrides(graph: onnx.ModelProto, largest: Mapping[str, float]) -> dict[str, list[dict]]:
    """One symmetric range per layer cache for its input, the update scattered into it and its output."""
    overrides: dict[str, list[dict]] = {}
    for node in graph.graph.node:
        if node.op_type == "ScatterElements" and node.output[0] in largest:
            bound = np.float32(max(largest[node.output[0]], 1e-6))
            entry = [{"rmin": -bound, "rmax": bound}]
            for name in (node.input[0], node.input[2], node.output[0]):
                overrides[name] = entry
    return overrides


def _session_from(path: Path, provider: Mapping[str, Any], config: Mapping[str, str] = ()) -> Any:
    """A QNN session on a program whose weights are in the file beside it. From its path: loaded from bytes with
    ``session.model_external_initializers_file_folder_path`` (which would name the partitions the same in every
    build), the second program of a shared context failed to compile ("Failed to pre-register input: input_ids")."""
    return ep.session(str(path), provider, config)


def lower_decoder(model, target, precision: str, workdir: Path, context: int, options: Mapping[str, Any],
                  calibration: Sequence[Sequence[int]], calibration_origin: str) -> Lowered:
    if precision != "int8":
        raise LowerError(f"qnn builds decoder LMs at int8 (8-bit weights, 16-bit activations), not {precision}")
    if not calibration:
        raise LowerError("qnn quantizes the decoder's activations and needs calibration prompts; none were given")
    soc = soc_for(options["soc_model"], options["htp_arch"], str(target.source_file))
    spec = model.spec
    chunk = min(DEFAULT_CHUNK, context)
    shapes = [tuple(s) for s in cache_shapes(spec, context)]
    folder = workdir / FOLDER
    folder.mkdir()
    provider = ep.compile_options(options, fp16=False)
    with tempfile.TemporaryDirectory(prefix="chipfit-qnn-decoder-") as scratch_dir:
        scratch = Path(scratch_dir)
        floats, rewrites, programs = {}, {}, {}
        for name, graph in export_programs(model, context, chunk).items():
            programs[name], rewrites[name] = _htp_ready(graph)
            floats[name] = scratch / f"{name}.onnx"
            onnx.save(programs[name], str(floats[name]), save_as_external_data=True, location=f"{name}.data")
        samples, largest = _calibration(floats, calibration, chunk, context, shapes)
        quantized = {}
        for name in PROGRAMS:
            out = scratch / f"{name}.qdq.onnx"
            qnn_qdq(floats[name], out, samples[name], "uint16", "uint8",
                    init_overrides=_cache_overrides(programs[name], largest))
            quantized[name] = onnx.load(str(out))
    save_sharing_weights(quantized, folder, WEIGHTS, suffix=".qdq.onnx")
    placements, sessions = {}, []
    try:
        for i, name in enumerate(PROGRAMS):
            config = {"ep.context_enable": "1", "ep.context_file_path": str(workdir / f"{name}_ctx.onnx"),
                      "ep.context_embed_mode": "0", "ep.share_ep_contexts": "1"}
            if i == len(PROGRAMS) - 1:
                config["ep.stop_share_ep_contexts"] = "1"  # the last program writes the binary holding both
            session = _session_from(folder / f"{name}.qdq.onnx", provider, config)
            sessions.append(session)
            placements[name] = placement_record(quantized[name].graph, ep.placement(session))
    except LowerError:
        raise
    except Exception as exc:
        raise LowerError(f"QNN could not compile the decoder's programs for {soc.part} (HTP v{soc.htp_arch}): "
                         f"{exc}") from exc
    finally:
        del sessions
    binaries = sorted(p.name for p in workdir.glob("*_qnn.bin"))
    if len(binaries) != 1:
        raise LowerError(f"QNN wrote {len(binaries)} context binaries for the two programs, not one holding both")
    copied = []
    for name in TOKENIZER_FILES:
        if (model.directory / name).is_file():
            shutil.copy2(model.directory / name, workdir / name)
            copied.append(name)
    fallbacks = tuple(f"{program}: {n}" for program, record in placements.items()
                      for n in record["cpu_fallback"]["names"])
    notes = [f"compiled offline by QNN {ep.versions().get('qnn_sdk', '?')} for {soc.part} ({soc.name}, HTP "
             f"v{soc.htp_arch}): prefill ({chunk} tokens) and decode (1 token) in one context binary, {binaries[0]}, "
             "their weights stored once",
             f"activations uint16, weights uint8 per tensor (w8a16); calibrated on {calibration_origin}",
             "the HTP simulator here cannot load a weight-sharing context binary; verification compiles the same "
             "QDQ programs (qnn/*.qdq.onnx) on it one by one"]
    if fallbacks:
        notes.append(f"the programs do not run fully on the HTP: {', '.join(fallbacks[:8])}"
                     + (" ..." if len(fallbacks) > 8 else ""))
    layout = {"chunk": chunk, "context": context, "cache_shapes": [list(s) for s in shapes]}
    files = (f"{PROGRAMS[0]}_ctx.onnx", f"{PROGRAMS[1]}_ctx.onnx", binaries[0],
             *(f"{FOLDER}/{p.name}" for p in sorted(folder.iterdir())), *copied)
    return Lowered(
        files=files, signature=_signature(spec, context),
        options={**dict(options), "decoder": layout},
        passes=({"name": "static-cache-step-export", "programs": {"prefill": chunk, "decode": 1}, "context": context},
                {"name": "htp-rewrites", **{f"{k} ({p})": v for p, r in rewrites.items() for k, v in r.items()}},
                {"name": "quantize-qnn-w8a16", "activations": "uint16", "weights": "uint8 per tensor",
                 "recipe": "onnxruntime.quantization get_qnn_qdq_config", "calibration": calibration_origin,
                 "samples": {name: len(samples[name]) for name in PROGRAMS},
                 "weight_method": "minmax", "shared_cache_ranges": True},
                {"name": "qnn-compile", "soc_model": soc.soc_model, "soc": soc.part, "htp_arch": soc.htp_arch,
                 "provider_options": provider, "context_binary": binaries[0], "weight_sharing": True,
                 **ep.versions(), "programs": placements}),
        notes=tuple(notes), fallbacks=fallbacks,
        decoder=DecoderForm(cache_form="static", programs=PROGRAMS, runtime="onnxruntime + QNN HTP (static shapes)",
                            context=context, kv_bytes_per_element=2, prefill_chunk=chunk,
                            weight_precisions={"embedding": "uint8", "matmuls": "uint8", "lm_head": "uint8"},
                            tokenizer_files=tuple(copied), windowed_cache=False, generation=dict(model.generation),
                            weight_files=(binaries[0],)),
    )


def _signature(spec, context: int):
    from targets.signature import Signature, TensorSpec

    past = [TensorSpec(f"past.{i // 2}.{'key' if i % 2 == 0 else 'value'}", shape, "float32")
            for i, shape in enumerate(cache_shapes(spec, context))]
    present = [TensorSpec(t.name.replace("past", "present"), t.shape, t.dtype) for t in past]
    inputs = (TensorSpec("input_ids", (1, "tokens"), "int64"), TensorSpec("cache_position", ("tokens",), "int64"))
    return Signature((*inputs, *past), (TensorSpec("logits", (1, "tokens", spec.vocab_size), "float32"), *present))


def simulator_runner(artifact_dir: Path, options: Mapping[str, Any]) -> SessionPairRunner:
    """The artifact's QDQ prefill/decode programs compiled by QNN on the HTP simulator, fed in chunks."""
    layout = options["decoder"]
    provider = {"soc_model": options["soc_model"], "htp_arch": options["htp_arch"]}
    try:
        sessions = {name: _session_from(artifact_dir / FOLDER / f"{name}.qdq.onnx", provider) for name in PROGRAMS}
    except Exception as exc:
        raise NotRunnable(f"the HTP simulator could not compile the decoder's programs: {exc}") from exc
    return SessionPairRunner(sessions, layout, f"QNN {ep.versions().get('qnn_sdk', '?')} HTP simulator on this host "
                                               f"(prefill x{layout['chunk']} + decode, the QDQ programs compiled here "
                                               "one by one)")


def plan_generate(artifact_dir: Path, options: Mapping[str, Any]) -> GenerationPlan:
    why = ep.unavailable()
    if why:
        raise NotRunnable(why)
    return GenerationPlan(simulator_runner(artifact_dir, options), proxy=True, representative=False,
                          note="HTP simulator: numerics, not speed", execution="simulator")
