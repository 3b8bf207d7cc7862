"""Options a target spec may set under ``[backend_options.executorch]``."""

from compiler.backends import OptionField, OptionSchema

SCHEMA = OptionSchema(
    "executorch",
    {
        "delegate": OptionField(
            str, choices=("xnnpack",), default="xnnpack",
            help="the delegate whose partitioner takes the graph; XNNPACK (Arm and x86 CPUs) ships with ExecuTorch, a "
                 "vendor's partitioner (Qualcomm QNN, MediaTek, Arm Ethos-U, Samsung) comes as a plugin backend"),
    },
)
