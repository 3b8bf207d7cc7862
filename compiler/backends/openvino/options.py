"""Options a target spec may set under ``[backend_options.openvino]``."""

from compiler.backends import OptionField, OptionSchema

SCHEMA = OptionSchema(
    "openvino",
    {
        # The OpenVINO device the IR is meant for: an application passes it to `Core.compile_model`. The IR is the
        # same for every device; each device's plugin compiles it when the application loads it.
        "device": OptionField(str, choices=("CPU", "GPU", "NPU"), default="CPU"),
        # Properties an application passes with the device (written to ov_config.json), e.g.
        # {INFERENCE_PRECISION_HINT = "f32"}: on CPUs with AVX-512 BF16 or AMX the plugin's default is bf16.
        "config": OptionField(dict, default={}),
        # Bind symbolic dims to 1 in the IR: the NPU plugin compiles static shapes only.
        "static_shapes": OptionField(bool, default=False),
        # NNCF (int8): the most calibration samples it uses (its `subset_size`).
        "calibration_subset": OptionField(int, default=300),
        # NNCF (int8): how activation ranges are taken from the samples. NNCF's default for the CPU (a mean of
        # per-sample ranges) clips: the example net lost 12 dB SQNR to it (23 vs 35 dB with plain min/max).
        "activation_ranges": OptionField(str, choices=("minmax", "mean_minmax", "mean_quantile"), default="minmax"),
        # NNCF (int8): bias correction after quantization. Its "fast" default took a trained digits net from cosine
        # 0.99996 ("full": layer by layer, on the calibration samples) to 0.971; "none" gave 0.9992.
        "bias_correction": OptionField(str, choices=("full", "fast", "none"), default="full"),
    },
)
