"""Precision passes on the ONNX graph: int8 QDQ, int4 weight-only, fp16.

The rewrites are ONNX Runtime's (`quantize_static` in QDQ form, `MatMulNBitsQuantizer`,
`convert_float_to_float16`); chipfit owns the settings, derives them from what the target
declares, and refuses a request the target cannot honour instead of building something else.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import onnx

from calibration.statistics import Ranges
from targets.request import QuantizationRequest
from compiler.errors import QuantizeError, UsageError
from compiler.passes.graph import copy_model
from targets.isa import Int8Scheme, exact_on, exact_schemes
from targets.signature import run_batched
from targets.spec import TargetSpec

_QUANT_TYPE = {"uint8": "QUInt8", "int8": "QInt8", "uint16": "QUInt16", "int16": "QInt16"}
#: Ops whose weights make them a "layer" for sensitivity and the accuracy budget.
LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class QuantSettings:
    precision: str
    method: str = ""
    activation_dtype: str = ""
    weight_dtype: str = ""
    per_channel: bool = False
    symmetric_activations: bool = False
    block_size: int = 0
    #: int8 pre-quantization passes to try (each kept only where the quantized graph's accuracy improves)
    equalize: bool = False
    bias_correction: bool = False
    smoothquant: bool = False
    #: 7-bit weights (ONNX Runtime's reduce_range): exact on x86 without VNNI
    reduce_range: bool = False
    #: the target's int8 arithmetic (`targets.isa.ARITHMETIC`): what verification and the accuracy report compute
    arithmetic: str = ""
    #: int8 schemes exact on the target to choose among by measured accuracy (the precision stage picks one)
    candidates: tuple[Int8Scheme, ...] = ()
    #: why the target's default scheme was not used, or the warning of a forced inexact one
    scheme_note: str = ""

    @property
    def scheme(self) -> Int8Scheme:
        return Int8Scheme(self.activation_dtype, self.weight_dtype or "int8", self.reduce_range)

    def with_scheme(self, scheme: Int8Scheme) -> "QuantSettings":
        return replace(self, activation_dtype=scheme.activation_dtype, weight_dtype=scheme.weight_dtype,
                       reduce_range=scheme.reduce_range, candidates=())

    def to_dict(self) -> dict:
        data = {k: v for k, v in asdict(self).items()
                if v not in ("", 0, False, ()) and k not in ("candidates", "scheme_note")}
        if self.precision == "int8":
            data["per_channel"] = self.per_channel
        return data


#: --int8-weights choices -> (weight dtype, 7-bit)
INT8_WEIGHTS = {"int8": ("int8", False), "int8-7bit": ("int8", True), "uint8": ("uint8", False)}


def settings_for(target: TargetSpec, precision: str, request: QuantizationRequest, force: bool = False
                 ) -> QuantSettings:
    """The pass settings for ``target``; a request the target cannot honour is a `UsageError`.

    The int8 scheme follows the target's ISA (`target.isa`), never the build host's: where the target's
    arithmetic would not compute the default scheme exactly, the schemes that it computes exactly become
    candidates, and the precision stage keeps the most accurate."""
    where = f"target {target.id} ({target.source_file})"
    if precision not in target.precisions:
        raise UsageError(f"{where} runs {', '.join(target.precisions)}, not {precision} (supports.precisions)")
    if precision in ("fp32", "fp16"):
        return QuantSettings(precision=precision)
    q = target.quantization
    assert q is not None  # the spec loader requires it for quantized precisions
    if precision == "int4":
        block = request.block_size or q.int4_block_sizes[0]
        if block not in q.int4_block_sizes:
            raise UsageError(f"{where} runs int4 blocks of {list(q.int4_block_sizes)}, not {block} (quantization.int4_block_sizes)")
        return QuantSettings(precision="int4", weight_dtype="int4", block_size=block)
    activation = request.activation_dtype or q.activation_dtypes[0]
    if activation not in q.activation_dtypes:
        raise UsageError(
            f"{where} runs {'/'.join(q.activation_dtypes)} activations, not {activation} (quantization.activation_dtypes)"
        )
    arithmetic = target.isa.int8_arithmetic
    note = ""
    if request.int8_weights == "auto":
        candidates = exact_schemes([activation], arithmetic)
        default = Int8Scheme(activation)
        if default not in candidates:
            note = (f"{exact_on(default, arithmetic)[1]}; target {target.id} declares {target.isa.label} "
                    f"({target.source_file}: isa), so only schemes it computes exactly are built")
    else:
        weight, seven = INT8_WEIGHTS[request.int8_weights]
        candidates = [Int8Scheme(activation, weight, seven)]
        exact, why = exact_on(candidates[0], arithmetic)
        if not exact:
            if not force:
                raise UsageError(
                    f"--int8-weights {request.int8_weights} with {activation} activations: {where} declares "
                    f"{target.isa.label}, which cannot compute it exactly ({why}). Leave --int8-weights at auto "
                    "(chipfit builds a scheme the chip computes exactly), or add --force to build it anyway "
                    "(verification then runs the target's arithmetic)")
            note = f"forced (--force) although {target.id} does not compute it exactly: {why}"
    return QuantSettings(
        precision="int8",
        method=request.method,
        activation_dtype=candidates[0].activation_dtype,
        weight_dtype=candidates[0].weight_dtype,
        reduce_range=candidates[0].reduce_range,
        arithmetic=arithmetic,
        candidates=tuple(candidates) if len(candidates) > 1 else (),
        scheme_note=note,
        per_channel=q.per_channel,
        symmetric_activations=q.symmetric_activations,
        equalize=request.equalize,
        bias_correction=request.bias_correction,
        smoothquant=request.smoothquant,
    )


@contextlib.contextmanager
def _quiet():
    """onnxruntime's quantization tools print progress and warn about pre-processing on every call."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def layers(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Nodes with weights (Conv, Gemm, MatMul with an initializer input), largest first."""
    sizes = {t.name: int(np.prod(t.dims)) for t in model.graph.initializer}
    found = [n for n in model.graph.node if n.op_type in LAYER_OPS and any(i in sizes for i in n.input)]
    return sorted(found, key=lambda n: -sum(sizes.get(i, 0) for i in n.input))


def quantize_int8(
    model: onnx.ModelProto,
    settings: QuantSettings,
    ranges: Ranges,
    exclude: Iterable[str] = (),
    only: Sequence[str] | None = None,
) -> onnx.ModelProto:
    """Static int8 QDQ quantization from precomputed ``ranges``; ``exclude`` nodes stay float, and so does every
    node reading or writing an unbounded tensor (an attention mask: `unbounded_tensors`)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from calibration.statistics import unbounded_tensors

    masks = unbounded_tensors(ranges)
    exclude = list(exclude) + [n.name for n in model.graph.node
                               if n.name and masks.intersection([*n.input, *n.output])]

    extra = {"ActivationSymmetric": settings.symmetric_activations, "WeightSymmetric": True}
    if settings.activation_dtype in ("uint16", "int16"):
        extra["UseQDQContribOps"] = True  # 16-bit Q/DQ lives in the com.microsoft domain before opset 21
    with tempfile.TemporaryDirectory(prefix="chipfit-int8-") as tmp, _quiet():
        out = Path(tmp) / "int8.onnx"
        try:
            quantize_static(
                copy_model(model),
                str(out),
                None,
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType[_QUANT_TYPE[settings.activation_dtype]],
                weight_type=QuantType[_QUANT_TYPE[settings.weight_dtype]],
                per_channel=settings.per_channel,
                reduce_range=settings.reduce_range,
                calibrate_method=CalibrationMethod[ranges.ort_method],
                calibration_cache_path=str(ranges.path),
                nodes_to_exclude=list(exclude),
                nodes_to_quantize=list(only) if only is not None else None,
                extra_options=extra,
            )
        except Exception as exc:
            raise QuantizeError(f"int8 quantization failed (onnxruntime quantize_static): {type(exc).__name__}: {exc}") from exc
        return onnx.load(str(out))


def quantize_int4(
    model: onnx.ModelProto, settings: QuantSettings, exclude: Iterable[str] = (), only: Sequence[str] | None = None
) -> onnx.ModelProto:
    """Block-wise symmetric int4 weights for MatMul (MatMulNBits); activations stay float."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    with _quiet():
        quantizer = MatMulNBitsQuantizer(
            copy_model(model),  # it rewrites the ModelProto it is given in place
            bits=4,
            block_size=settings.block_size,
            is_symmetric=True,
            nodes_to_exclude=list(exclude),
            nodes_to_include=list(only) if only is not None else None,
        )
        try:
            quantizer.process()
        except Exception as exc:
            raise QuantizeError(f"int4 weight-only quantization failed (MatMulNBitsQuantizer): {exc}") from exc
    result = quantizer.model.model
    if not any(n.op_type == "MatMulNBits" for n in result.graph.node) and only is None:
        raise UsageError(
            "int4 weight-only quantization found no MatMul with constant weights to quantize (it suits "
            "transformer and MLP models; use int8 for convolutional nets)"
        )
    return result


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Weights and compute in fp16; inputs and outputs stay fp32 so callers do not change."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(copy_model(model), keep_io_types=True)


def run_graph(model: onnx.ModelProto, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run an ONNX graph on ONNX Runtime's CPU provider, in chunks when its batch is static."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    first = session.get_inputs()[0].shape[0] if session.get_inputs()[0].shape else None

    def run(chunk: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(names, {i.name: chunk[i.name] for i in session.get_inputs()})))

    return run_batched(run, inputs, first if isinstance(first, int) and first > 0 else None)
