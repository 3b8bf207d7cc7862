"""ExecuTorch's PT2E quantizer for the torch program: XNNPACK's own, whose annotations are exactly the patterns
XNNPACK's int8 kernels take (symmetric per-channel int8 weights, asymmetric int8 activations)."""

from __future__ import annotations

from dataclasses import replace

from compiler.backends import ProgramQuantizer
from compiler.passes.quantize_torch import activation_observer


def xnnpack_quantizer(method: str) -> ProgramQuantizer:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)

    config = get_symmetric_quantization_config(is_per_channel=True)
    activation = replace(config.input_activation, observer_or_fake_quant_ctr=activation_observer(method))
    config = replace(config, input_activation=activation, output_activation=activation)
    return ProgramQuantizer(XNNPACKQuantizer().set_global(config), "torchao PT2E (ExecuTorch XNNPACKQuantizer)")
