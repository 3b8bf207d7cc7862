"""Lower a torch program to a Core ML ML program (`.mlpackage`) and check the saved program's structure."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from compiler.backends import Lowered
from compiler.errors import BuildError, UnsupportedOpError
from targets.signature import Signature, TensorSpec
from targets.model import TracedModel
from targets.spec import TargetSpec

PACKAGE = "model.mlpackage"


def coremltools_module():
    # coremltools logs one error per missing macOS runtime proxy at import; they say nothing new here.
    logging.getLogger("coremltools").setLevel(logging.CRITICAL)
    import coremltools as ct

    return ct


def inspect_package(path: Path) -> dict[str, Any]:
    """What the saved package holds, read back from disk without loading the model."""
    ct = coremltools_module()
    spec = ct.utils.load_spec(str(path))
    if not spec.HasField("mlProgram"):
        raise BuildError(f"{path}: not an ML program (Core ML model type {spec.WhichOneof('Type')})")
    histogram: dict[str, int] = {}
    const_dtypes: set[str] = set()
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            for op in block.operations:
                histogram[op.type] = histogram.get(op.type, 0) + 1
                if op.type == "const":
                    for out in op.outputs:
                        if out.type.HasField("tensorType"):
                            const_dtypes.add(ct.proto.MIL_pb2.DataType.Name(out.type.tensorType.dataType))
    return {
        "format": "mlprogram",
        "specification_version": spec.specificationVersion,
        "inputs": [i.name for i in spec.description.input],
        "outputs": [o.name for o in spec.description.output],
        "op_histogram": dict(sorted(histogram.items())),
        "weight_dtypes": sorted(const_dtypes),
    }


def lower(model: TracedModel, target: TargetSpec, precision: str, workdir: Path, options: dict[str, Any]) -> Lowered:
    if model.exported_program is None:
        raise BuildError(
            f"backend coreml converts torch programs; {model.source} is {model.source_kind}. coremltools has no ONNX "
            "converter: give chipfit the PyTorch model (.pt2) for this target"
        )
    ct = coremltools_module()
    if precision == "int8" and model.graph_precision != "int8":
        raise BuildError("coreml lowers int8 from the PT2E-quantized torch program, but was given a float one")
    program = model.exported_program.run_decompositions({})
    signature = model.signature
    try:
        mlmodel = ct.convert(
            program,
            convert_to="mlprogram",
            minimum_deployment_target=getattr(ct.target, options["minimum_deployment_target"]),
            compute_units=ct.ComputeUnit[options["compute_units"]],
            compute_precision=ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16,
            outputs=[ct.TensorType(name=t.name) for t in signature.outputs],
        )
    except NotImplementedError as exc:
        # coremltools says e.g. "Unsupported fx node diff, kind diff" or "PyTorch convert function for op 'x' not implemented".
        found = re.search(r"Unsupported fx node (\S+), kind (\S+)", str(exc)) or re.search(r"op '([^']+)'", str(exc))
        node = found.group(1).rstrip(",") if found else "?"
        op = found.group(2) if found and found.lastindex == 2 else node
        raise UnsupportedOpError("coreml", op, node, "coremltools has no converter for it") from exc
    except Exception as exc:
        raise BuildError(f"coremltools could not convert {model.name}: {type(exc).__name__}: {exc}") from exc
    package = workdir / PACKAGE
    mlmodel.save(str(package))
    structure = inspect_package(package)
    expected_inputs = [t.name for t in signature.inputs]
    if structure["inputs"] != expected_inputs or len(structure["outputs"]) != len(signature.outputs):
        raise BuildError(
            f"{package}: the saved program takes {structure['inputs']} -> {structure['outputs']}, "
            f"the model {expected_inputs} -> {[t.name for t in signature.outputs]}"
        )
    if precision == "fp16" and "FLOAT16" not in structure["weight_dtypes"]:
        raise BuildError(f"{package}: fp16 was asked for but the program holds no fp16 weights")
    if precision == "int8" and not {"quantize", "constexpr_affine_dequantize"} <= set(structure["op_histogram"]):
        raise BuildError(f"{package}: int8 was asked for but the program holds no int8 weights and activations")
    files = tuple(sorted(str(p.relative_to(workdir)) for p in package.rglob("*") if p.is_file()))
    outputs = tuple(TensorSpec(name, t.shape, t.dtype) for name, t in zip(structure["outputs"], signature.outputs))
    return Lowered(
        files=files,
        signature=Signature(signature.inputs, outputs),
        options=dict(options),
        passes=tuple(model.passes) + ({"name": "coremltools.convert", "compute_precision": precision,
                                        "ops": structure["op_histogram"]},),
        notes=("Core ML packages embed generated identifiers (Manifest.json); two builds are not byte-identical",),
        structure=structure,
    )
