"""Precision passes on the ONNX graph: fp16 conversion and int8 QDQ quantization.

Both use the well-kept implementations in ONNX Runtime's tooling; chipfit owns
the settings and records them. Calibration samples come from `calibration/`.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import onnx

from calibration import CalibrationSet
from compiler.errors import BuildError, UsageError


@dataclass(frozen=True)
class PrecisionResult:
    model: onnx.ModelProto
    settings: Mapping[str, object]


def to_fp16(model: onnx.ModelProto) -> PrecisionResult:
    """Weights and compute in fp16, inputs and outputs kept fp32 so callers do not change."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    converted = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    return PrecisionResult(converted, {"precision": "fp16", "tool": "onnxruntime.transformers.float16", "keep_io_types": True})


@dataclass(frozen=True)
class Int8Settings:
    activation_type: str = "QUInt8"
    weight_type: str = "QInt8"
    per_channel: bool = True
    calibrate_method: str = "MinMax"
    quant_format: str = "QDQ"


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over a `CalibrationSet`."""

    def __init__(self, samples: CalibrationSet, input_names: list[str]) -> None:
        self._iter: Iterator[Mapping[str, np.ndarray]] = iter(samples)
        self._names = input_names

    def get_next(self) -> dict[str, np.ndarray] | None:
        sample = next(self._iter, None)
        return None if sample is None else {n: sample[n] for n in self._names}

    def rewind(self) -> None:  # part of the protocol; a fresh reader is made per run
        pass


def to_int8_qdq(model: onnx.ModelProto, samples: CalibrationSet, settings: Int8Settings = Int8Settings()) -> PrecisionResult:
    """Static int8 quantization in QDQ form, calibrated on ``samples``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not len(samples):
        raise BuildError("int8 quantization needs at least one calibration sample")
    initializers = {t.name for t in model.graph.initializer}
    input_names = [i.name for i in model.graph.input if i.name not in initializers]
    with tempfile.TemporaryDirectory(prefix="chipfit-int8-") as tmp:
        src, pre, out = Path(tmp, "float.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
        onnx.save(model, src)
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception:
            pre = src  # pre-processing is an optimisation; quantization works without it
        try:
            quantize_static(
                str(pre),
                str(out),
                _Reader(samples, input_names),
                quant_format=QuantFormat[settings.quant_format],
                activation_type=QuantType[settings.activation_type],
                weight_type=QuantType[settings.weight_type],
                per_channel=settings.per_channel,
                calibrate_method=CalibrationMethod[settings.calibrate_method],
            )
        except Exception as exc:
            raise BuildError(f"int8 quantization failed (onnxruntime.quantization.quantize_static): {exc}") from exc
        quantized = onnx.load(str(out))
    record = {"precision": "int8", "tool": "onnxruntime.quantization.quantize_static", **asdict(settings)}
    record["calibration"] = {"origin": samples.origin, "digest": samples.digest, "samples": len(samples), "random": samples.is_random}
    return PrecisionResult(quantized, record)


def apply_precision(
    model: onnx.ModelProto, precision: str, calibration: CalibrationSet | None, target_id: str
) -> tuple[onnx.ModelProto, tuple[dict, ...]]:
    """The ONNX graph at ``precision`` and the record of the pass that made it (none for fp32)."""
    if precision == "fp32":
        return model, ()
    if precision == "fp16":
        result = to_fp16(model)
    elif precision == "int8":
        if calibration is None:
            raise UsageError(
                f"target {target_id} builds int8, which needs calibration samples: pass --calibration PATH "
                "(a .npz keyed by input name, or a folder of .npy/.npz files), or --calibration random to accept "
                "ranges from random data"
            )
        result = to_int8_qdq(model, calibration)
    else:
        raise UsageError(f"precision {precision!r} is not one of fp32, fp16, int8")
    return result.model, (dict(result.settings),)
