"""ONNX Runtime's QNN quantization recipe (`get_qnn_qdq_config`) on a float graph and the build's samples: the QDQ
graph QNN compiles. The decoder's w8a16 programs and the graphs' w4a16 both go through here."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from compiler.backends.qnn import ep


def qnn_qdq(float_path: Path, out: Path, samples: Sequence[Mapping[str, np.ndarray]], activation: str,
            weights: str, **recipe: Any) -> None:
    """``float_path`` quantized into ``out`` (activations ``activation``, weights ``weights``: uint8, int4, ...),
    ranges from min/max over ``samples``; ``recipe``: further `get_qnn_qdq_config` arguments."""
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize
    from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config

    types = {"uint8": QuantType.QUInt8, "uint16": QuantType.QUInt16, "int8": QuantType.QInt8,
             "int16": QuantType.QInt16, "int4": QuantType.QInt4}

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._samples = iter(samples)

        def get_next(self):
            return next(self._samples, None)

    config = get_qnn_qdq_config(str(float_path), Reader(), activation_type=types[activation],
                                weight_type=types[weights], **recipe)
    with ep.quantizer_quiet():
        quantize(str(float_path), str(out), config)
