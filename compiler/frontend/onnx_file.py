"""ONNX front end: a checked, shape-inferred ONNX file to a `TracedModel`.

The file is read without its external data first so that a path leaving the
model's folder is refused before anything is opened. The float reference is
ONNX Runtime with every graph optimization off.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import external_data_helper

from compiler.errors import UsageError
from targets.signature import Signature, TensorSpec, apply_overrides, dim_bindings
from targets.model import TracedModel


def _dtype_name(elem_type: int) -> str:
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name
    except (KeyError, TypeError, ValueError):
        return onnx.TensorProto.DataType.Name(elem_type).lower()


def _tensor_spec(value: onnx.ValueInfoProto) -> TensorSpec:
    tensor_type = value.type.tensor_type
    shape: list[int | str] = []
    for i, dim in enumerate(tensor_type.shape.dim):
        if dim.HasField("dim_value"):
            shape.append(int(dim.dim_value))
        else:
            shape.append(dim.dim_param or f"{value.name}_dim{i}")
    return TensorSpec(value.name, tuple(shape), _dtype_name(tensor_type.elem_type))


def signature_from_onnx(model: onnx.ModelProto) -> Signature:
    initializers = {t.name for t in model.graph.initializer}
    inputs = tuple(_tensor_spec(v) for v in model.graph.input if v.name not in initializers)
    outputs = tuple(_tensor_spec(v) for v in model.graph.output)
    return Signature(inputs, outputs)


def fix_dims(model: onnx.ModelProto, sizes: Mapping[str, int | str]) -> onnx.ModelProto:
    """Bind (int) or rename (str) symbolic dims everywhere in the graph's types, in place."""
    if not sizes:
        return model
    values = list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info)
    for value in values:
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and dim.dim_param in sizes:
                new = sizes[dim.dim_param]
                if isinstance(new, int):
                    dim.dim_value = new
                else:
                    dim.dim_param = new
    return model


def _check_external_data(model: onnx.ModelProto, path: Path) -> list[Path]:
    folder = path.parent.resolve()
    files: list[Path] = []
    for tensor in external_data_helper._get_all_tensors(model):
        if not external_data_helper.uses_external_data(tensor):
            continue
        info = external_data_helper.ExternalDataInfo(tensor)
        location = Path(info.location)
        target = (folder / location).resolve()
        if location.is_absolute() or folder not in target.parents:
            raise UsageError(
                f"{path}: initializer {tensor.name!r} points at external data {info.location!r}, outside the "
                f"model's folder {folder}; refusing to read it. Keep external data files beside the model."
            )
        if not target.is_file():
            raise UsageError(f"{path}: external data file {info.location!r} for {tensor.name!r} is missing")
        if target not in files:
            files.append(target)
    return files


def load_onnx(path: Path, overrides: Iterable[TensorSpec] = ()) -> TracedModel:
    raw = path.read_bytes()
    if not raw:
        raise UsageError(f"{path}: the file is empty")
    try:
        model = onnx.load_from_string(raw)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise UsageError(f"{path}: not a valid ONNX model (truncated or corrupt?): {exc}") from exc
    if not model.graph.node and not model.graph.output:
        raise UsageError(f"{path}: not a valid ONNX model (no graph: truncated or not ONNX?)")
    digest = hashlib.sha256(raw)
    for data_file in _check_external_data(model, path):
        digest.update(data_file.read_bytes())
    external_data_helper.load_external_data_for_model(model, str(path.parent))
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise UsageError(f"{path}: the ONNX checker rejects the model: {str(exc).strip()}") from exc
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except onnx.shape_inference.InferenceError as exc:
        raise UsageError(f"{path}: shape inference fails: {str(exc).strip()}") from exc
    signature = signature_from_onnx(model)
    signature = apply_overrides(signature, overrides, str(path))
    if overrides:
        fix_dims(model, dim_bindings(signature_from_onnx(model), signature))
        model = onnx.shape_inference.infer_shapes(model)
    return TracedModel(
        name=path.stem,
        source=str(path),
        source_kind="onnx",
        source_digest=digest.hexdigest(),
        signature=signature,
        onnx_model=model,
        reference=onnx_reference(model),
    )


def onnx_reference(model: onnx.ModelProto):
    """Float reference outputs from ONNX Runtime with all graph optimizations disabled."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = None

    def reference(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        nonlocal session
        if session is None:
            session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        feeds = {i.name: inputs[i.name] for i in session.get_inputs()}
        return dict(zip(names, session.run(names, feeds)))

    return reference
