"""Core ML's PT2E quantizer for the torch program (int8 W8A8, what the Neural Engine's int8 path takes).

coremltools' own PT2E `CoreMLQuantizer` does not import with torch 2.13 (it wants
`torch.ao.quantization.quantizer`), so Core ML gets torchao's ArmInductorQuantizer configuration: int8
activations, symmetric per-channel int8 weights.
"""

from __future__ import annotations

from dataclasses import replace

from compiler.backends import ProgramQuantizer
from compiler.passes.quantize_torch import OBSERVER_EPS, activation_observer


def neural_engine_quantizer(method: str) -> ProgramQuantizer:
    import torch
    from torchao.quantization.pt2e.observer import PerChannelMinMaxObserver
    from torchao.quantization.pt2e.quantizer.arm_inductor_quantizer import (
        ArmInductorQuantizer,
        get_default_arm_inductor_quantization_config,
    )

    config = get_default_arm_inductor_quantization_config()
    activation = replace(config.input_activation, observer_or_fake_quant_ctr=activation_observer(method))
    weight = replace(config.weight, qscheme=torch.per_channel_symmetric, ch_axis=0,
                     observer_or_fake_quant_ctr=PerChannelMinMaxObserver.with_args(eps=OBSERVER_EPS))
    config = replace(config, input_activation=activation, output_activation=activation, weight=weight)
    return ProgramQuantizer(ArmInductorQuantizer().set_global(config), "torchao PT2E (ArmInductorQuantizer config)")
