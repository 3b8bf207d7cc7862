"""Options a target spec may set under ``[backend_options.coreml]``."""

from compiler.backends import OptionField, OptionSchema

SCHEMA = OptionSchema(
    "coreml",
    {
        "compute_units": OptionField(str, choices=("ALL", "CPU_AND_NE", "CPU_AND_GPU", "CPU_ONLY"), default="ALL",
                                     help="coremltools.ComputeUnit member: where Core ML may schedule the model"),
        "minimum_deployment_target": OptionField(
            str, choices=("iOS16", "iOS17", "iOS18", "macOS13", "macOS14", "macOS15"), default="iOS17",
            help="coremltools.target member: the oldest OS the package must load on"),
    },
)
