"""int8 quantization of the torch program, for backends that consume it (Core ML, ExecuTorch).

PyTorch's PT2E flow from torchao: a quantizer annotates the exported program, observers record
ranges over the calibration samples, and `convert_pt2e` leaves quantize/dequantize ops that the
backend turns into int8 kernels. The backend names its quantizer (`Backend.program_quantizer`):

* ``arm_inductor``: coremltools' own PT2E `CoreMLQuantizer` does not import with torch 2.13 (it wants
  `torch.ao.quantization.quantizer`), so Core ML gets torchao's ArmInductorQuantizer configuration
  (int8 activations, symmetric per-channel int8 weights), which is what the Neural Engine's int8 path takes;
* ``xnnpack``: ExecuTorch's XNNPACKQuantizer (symmetric per-channel int8 weights, asymmetric int8
  activations), whose annotations are exactly the patterns XNNPACK's int8 kernels take.

Method names map onto PT2E observers:
``minmax`` -> MinMaxObserver, ``mse`` -> HistogramObserver (it minimises the L2 quantization
error); ``percentile`` and ``entropy`` have no PT2E observer and are refused.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import replace
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from compiler.errors import BuildError, UsageError

TORCH_METHODS = ("minmax", "mse")


QUANTIZERS = ("arm_inductor", "xnnpack")


def _quantizer(method: str, kind: str = "arm_inductor"):
    if kind == "xnnpack":
        return _xnnpack_quantizer(method)
    if kind != "arm_inductor":
        raise BuildError(f"no PT2E quantizer {kind!r} (chipfit has {', '.join(QUANTIZERS)})")
    from torchao.quantization.pt2e.observer import HistogramObserver, MinMaxObserver, PerChannelMinMaxObserver
    from torchao.quantization.pt2e.quantizer.arm_inductor_quantizer import (
        ArmInductorQuantizer,
        get_default_arm_inductor_quantization_config,
    )

    config = get_default_arm_inductor_quantization_config()
    observer = MinMaxObserver if method == "minmax" else HistogramObserver
    activation = replace(config.input_activation, observer_or_fake_quant_ctr=observer.with_args(eps=2**-12))
    weight = replace(config.weight, qscheme=torch.per_channel_symmetric, ch_axis=0,
                     observer_or_fake_quant_ctr=PerChannelMinMaxObserver.with_args(eps=2**-12))
    config = replace(config, input_activation=activation, output_activation=activation, weight=weight)
    return ArmInductorQuantizer().set_global(config)


def _xnnpack_quantizer(method: str):
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)
    from torchao.quantization.pt2e.observer import HistogramObserver, MinMaxObserver

    config = get_symmetric_quantization_config(is_per_channel=True)
    observer = (MinMaxObserver if method == "minmax" else HistogramObserver).with_args(eps=2**-12)
    activation = replace(config.input_activation, observer_or_fake_quant_ctr=observer)
    config = replace(config, input_activation=activation, output_activation=activation)
    return XNNPACKQuantizer().set_global(config)


def quantize_program(program: torch.export.ExportedProgram, samples: Iterable[Mapping[str, np.ndarray]],
                     input_names: list[str], method: str, quantizer: str = "arm_inductor"
                     ) -> torch.export.ExportedProgram:
    """The program with int8 quantize/dequantize ops, observers calibrated on ``samples``."""
    if method not in TORCH_METHODS:
        raise UsageError(
            f"--method {method}: PyTorch's PT2E observers (used for torch-program backends such as Core ML) offer "
            f"{', '.join(TORCH_METHODS)}; {method} is only available for ONNX-consuming backends"
        )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    logging.getLogger("torchao").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            prepared = prepare_pt2e(program.module(), _quantizer(method, quantizer))
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


def settings_record(method: str, quantizer: str = "arm_inductor") -> dict[str, Any]:
    tool = "torchao PT2E (ArmInductorQuantizer config)" if quantizer == "arm_inductor" else \
        "torchao PT2E (ExecuTorch XNNPACKQuantizer)"
    return {"tool": tool, "observer": "MinMaxObserver" if method == "minmax" else "HistogramObserver",
            "weights": "int8 symmetric per-channel", "activations": "int8 per-tensor"}
