"""Lower a torch program to an ExecuTorch program (`model.pte`) with the XNNPACK delegate.

The exported program goes through `to_edge_transform_and_lower` with XNNPACK's partitioner: the
subgraphs XNNPACK takes become delegate calls (compiled XNNPACK graphs inside the `.pte`), whatever it
does not take stays as ExecuTorch's portable kernels and is listed as a fallback. An int8 program is the
one PT2E quantized with XNNPACK's own quantizer (`compiler.passes.quantize_torch`), so every quantized
op maps onto an XNNPACK int8 kernel.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from compiler.backends import Lowered
from compiler.errors import BuildError
from targets.model import TracedModel
from targets.spec import TargetSpec

PROGRAM = "model.pte"


def _ops(graph_module) -> tuple[int, Counter]:
    """(delegate calls, op histogram of what stayed outside them) of a lowered edge program's graph."""
    delegated, outside = 0, Counter()
    for node in graph_module.graph.nodes:
        if node.op != "call_function":
            continue
        name = getattr(node.target, "__name__", str(node.target))
        if name == "executorch_call_delegate":
            delegated += 1
        elif name != "getitem":
            outside[name.split(".")[0].removeprefix("aten_")] += 1
    return delegated, outside


def lower(model: TracedModel, target: TargetSpec, precision: str, workdir: Path, options: dict[str, Any]) -> Lowered:
    if model.exported_program is None:
        raise BuildError(
            f"backend executorch lowers torch programs; {model.source} is {model.source_kind}: give chipfit the "
            "PyTorch model (.pt2) for this target"
        )
    if precision == "int8" and model.graph_precision != "int8":
        raise BuildError("executorch lowers int8 from the PT2E-quantized torch program, but was given a float one")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    logging.getLogger("executorch").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            edge = to_edge_transform_and_lower(model.exported_program, partitioner=[XnnpackPartitioner()])
            delegated, outside = _ops(edge.exported_program().graph_module)
            program = edge.to_executorch()
    except Exception as exc:
        raise BuildError(f"ExecuTorch could not lower {model.name}: {type(exc).__name__}: {exc}") from exc
    if delegated == 0:
        raise BuildError(f"XNNPACK took no part of {model.name}: every op would run on ExecuTorch's portable "
                         "kernels; this backend is not worth shipping for it")
    (workdir / PROGRAM).write_bytes(program.buffer)
    structure = {"format": "executorch", "delegate": options["delegate"], "delegate_calls": delegated,
                 "portable_ops": dict(sorted(outside.items()))}
    return Lowered(
        files=(PROGRAM,),
        signature=model.signature,
        options=dict(options),
        passes=tuple(model.passes) + ({"name": "executorch.to_edge_transform_and_lower", "partitioner": "XnnpackPartitioner",
                                        "delegate_calls": delegated},),
        structure=structure,
        fallbacks=tuple(f"{op} x{n} (portable kernels)" for op, n in sorted(outside.items())),
    )
