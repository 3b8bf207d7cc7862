"""Options a target spec may set under ``[backend_options.llamacpp]``."""

from compiler.backends import OptionField, OptionSchema

#: the GGUF types chipfit writes per precision (llama.cpp's names); int4's is chosen by ``int4_type``
FIXED_TYPES = {"fp32": "F32", "fp16": "F16", "int8": "Q8_0"}
#: int4 types llama.cpp's CPU backend runs (Q4_0 is repacked at load for the CPU's int8 dot products)
INT4_TYPES = ("Q4_K_M", "Q4_0", "Q4_1", "Q4_K_S", "IQ4_NL")

SCHEMA = OptionSchema(
    "llamacpp",
    {
        "int4_type": OptionField(
            str, choices=INT4_TYPES, default="Q4_K_M",
            help="the GGUF type of an int4 artifact: Q4_K_M (k-quant super-blocks of 256, some tensors at Q6_K, "
                 "tensors whose rows are not a multiple of 256 at Q5_0, as llama.cpp's quantizer falls back: the "
                 "closest to the float model, the default because it passes the int4 verification bar where Q4_0 may "
                 "not), Q4_0 (blocks of 32, one fp16 scale: llama.cpp's fastest int4 on CPUs), Q4_1, Q4_K_S, IQ4_NL; "
                 "the manifest records each tensor's type"),
        "device": OptionField(
            str, choices=("cpu", "metal", "vulkan", "opencl"), default="cpu",
            help="the llama.cpp backend an app runs the file with on the target (the GGUF is the same file); here "
                 "it runs on the CPU backend, whose speed stands for the target's only where this is cpu"),
        "threads": OptionField(int, default=0, help="threads llama.cpp runs on (0: the target's cores, at most "
                                                    "this machine's)"),
    },
)
