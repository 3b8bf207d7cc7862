"""Options a target spec may set under ``[backend_options.openvino]``."""

from compiler.backends import OptionField, OptionSchema

SCHEMA = OptionSchema(
    "openvino",
    {
        "device": OptionField(
            str, choices=("CPU", "GPU", "NPU"), default="CPU",
            help="the OpenVINO device the IR is meant for (an application passes it to Core.compile_model); the IR is "
                 "the same for every device, each device's plugin compiles it when the application loads it"),
        "config": OptionField(
            dict, default={},
            help="properties an application passes with the device (written to ov_config.json), e.g. "
                 "{INFERENCE_PRECISION_HINT = \"f32\"}: on CPUs with AVX-512 BF16 or AMX the plugin's default is bf16"),
        "static_shapes": OptionField(bool, default=False,
                                     help="bind symbolic dims to 1 in the IR: the NPU plugin compiles static shapes only"),
        "calibration_subset": OptionField(int, default=300,
                                          help="NNCF (int8): the most calibration samples it uses (its subset_size)"),
        # NNCF's default for the CPU (a mean of per-sample ranges) clips: the example net lost 12 dB SQNR to it
        # (23 vs 35 dB with plain min/max).
        "activation_ranges": OptionField(
            str, choices=("minmax", "mean_minmax", "mean_quantile"), default="minmax",
            help="NNCF (int8): how activation ranges are taken from the samples (min/max keeps outliers unclipped)"),
        # Its "fast" default took a trained digits net from cosine 0.99996 ("full") to 0.971; "none" gave 0.9992.
        "bias_correction": OptionField(
            str, choices=("full", "fast", "none"), default="full",
            help="NNCF (int8): bias correction after quantization; \"full\" corrects layer by layer on the "
                 "calibration samples"),
    },
)
