"""Options a target spec may set under ``[backend_options.onnxruntime]``."""

from compiler.backends import OptionField, OptionSchema

LEVELS = ("disabled", "basic", "extended", "all")

#: int4 decoder weights: the builder's own round to nearest and k-quant search (data-free), and NNCF's
#: activation-aware scaling with scale estimation on the build's calibration prompts (data-aware)
DECODER_WEIGHT_METHODS = ("rtn", "k_quant", "awq+scale_estimation")

SCHEMA = OptionSchema(
    "onnxruntime",
    {
        "execution_provider": OptionField(
            str, required=True,
            help="the execution provider the artifact is meant for, e.g. CPUExecutionProvider, QNNExecutionProvider, "
                 "OpenVINOExecutionProvider, CoreMLExecutionProvider"),
        "provider_options": OptionField(dict, default={}, help="options handed to that provider (e.g. QNN's backend_path)"),
        "graph_optimization": OptionField(
            str, choices=LEVELS, default="basic",
            help="offline graph optimization baked into the artifact; above \"basic\" the rewrites make "
                 "CPU-provider-specific fused ops, so other providers want \"basic\""),
        "ort_format": OptionField(bool, default=False,
                                  help="also write the .ort format (smaller, faster to load; for ONNX Runtime Mobile)"),
        "static_decoder": OptionField(
            bool, default=False,
            help="decoder LMs: also write static-shape programs (prefill chunk + decode over a fixed-size cache), the "
                 "form NPU providers (QNN, OpenVINO NPU) compile, beside the ONNX Runtime GenAI folder"),
    },
)
