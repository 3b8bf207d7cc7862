"""Lower the float ONNX graph to an OpenVINO IR (`model.xml` + `model.bin`) and its runtime configuration.

`ov.convert_model` reads the graph; the precision is made here, with OpenVINO's own tools: fp32 keeps f32
weights (`save_model` would otherwise compress them to fp16), fp16 stores f16 weights (`compress_to_fp16`), int8
is quantized by NNCF (`nncf.quantize`: FakeQuantize ops that the CPU, GPU and NPU plugins run as int8 kernels)
from the calibration samples the build hands over. Where the target's device is not the CPU, the IR is compiled
for that device when this machine has it, and the manifest says why not when it has not.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import onnx

from compiler.backends import BuildData, Lowered
from compiler.errors import BuildError, QuantizeError, UnsupportedOpError
from targets.model import TracedModel
from targets.spec import TargetSpec

IR, WEIGHTS, CONFIG = "model.xml", "model.bin", "ov_config.json"
#: ops whose presence makes NNCF's transformer scheme the right one (it keeps softmax/norm inputs in float)
_TRANSFORMER_OPS = {"Softmax", "LayerNormalization"}
_NO_CONVERTER = re.compile(r"No conversion rule found for operations?:\s*([\w.,\s-]+)")


def _unsupported(exc: Exception, model: onnx.ModelProto) -> UnsupportedOpError | None:
    match = _NO_CONVERTER.search(str(exc))
    if not match:
        return None
    op = match.group(1).split(",")[0].strip().split(".")[-1].split("-")[0]
    node = next((n.name or n.output[0] for n in model.graph.node if n.op_type == op), "?")
    return UnsupportedOpError("openvino", op, node, "OpenVINO's ONNX frontend has no conversion rule")


_AUTO_NAME = re.compile(r"^([A-Z][A-Za-z0-9]*)_\d+$")


def stable_names(ov_model, taken: frozenset[str] = frozenset()) -> int:
    """Renumber the names OpenVINO makes up (``Constant_2425``) in graph order, leaving those in ``taken`` (the
    source's own); returns how many were renamed.

    Found by a determinism check: those numbers come from a process-wide counter, so a second conversion in the
    same process writes another model.xml (in a fresh process it is byte-identical). Names taken from the ONNX
    graph are kept; the application binds inputs and outputs by tensor names, which this does not touch.
    """
    renamed, counter = 0, Counter()
    for op in ov_model.get_ordered_ops():
        name = op.get_friendly_name()
        match = _AUTO_NAME.match(name)
        if not match or name in taken or op.get_type_name() in ("Parameter", "Result"):
            continue
        prefix = match.group(1)
        while f"{prefix}_{counter[prefix]}" in taken:
            counter[prefix] += 1
        op.set_friendly_name(f"{prefix}_{counter[prefix]}")
        counter[prefix] += 1
        renamed += 1
    return renamed


def _histogram(ov_model) -> dict[str, int]:
    ops = Counter(op.get_type_name() for op in ov_model.get_ordered_ops())
    return dict(sorted((k, v) for k, v in ops.items() if k not in ("Parameter", "Result", "Constant")))


def _quantize(ov_model, model: TracedModel, target: TargetSpec, options: dict[str, Any], data: BuildData
              ) -> tuple[Any, dict]:
    """int8 with NNCF's post-training quantization, from the build's calibration samples."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    if not data.calibration:
        raise QuantizeError("openvino quantizes int8 with NNCF from calibration samples, and none were handed over: "
                            "pass --calibration PATH, or --calibration random")
    names = [t.name for t in model.signature.inputs]
    samples = [{name: sample[name] for name in names} for sample in data.calibration]
    q = target.quantization
    symmetric = bool(q and q.symmetric_activations)
    # PERFORMANCE: symmetric int8 activations and weights; MIXED: asymmetric activations (what a ReLU-free net wants)
    preset = nncf.QuantizationPreset.PERFORMANCE if symmetric else nncf.QuantizationPreset.MIXED
    transformer = any(n.op_type in _TRANSFORMER_OPS for n in model.onnx_model.graph.node)
    subset = min(options["calibration_subset"], len(samples))
    ranges = getattr(RangeEstimatorParametersSet, options["activation_ranges"].upper())
    correction = options["bias_correction"]
    logging.getLogger("nncf").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            quantized = nncf.quantize(ov_model, nncf.Dataset(samples), preset=preset, subset_size=subset,
                                      model_type=nncf.ModelType.TRANSFORMER if transformer else None,
                                      fast_bias_correction=correction == "fast",
                                      advanced_parameters=AdvancedQuantizationParameters(
                                          activations_range_estimator_params=ranges,
                                          disable_bias_correction=correction == "none"))
    except Exception as exc:
        raise QuantizeError(f"NNCF could not quantize {model.name}: {type(exc).__name__}: {exc}") from exc
    record = {"name": "nncf.quantize", "nncf": nncf.__version__, "preset": preset.value, "subset_size": subset,
              "samples_from": data.calibration_origin, "random_data": data.calibration_random,
              "model_type": "transformer" if transformer else "default",
              "activation_ranges": options["activation_ranges"], "bias_correction": correction,
              "note": "NNCF's own range estimators (backend option activation_ranges); chipfit's --method does not "
                      "apply"}
    return quantized, record


def _device_check(ov_model, device: str, config: dict[str, Any]) -> dict[str, Any]:
    """Compile the IR for its device where this machine has one; otherwise say why it was not checked."""
    import openvino as ov

    core = ov.Core()
    available = list(core.available_devices)
    if device == "CPU":
        return {"device": "CPU", "checked": True, "how": "verified on the CPU plugin (the build's own run)"}
    if not any(d.split(".")[0] == device for d in available):
        return {"device": device, "checked": False,
                "reason": f"no {device} on this build machine (OpenVINO sees {', '.join(available) or 'no device'}); "
                          f"the {device} plugin compiles the IR when the application loads it there"}
    try:
        core.compile_model(ov_model, device, config)
    except Exception as exc:
        raise BuildError(f"OpenVINO's {device} plugin could not compile the IR: {type(exc).__name__}: "
                         f"{str(exc)[:500]}") from exc
    return {"device": device, "checked": True, "how": f"compiled by the {device} plugin on this machine"}


def lower(model: TracedModel, target: TargetSpec, precision: str, workdir: Path, options: dict[str, Any],
          data: BuildData) -> Lowered:
    import openvino as ov

    if model.graph_precision != "fp32":
        raise BuildError(f"openvino lowers the float graph and makes {precision} itself, but was given a "
                         f"{model.graph_precision} one")
    if options["static_shapes"]:
        from compiler.frontend import concretize

        model = concretize(model)
    # The converter records the source's name (as DIR/model.onnx) in the IR: a fixed name keeps the IR's bytes
    # the same whatever the staging directory.
    source = workdir / "model.onnx"
    onnx.save(model.onnx_model, source)
    try:
        ov_model = ov.convert_model(str(source))
    except Exception as exc:
        raise _unsupported(exc, model.onnx_model) or BuildError(
            f"OpenVINO could not convert {model.name}: {type(exc).__name__}: {str(exc)[:500]}") from exc
    finally:
        source.unlink(missing_ok=True)
    passes = tuple(model.passes) + ({"name": "openvino.convert_model", "source": "onnx"},)
    notes: list[str] = []
    if precision == "int8":
        ov_model, record = _quantize(ov_model, model, target, options, data)
        passes += (record,)
    graph = model.onnx_model.graph
    stable_names(ov_model, frozenset({n.name for n in graph.node}
                                     | {v for n in graph.node for v in (*n.input, *n.output)}))
    compress = precision == "fp16"
    ov.save_model(ov_model, str(workdir / IR), compress_to_fp16=compress)
    passes += ({"name": "openvino.save_model", "compress_to_fp16": compress},)
    if compress:
        notes.append("fp16: weights stored as f16 (save_model compress_to_fp16); a device whose default precision "
                     "is f16 (NPU, GPU) computes in f16; the CPU plugin decompresses them and was asked for f32, so "
                     "verification here checks the f16 weights, not f16 arithmetic")
    device, config = options["device"], dict(options["config"])
    check = _device_check(ov_model, device, config)
    if not check["checked"]:
        notes.append(f"{device} compile not checked: {check['reason']}")
    runtime = {"device": device, "config": config, "model": IR, "weights": WEIGHTS, "precision": precision,
               "openvino_version": ov.get_version()}
    (workdir / CONFIG).write_text(json.dumps(runtime, indent=2, sort_keys=True) + "\n")
    ops = _histogram(ov_model)
    structure = {"format": "openvino_ir", "device": device, "weights": {"fp32": "f32", "fp16": "f16"}.get(precision, "int8"),
                 "fake_quantize_ops": ops.get("FakeQuantize", 0), "ops": ops, "device_compile": check}
    if precision == "int8" and not structure["fake_quantize_ops"]:
        raise QuantizeError(f"NNCF inserted no quantizers into {model.name}: the int8 IR would run in float")
    return Lowered(files=(IR, WEIGHTS, CONFIG), signature=model.signature, options=dict(options), passes=passes,
                   notes=tuple(notes), structure=structure)
