"""Decoder LMs for Core ML: a stateful ML program (iOS 18 / macOS 15) whose KV cache lives in Core ML states.

The step program with the cache as in-place buffers (`compiler.llm.static.stateful_step`) is exported twice,
``prefill`` (a chunk of tokens) and ``decode`` (one), converted with the buffers as `ct.StateType` states
(fp16, as Core ML keeps states) and saved as one multifunction package, the weights stored once. int8 and
int4 compress the weights with coremltools' linear quantizer (per channel; per block of 32 for int4).
Core ML runs programs only on Apple's OSes: here the saved package's structure is checked (functions,
states, state-update ops, weight types).
"""

from __future__ import annotations

import collections
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

from compiler.backends import DecoderForm, Lowered
from compiler.errors import LowerError
from targets.signature import Signature, TensorSpec
from targets.spec import TargetSpec

PACKAGE = "decoder.mlpackage"
DEFAULT_CHUNK = 32
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json")
#: stateful programs need these or later (Core ML states arrived in iOS 18 / macOS 15)
STATEFUL_TARGETS = ("iOS18", "macOS15")


def _decompositions():
    """ATen ops coremltools 9 has no converter for, rewritten into ones it has."""
    import torch
    import torch._decomp

    def index_copy_as_scatter(x, dim, index, src):
        shape = [1] * src.dim()
        shape[dim] = -1
        return torch.scatter(x, dim, index.view(shape).expand(src.shape), src)

    table = {torch.ops.aten.index_copy.default: index_copy_as_scatter,
             torch.ops.aten.alias.default: lambda x: x.view(x.shape),
             torch.ops.aten.__and__.Tensor: torch.logical_and,
             torch.ops.aten.where.ScalarOther: lambda cond, x, other: torch.where(cond, x, torch.full_like(x, other))}
    table.update(torch._decomp.get_decompositions([torch.ops.aten.new_ones]))
    return table


def lower_decoder(model, target: TargetSpec, precision: str, workdir: Path, context: int, chunk: int | None,
                  options: Mapping[str, Any]) -> Lowered:
    import numpy as np
    import torch

    from compiler.backends.coreml.lower import coremltools_module, inspect_package
    from compiler.llm.static import cache_shapes, stateful_step

    ct = coremltools_module()
    deployment = options["minimum_deployment_target"]
    if deployment not in STATEFUL_TARGETS:
        deployment = "iOS18" if deployment.startswith("iOS") else "macOS15"  # states need at least these
    chunk = min(chunk or DEFAULT_CHUNK, context)
    spec = model.spec
    step = stateful_step(model.torch_model(), context)
    states = [ct.StateType(wrapped_type=ct.TensorType(shape=shape, dtype=np.float16),
                           name=f"{'key' if i % 2 == 0 else 'value'}_cache_{i // 2}")
              for i, shape in enumerate(cache_shapes(spec, context))]
    with tempfile.TemporaryDirectory(prefix="chipfit-coreml-llm-") as scratch:
        parts = {}
        for name, tokens in (("prefill", chunk), ("decode", 1)):
            try:
                with torch.no_grad():
                    program = torch.export.export(step, (torch.zeros(1, tokens, dtype=torch.long),
                                                         torch.arange(tokens, dtype=torch.long)), strict=True)
                program = program.run_decompositions(_decompositions())
                mlmodel = ct.convert(
                    program, convert_to="mlprogram", minimum_deployment_target=getattr(ct.target, deployment),
                    compute_units=ct.ComputeUnit[options["compute_units"]],
                    inputs=[ct.TensorType(name="input_ids", shape=(1, tokens), dtype=np.int32),
                            ct.TensorType(name="cache_position", shape=(tokens,), dtype=np.int32)],
                    outputs=[ct.TensorType(name="logits")], states=states,
                    compute_precision=ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16)
            except Exception as exc:
                raise LowerError(f"coremltools could not convert {spec.architecture}'s {name} step: "
                                 f"{type(exc).__name__}: {str(exc)[:300]}") from exc
            if precision in ("int8", "int4"):
                import coremltools.optimize.coreml as cto

                config = (cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel")
                          if precision == "int8" else
                          cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int4", granularity="per_block",
                                                      block_size=32))
                # the weights of linear layers (lm_head included) and the embedding table: other constants (masks,
                # an all-zero cache initialiser) are not weights, and an all-zero tensor has no scale
                mlmodel = cto.linear_quantize_weights(mlmodel, config=cto.OptimizationConfig(
                    op_type_configs={"linear": config, "matmul": config, "gather": config}))
            path = Path(scratch) / f"{name}.mlpackage"
            mlmodel.save(str(path))
            parts[name] = path
        descriptor = ct.utils.MultiFunctionDescriptor()
        for name, path in parts.items():
            descriptor.add_function(str(path), src_function_name="main", target_function_name=name)
        descriptor.default_function_name = "decode"
        ct.utils.save_multifunction(descriptor, str(workdir / PACKAGE))
    structure = _structure(ct, workdir / PACKAGE)
    if set(structure["functions"]) != {"prefill", "decode"} or len(structure["states"]) != 2 * spec.layers:
        raise LowerError(f"{PACKAGE}: expected functions prefill and decode with {2 * spec.layers} states, found "
                         f"{structure['functions']} and {len(structure['states'])}")
    copied = []
    for name in TOKENIZER_FILES:
        if (model.directory / name).is_file():
            shutil.copy2(model.directory / name, workdir / name)
            copied.append(name)
    files = tuple(sorted(str(p.relative_to(workdir)) for p in (workdir / PACKAGE).rglob("*") if p.is_file()))
    weights = {"fp32": "fp32", "fp16": "fp16", "int8": "int8", "int4": "int4"}[precision]
    return Lowered(
        files=files + tuple(copied),
        signature=Signature((TensorSpec("input_ids", (1, "tokens"), "int32"), TensorSpec("cache_position", ("tokens",), "int32")),
                            (TensorSpec("logits", (1, "tokens", spec.vocab_size), "float32"),)),
        options={**dict(options), "minimum_deployment_target": deployment},
        passes=({"name": "static-cache-step-export", "programs": {"prefill": chunk, "decode": 1}, "context": context},
                {"name": "coremltools.convert", "states": len(states), "compute_precision": precision},
                *(({"name": "coremltools.optimize.coreml.linear_quantize_weights", "dtype": precision},)
                  if precision in ("int8", "int4") else ())),
        notes=(f"Core ML states need {deployment}; the package's minimum deployment target is set so",)
        if deployment != options["minimum_deployment_target"] else (),
        structure=structure,
        decoder=DecoderForm(cache_form="static", programs=("prefill", "decode"), runtime="coreml-stateful",
                            context=context, kv_bytes_per_element=2, prefill_chunk=chunk,
                            weight_precisions={"embedding": weights, "matmuls": weights, "lm_head": weights},
                            tokenizer_files=tuple(copied), windowed_cache=False, generation=dict(model.generation)),
    )


def _structure(ct, package: Path) -> dict[str, Any]:
    spec = ct.utils.load_spec(str(package))
    ops: dict[str, collections.Counter] = {}
    dtypes = set()
    compressed = set()
    for name, function in spec.mlProgram.functions.items():
        counter = collections.Counter()
        for block in function.block_specializations.values():
            for op in block.operations:
                counter[op.type] += 1
                if op.type in ("constexpr_blockwise_shift_scale", "constexpr_affine_dequantize"):
                    for argument in op.inputs["data"].arguments:
                        if argument.WhichOneof("binding") == "value" and argument.value.type.HasField("tensorType"):
                            compressed.add(ct.proto.MIL_pb2.DataType.Name(argument.value.type.tensorType.dataType))
                if op.type.startswith("const"):
                    for out in op.outputs:
                        if out.type.HasField("tensorType"):
                            dtypes.add(ct.proto.MIL_pb2.DataType.Name(out.type.tensorType.dataType))
        ops[name] = counter
    description = spec.description
    states = [(s.name, list(s.type.stateType.arrayType.shape)) for f in description.functions for s in f.state] or \
        [(s.name, list(s.type.stateType.arrayType.shape)) for s in description.state]
    return {
        "format": "mlprogram (stateful, multifunction)", "specification_version": spec.specificationVersion,
        "functions": sorted(spec.mlProgram.functions), "states": sorted({name for name, _ in states}),
        "state_shapes": {name: shape for name, shape in states},
        "state_ops": {name: {k: v for k, v in counter.items() if k in ("read_state", "write_state",
                                                                       "coreml_update_state", "slice_update",
                                                                       "scatter_along_axis")}
                      for name, counter in ops.items()},
        "weight_dtypes": sorted(dtypes), "compressed_weight_dtypes": sorted(compressed), "op_histogram": {name: dict(sorted(c.items())) for name, c in ops.items()},
    }
