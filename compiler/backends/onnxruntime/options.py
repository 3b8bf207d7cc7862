"""Options a target spec may set under ``[backend_options.onnxruntime]``."""

from compiler.backends import OptionField, OptionSchema

LEVELS = ("disabled", "basic", "extended", "all")

SCHEMA = OptionSchema(
    "onnxruntime",
    {
        # The execution provider the artifact is meant for, e.g. CPUExecutionProvider,
        # QNNExecutionProvider, OpenVINOExecutionProvider, CoreMLExecutionProvider.
        "execution_provider": OptionField(str, required=True),
        "provider_options": OptionField(dict, default={}),
        # Offline graph optimization baked into the artifact. Above "basic" the rewrites
        # produce CPU-provider-specific fused ops, so other providers want "basic".
        "graph_optimization": OptionField(str, choices=LEVELS, default="basic"),
        # Also write the .ort format (smaller, faster to load; for ONNX Runtime Mobile).
        "ort_format": OptionField(bool, default=False),
        # Decoder LMs: also write static-shape programs (prefill chunk + decode over a fixed-size cache), the form
        # NPU providers (QNN, OpenVINO NPU) compile, beside the ONNX Runtime GenAI folder.
        "static_decoder": OptionField(bool, default=False),
    },
)
