"""Options a target spec may set under ``[backend_options.qnn]``."""

from compiler.backends import OptionField, OptionSchema

PERFORMANCE_MODES = ("burst", "balanced", "default", "high_performance", "high_power_saver", "low_balanced",
                     "low_power_saver", "power_saver", "extreme_power_saver", "sustained_high_performance")

SCHEMA = OptionSchema(
    "qnn",
    {
        "soc_model": OptionField(int, required=True,
                                 help="QNN's number for the SoC the context binary is compiled for, e.g. 57 (SM8650, "
                                      "Snapdragon 8 Gen 3); `chipfit targets show` lists the known ones"),
        "htp_arch": OptionField(int, required=True,
                                help="the SoC's Hexagon tensor processor generation, e.g. 75 (checked against "
                                     "soc_model)"),
        "htp_performance_mode": OptionField(
            str, choices=PERFORMANCE_MODES, default="burst",
            help="the HTP's power/clock vote an application passes with the provider (written to qnn_config.json)"),
        "vtcm_mb": OptionField(int, default=0,
                               help="tightly coupled memory (MB) the graph may use; 0: the SoC's default"),
        "offload_io_quantization": OptionField(
            bool, default=True,
            help="quantize the graph's inputs and dequantize its outputs on the CPU, so that the application feeds "
                 "and reads float tensors (QNN's default); false: the HTP graph takes the quantized tensors"),
    },
)
