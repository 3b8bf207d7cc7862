"""Options a target spec may set under ``[backend_options.tvm]``."""

from compiler.backends import OptionField, OptionSchema

SCHEMA = OptionSchema(
    "tvm",
    {
        # A TVM target as a JSON-style table, e.g. { kind = "llvm", mcpu = "cortex-a76", mtriple = "aarch64-linux-gnu" }.
        "target": OptionField(dict, required=True),
        # Compiler driver used to link the shared library; needed when cross-compiling.
        "cross_compiler": OptionField(str, default=""),
        # Relax pipeline applied before tvm.compile ("zero" fuses and legalizes; tvm.compile alone does not fuse on CPU).
        "pipeline": OptionField(str, choices=("zero", "default"), default="zero"),
    },
)
