"""Decoder LMs for TVM: prefill and decode functions over a static KV cache in one library, as MLC-LLM lays them out.

Both step programs (`compiler.llm.static`) are imported with TVM's torch importer with their weights kept
as inputs, merged into one IRModule as functions ``prefill`` and ``decode``, compiled through the same
pipeline as the backend's other artifacts, and linked into ``decoder.so`` (cross-linked for other CPUs).
The weights go beside it, once, in ``weights.npz`` (no pickle); the runner passes them to either function.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from compiler.backends import DecoderForm, Lowered
from compiler.errors import LowerError
from targets.signature import Signature, TensorSpec
from targets.spec import TargetSpec

LIBRARY = "decoder.so"
WEIGHTS = "weights.npz"
DEFAULT_CHUNK = 32
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json")


def lower_decoder(model, target: TargetSpec, precision: str, workdir: Path, context: int, chunk: int | None,
                  options: Mapping[str, Any]) -> Lowered:
    import tvm
    from tvm.relax.frontend.torch import from_exported_program

    from compiler.backends.tvm.lower import compile_module, check_cross_compiler, elf_machine
    from compiler.llm.static import cache_shapes, export_step

    check_cross_compiler(target, options)
    chunk = min(chunk or DEFAULT_CHUNK, context)
    try:
        modules = {name: from_exported_program(export_step(model, tokens, context), keep_params_as_input=True)
                   for name, tokens in (("prefill", chunk), ("decode", 1))}
    except Exception as exc:
        raise LowerError(f"TVM's torch importer could not take {model.spec.architecture}'s static-cache step: "
                         f"{type(exc).__name__}: {str(exc)[:300]}") from exc
    params = modules["prefill"]["main"].attrs["params"]
    if [tuple(p.shape) for p in params] != [tuple(p.shape) for p in modules["decode"]["main"].attrs["params"]]:
        raise LowerError("the prefill and decode programs take different weights; cannot share them")
    merged = tvm.IRModule()
    for name, module in modules.items():
        merged[name] = module["main"].without_attr("params").with_attr("global_symbol", name)
    try:
        executable, schedules = compile_module(merged, dict(options["target"]), options["pipeline"],
                                         options["tuning_database"] != "none")
    except Exception as exc:
        raise LowerError(f"TVM could not compile {model.name}'s decoder for {target.id}: {type(exc).__name__}: "
                         f"{str(exc)[:300]}") from exc
    library = workdir / LIBRARY
    cross = options["cross_compiler"]
    executable.export_library(str(library), **({"cc": cross} if cross else {}))
    np.savez(workdir / WEIGHTS, **{f"w{i:04d}": p.numpy() for i, p in enumerate(params)})
    copied = []
    for name in TOKENIZER_FILES:
        if (model.directory / name).is_file():
            shutil.copy2(model.directory / name, workdir / name)
            copied.append(name)
    spec = model.spec
    past = [TensorSpec(f"past.{i // 2}.{'key' if i % 2 == 0 else 'value'}", shape, "float32")
            for i, shape in enumerate(cache_shapes(spec, context))]
    present = [TensorSpec(t.name.replace("past", "present"), t.shape, t.dtype) for t in past]
    signature = Signature((TensorSpec("input_ids", (1, "tokens"), "int64"), TensorSpec("cache_position", ("tokens",), "int64"),
                           *past), (TensorSpec("logits", (1, "tokens", spec.vocab_size), "float32"), *present))
    return Lowered(
        files=(LIBRARY, WEIGHTS, *copied), signature=signature,
        options={**dict(options), "elf_machine": elf_machine(library),
                 "decoder": {"chunk": chunk, "context": context, "cache_shapes": [list(s) for s in cache_shapes(spec, context)]}},
        passes=({"name": "static-cache-step-export", "programs": {"prefill": chunk, "decode": 1}, "context": context},
                {"name": f"tvm-relax-pipeline-{options['pipeline']}", "importer": "torch.export -> tvm.relax.frontend.torch",
                 "weights": len(params)}, schedules),
        notes=("sliding-window layers keep a full-length cache in this form (the mask windows them)",)
        if spec.sliding_window else (),
        decoder=DecoderForm(cache_form="static", programs=("prefill", "decode"), runtime="tvm-relax-vm",
                            context=context, kv_bytes_per_element=4, prefill_chunk=chunk,
                            weight_precisions={"embedding": "fp32", "matmuls": "fp32", "lm_head": "fp32"},
                            tokenizer_files=tuple(copied), windowed_cache=False,
                            generation=dict(model.generation)),
    )


class TvmDecoderRunner:
    """The library's ``prefill`` / ``decode`` functions in a Relax VM, the cache kept on the device between steps."""

    def __init__(self, folder: Path, spec_shapes: list, chunk: int, context: int) -> None:
        import tvm
        from tvm import relax

        from compiler.llm.static import ChunkedRunner

        self._tvm = tvm
        device = tvm.cpu()
        self._device = device
        self._vm = relax.VirtualMachine(tvm.runtime.load_module(str(folder / LIBRARY)), device)
        with np.load(folder / WEIGHTS, allow_pickle=False) as data:
            self._weights = [tvm.runtime.tensor(data[name], device) for name in sorted(data.files)]
        self._shapes = spec_shapes
        description = f"tvm {tvm.__version__} relax VM on this host ({LIBRARY}: prefill x{chunk}, decode)"
        self._chunked = ChunkedRunner(self._step("prefill"), self._step("decode"), chunk, self._empty, context,
                                      description)
        self.description = description

    def _empty(self) -> list:
        return [self._tvm.runtime.tensor(np.zeros(shape, np.float32), self._device) for shape in self._shapes]

    def _step(self, function: str):
        def run(ids: np.ndarray, positions: np.ndarray, past: list):
            out = self._vm[function](self._tvm.runtime.tensor(ids, self._device),
                                     self._tvm.runtime.tensor(positions, self._device), *past, *self._weights)
            return out[0].numpy(), [out[i] for i in range(1, len(out))]

        return run

    def generate(self, ids, new_tokens, stop=(), on_token=None):
        return self._chunked.generate(ids, new_tokens, stop, on_token)

    def logits(self, ids):
        return self._chunked.logits(ids)

    def set_threads(self, threads: int) -> bool:
        return False  # the pool is sized at start-up (TVM_NUM_THREADS / the session), and the CPUs are pinned
