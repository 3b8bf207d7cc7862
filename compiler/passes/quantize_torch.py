"""int8 quantization of the torch program, for backends that consume it (Core ML, ExecuTorch).

PyTorch's PT2E flow from torchao: a quantizer annotates the exported program, observers record
ranges over the calibration samples, and `convert_pt2e` leaves quantize/dequantize ops that the
backend turns into int8 kernels. The quantizer is the backend's own (`ProgramQuantizing`, in the
backend's folder), so every int8 pattern it annotates is one the backend's kernels take.

Method names map onto PT2E observers:
``minmax`` -> MinMaxObserver, ``mse`` -> HistogramObserver (it minimises the L2 quantization
error); ``percentile`` and ``entropy`` have no PT2E observer and are refused.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from compiler.errors import BuildError, UsageError
from targets.backend import ProgramQuantizer

TORCH_METHODS = ("minmax", "mse")


#: the smallest scale an observer gives (a constant input would otherwise get a zero scale)
OBSERVER_EPS = 2**-12


def activation_observer(method: str):
    """The PT2E observer (constructor) for an int8 calibration method: ``minmax`` -> MinMaxObserver, ``mse`` ->
    HistogramObserver (it minimises the L2 quantization error)."""
    if method not in TORCH_METHODS:
        raise UsageError(f"--method {method}: PyTorch's PT2E observers offer {', '.join(TORCH_METHODS)}")
    from torchao.quantization.pt2e.observer import HistogramObserver, MinMaxObserver

    return (MinMaxObserver if method == "minmax" else HistogramObserver).with_args(eps=OBSERVER_EPS)


def quantize_program(program: torch.export.ExportedProgram, samples: Iterable[Mapping[str, np.ndarray]],
                     input_names: list[str], method: str, quantizer: ProgramQuantizer
                     ) -> torch.export.ExportedProgram:
    """The program with int8 quantize/dequantize ops placed by the backend's ``quantizer``, observers calibrated
    on ``samples``."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    logging.getLogger("torchao").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            prepared = prepare_pt2e(program.module(), quantizer.quantizer)
            example = getattr(program, "example_inputs", None)
            by_keyword = bool(example and example[1])
            for sample in samples:
                tensors = {n: torch.from_numpy(np.ascontiguousarray(sample[n])) for n in input_names}
                prepared(**tensors) if by_keyword else prepared(*tensors.values())
            converted = convert_pt2e(prepared)
            args, kwargs = program.example_inputs
            return torch.export.export(converted, args, kwargs)
        except UsageError:
            raise
        except Exception as exc:
            raise BuildError(f"PT2E int8 quantization of the torch program failed: {type(exc).__name__}: {exc}") from exc


def run_program(program: torch.export.ExportedProgram, inputs: Mapping[str, np.ndarray], input_names: list[str],
                output_names: list[str]) -> dict[str, np.ndarray]:
    """Run a (static-batch) program over ``inputs`` one sample batch at a time."""
    module = program.module()
    example = getattr(program, "example_inputs", None)
    by_keyword = bool(example and example[1])
    batch = int(example[0][0].shape[0]) if example and example[0] else 1
    n = len(next(iter(inputs.values())))
    chunks: list[list[np.ndarray]] = []
    with torch.no_grad():
        for i in range(0, n, batch):
            tensors = {k: torch.from_numpy(np.ascontiguousarray(inputs[k][i : i + batch])) for k in input_names}
            out = module(**tensors) if by_keyword else module(*tensors.values())
            chunks.append([o.detach().numpy() for o in torch.utils._pytree.tree_leaves(out)])
    return {name: np.concatenate([c[j] for c in chunks]) for j, name in enumerate(output_names)}


def settings_record(method: str, quantizer: ProgramQuantizer) -> dict[str, Any]:
    return {"tool": quantizer.tool, "observer": "MinMaxObserver" if method == "minmax" else "HistogramObserver",
            "weights": quantizer.weights, "activations": quantizer.activations}
