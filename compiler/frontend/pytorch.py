"""PyTorch front end: `torch.export` programs (in memory or `.pt2`) to a `TracedModel`.

The ONNX graph is produced by `torch.onnx.export(..., dynamo=True)` and its
optimizer; the exported program is kept beside it for backends that consume
torch programs. The float reference is the exported program itself.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import onnx
import torch

from compiler.errors import UsageError
from compiler.frontend.onnx_file import fix_dims, signature_from_onnx
from targets.signature import Signature, TensorSpec, apply_overrides, dim_bindings
from targets.model import TracedModel

BATCH = "batch"


def _check_pt2_is_pickle_free(path: Path) -> None:
    """Refuse a `.pt2` whose loading would unpickle anything.

    `torch.export.load` falls back to pickle for tensor subclasses, custom and
    opaque objects, legacy weight files and sample inputs that are not plain
    tensors. Plain exported programs need none of that, so such an archive is
    refused before torch sees it.
    """
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UsageError(f"{path}: not a readable .pt2 archive ({exc}); re-create it with torch.export.save") from exc
    with archive:
        names = archive.namelist()
        for name in names:
            parts = name.split("/")
            if "constants" in parts and parts[-1].startswith(("custom_obj_", "opaque_obj_")):
                raise UsageError(f"{path}: holds a pickled object ({name}); chipfit never unpickles model files")
            if "weights" in parts and parts[-1].endswith(".pt"):
                raise UsageError(
                    f"{path}: uses the legacy pickled weight format ({name}); re-save it with a current torch.export.save"
                )
            if parts[-1].endswith("_config.json"):
                try:
                    config = json.loads(archive.read(name)).get("config", {})
                except (ValueError, AttributeError) as exc:
                    raise UsageError(f"{path}: corrupt archive entry {name}: {exc}") from exc
                pickled = [k for k, meta in config.items() if isinstance(meta, dict) and meta.get("use_pickle")]
                if pickled:
                    raise UsageError(
                        f"{path}: tensors {pickled[:3]} are stored pickled (tensor subclasses); "
                        "chipfit never unpickles model files. Export plain tensors."
                    )
            if "sample_inputs" in parts:
                try:
                    torch.load(io.BytesIO(archive.read(name)), weights_only=True)
                except Exception as exc:
                    raise UsageError(
                        f"{path}: sample inputs {name} are not plain tensors and would need unpickling "
                        f"({type(exc).__name__}); re-export with tensor example inputs"
                    ) from exc


def load_pt2(path: Path, overrides: Iterable[TensorSpec] = ()) -> TracedModel:
    _check_pt2_is_pickle_free(path)
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise UsageError(f"{path}: cannot load the exported program: {exc}") from exc
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return from_program(program, name=path.stem, source=str(path), digest=digest, overrides=overrides)


def pt2_signature(path: Path, overrides: Iterable[TensorSpec] = ()) -> Signature:
    """The inputs of a `.pt2` program (names, shapes with a symbolic batch, dtypes), with no ONNX export; outputs
    are left empty (they are not needed to check sample files)."""
    _check_pt2_is_pickle_free(path)
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise UsageError(f"{path}: cannot load the exported program: {exc}") from exc
    specs = []
    for n, (name, val) in enumerate(_user_input_specs(program)):
        shape = tuple(int(d) if isinstance(d, int) or not hasattr(d, "node") else (BATCH if i == 0 else str(d))
                      for i, d in enumerate(val.shape))
        specs.append(TensorSpec(name, shape, str(val.dtype).replace("torch.", "")))
    return apply_overrides(Signature(tuple(specs), ()), overrides, str(path))


def trace_module(
    module: torch.nn.Module,
    example_inputs: Sequence[torch.Tensor] | Mapping[str, torch.Tensor],
    *,
    name: str | None = None,
    dynamic_batch: bool = False,
    overrides: Iterable[TensorSpec] = (),
) -> TracedModel:
    """Trace an in-memory module. With ``dynamic_batch`` the first dim of every input stays symbolic."""
    module = module.eval()
    args, kwargs = (tuple(example_inputs), {}) if not isinstance(example_inputs, Mapping) else ((), dict(example_inputs))
    dynamic_shapes = None
    if dynamic_batch:
        batch = torch.export.Dim(BATCH, min=1, max=4096)
        if kwargs:
            dynamic_shapes = {k: {0: batch} for k in kwargs}
        else:
            dynamic_shapes = tuple({0: batch} for _ in args)
    try:
        program = torch.export.export(module, args, kwargs, dynamic_shapes=dynamic_shapes)
    except Exception as exc:
        raise UsageError(f"torch.export could not trace {type(module).__name__}: {exc}") from exc
    name = name or type(module).__name__.lower()
    digest = _program_digest(program)
    return from_program(program, name=name, source=f"<module {type(module).__name__}>", digest=digest, overrides=overrides)


def _program_digest(program: torch.export.ExportedProgram) -> str:
    h = hashlib.sha256(str(program.graph).encode())
    for key, tensor in sorted(program.state_dict.items()):
        h.update(key.encode())
        h.update(tensor.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def _user_input_specs(program: torch.export.ExportedProgram) -> list[tuple[str, Any]]:
    user_inputs = set(program.graph_signature.user_inputs)
    return [
        (node.name, node.meta.get("val"))
        for node in program.graph.nodes
        if node.op == "placeholder" and node.name in user_inputs
    ]


def _example_args(program: torch.export.ExportedProgram, sizes: Mapping[str, int]) -> tuple[torch.Tensor, ...]:
    """Concrete example tensors for the program's user inputs, symbolic dims from ``sizes`` (default 2)."""
    args = []
    for _, val in _user_input_specs(program):
        shape = [int(d) if isinstance(d, int) or not hasattr(d, "node") else sizes.get(str(d), 2) for d in val.shape]
        args.append(torch.zeros(shape, dtype=val.dtype))
    return tuple(args)


def from_program(
    program: torch.export.ExportedProgram,
    *,
    name: str,
    source: str,
    digest: str,
    overrides: Iterable[TensorSpec] = (),
    samples: Mapping[str, np.ndarray] | None = None,
) -> TracedModel:
    try:
        onnx_program = torch.onnx.export(program, _example_args(program, {}), dynamo=True, verbose=False)
        onnx_program.optimize()
        model_proto = onnx_program.model_proto
    except Exception as exc:
        raise UsageError(f"{source}: torch.onnx.export failed: {exc}") from exc
    # torch names symbolic dims s0, s77...; a leading symbolic dim is the batch.
    renames: dict[str, str] = {}
    for inp in model_proto.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if dims and dims[0].dim_param and dims[0].dim_param not in renames:
            renames[dims[0].dim_param] = BATCH
    fix_dims(model_proto, renames)
    model_proto = onnx.shape_inference.infer_shapes(model_proto)
    signature = signature_from_onnx(model_proto)
    signature = apply_overrides(signature, overrides, source)
    if overrides:
        model_proto = fix_dims(model_proto, dim_bindings(signature_from_onnx(model_proto), signature))
    output_names = [t.name for t in signature.outputs]
    module = program.module()
    example = getattr(program, "example_inputs", None)
    by_keyword = bool(example and example[1])  # exported from keyword arguments (e.g. input_ids=...)

    def reference(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        tensors = {t.name: torch.from_numpy(np.ascontiguousarray(inputs[t.name])) for t in signature.inputs}
        with torch.no_grad():
            outs = module(**tensors) if by_keyword else module(*tensors.values())
        flat = torch.utils._pytree.tree_leaves(outs)
        return {n: o.detach().numpy() for n, o in zip(output_names, flat)}

    return TracedModel(
        name=name,
        source=source,
        source_kind="pytorch",
        source_digest=digest,
        signature=signature,
        onnx_model=model_proto,
        reference=reference,
        exported_program=program,
        samples=samples,
    )


def static_program(program: torch.export.ExportedProgram, signature: Signature) -> torch.export.ExportedProgram:
    """The program re-exported with every input at the (static) shape ``signature`` gives it."""
    specs = _user_input_specs(program)
    if all(isinstance(d, int) for _, val in specs for d in val.shape):
        return program
    tensors = {spec.name: torch.zeros(tuple(int(d) for d in spec.shape), dtype=val.dtype)
               for (_, val), spec in zip(specs, signature.inputs)}
    example = getattr(program, "example_inputs", None)
    if example and example[1]:
        return torch.export.export(program.module(), (), tensors)
    return torch.export.export(program.module(), tuple(tensors.values()))
