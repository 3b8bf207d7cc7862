"""The RKNN backend: chipfit's side of it. rknn-toolkit2 itself runs only in `sdk_main.py`, in its own environment.

rknn-toolkit2 2.5.0 pins onnx<=1.18 (it uses ``onnx.mapping``), protobuf<=4.25.4, setuptools<81 and, on paper,
torch<=2.4 and numpy<=1.26.4: it cannot share chipfit's environment. It ran, as measured on chipfit's build
machine, with the pins below and the local torch 2.13 CPU wheel (pip reports its own pins as conflicts).
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import version_converter

from compiler.backends import BACKEND_API_VERSION, OptionField, OptionSchema
from compiler.isolated import Environment, IsolatedBackend, isolated_capabilities

#: what `chipfit toolchain install rknn` makes (a virtual environment from registry wheels)
ENVIRONMENT = Environment(
    name="rknn",
    torch="2.13.0",  # rknn-toolkit2 imports torch at import time; the local CPU wheel (PyPI's 2.4 is 5.5 GB of CUDA)
    requirements=("onnx==1.18.0", "protobuf==4.25.4", "setuptools==80.10.2", "numpy==2.4.6", "onnxruntime==1.26.0",
                  "scipy==1.17.1", "psutil==7.2.2", "ruamel.yaml==0.19.1", "tqdm==4.70.1",
                  "opencv-python-headless==5.0.0.93", "fast-histogram==0.14"),
    no_deps=("rknn-toolkit2==2.5.0",),  # its declared torch<=2.4 / numpy<=1.26.4 would pull a CUDA torch
    check="from rknn.api import RKNN",
    reported=("rknn-toolkit2", "onnx", "onnxruntime", "numpy", "protobuf", "torch"),
)

SCHEMA = OptionSchema("rknn", {
    "target_platform": OptionField(str, required=True, choices=("rk3588", "rk3576", "rk3568", "rk3566", "rk3562"),
                                   help="the chip rknn-toolkit2 compiles for (`RKNN.config(target_platform=...)`)"),
    "optimization_level": OptionField(int, choices=(0, 1, 2, 3), default=3,
                                      help="rknn-toolkit2's graph optimization level"),
    "quantized_algorithm": OptionField(str, choices=("normal", "mmse", "kl_divergence"), default="normal",
                                       help="how RKNN's own quantizer picks int8 ranges from chipfit's calibration "
                                            "samples"),
})

#: rknn-toolkit2 2.5.0's ONNX importer refuses opsets above 19 ("Unsupport onnx opset 20, need <= 19")
MAX_OPSET = 19
#: onnx 1.18 (the environment's) reads IR versions up to 11; chipfit's onnx writes newer
MAX_IR_VERSION = 9


class RknnBackend(IsolatedBackend):
    name = "rknn"
    api_version = BACKEND_API_VERSION
    options_schema = SCHEMA
    # without quantization RKNN builds fp16; int8 with its own quantizer, from chipfit's calibration samples
    capabilities = isolated_capabilities(precisions=("fp16", "int8"), calibrated_precisions=("int8",),
                                         compute_unit="npu")
    environment = ENVIRONMENT
    sdk_script = Path(__file__).resolve().parent / "sdk_main.py"
    calibration_layout = "NCHW"  # RKNN's dataset list takes NCHW .npy arrays as the ONNX graph does
    timeout_s = 600.0
    runner_description = ("Rockchip's RKNN simulator on x86 (rknn-toolkit2 init_runtime() with no target), "
                          "run in the SDK session that built the model")
    proxy_note = ("proxy: Rockchip's simulator checks numerics, not NPU speed; latency and energy are estimated "
                  "from the target's spec")
    artifact_normalizers = {
        "model.rknn": (None, "rknn-toolkit2 2.5.0 writes uninitialised memory (heap addresses) into the .rknn's "
                             "command buffer: about 1 kB of the example's 76 kB differs between two builds of the "
                             "same input; the graph, calibration and simulator outputs in sdk/ stand for it"),
    }

    def prepare_graph(self, model: onnx.ModelProto) -> onnx.ModelProto:
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), MAX_OPSET)
        if opset > MAX_OPSET:
            model = version_converter.convert_version(model, MAX_OPSET)
        if model.ir_version > MAX_IR_VERSION:
            model = onnx.ModelProto.FromString(model.SerializeToString())
            model.ir_version = MAX_IR_VERSION
        return model


backend = RknnBackend()
