"""The precision stage of a build: the graph each cell's backend lowers, and the accuracy report.

For a target that runs int8, fp16 or int4, the float ONNX graph is rewritten once per distinct
setting (two targets asking for the same settings share the result), calibrated from cached
statistics, evaluated against the float reference on the evaluation samples, and, for quantized
graphs, ranked layer by layer: each layer quantized alone, its output SQNR measured, so a user
sees where accuracy goes. With an accuracy budget, the most sensitive layers are kept in float,
one at a time, until the graph is within the budget; if even that fails, the build says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import onnx

from calibration import CalibrationSet, compare_outputs
from calibration.readers import CalibrationError
from calibration.statistics import Ranges, collect_ranges, graph_digest
from compiler.arithmetic import EXECUTIONS, NATIVE, execution_for, run_as
from compiler.errors import QuantizeError, UsageError
from compiler.passes.graph import copy_model
from targets.backend import ProgramQuantizer
from compiler.passes.fusion import FUSIONS, FusionPass
from compiler.passes.quantize import (
    QuantSettings,
    layers,
    quantize_int4,
    quantize_int8,
    run_graph,
    to_fp16,
)

#: Layers ranked for sensitivity at most (largest first); each costs one quantization and one run.
MAX_SENSITIVITY_LAYERS = 24


@dataclass(frozen=True)
class EvalSet:
    """Inputs the quantized graph is judged on, with labels when the user gave them."""

    inputs: Mapping[str, np.ndarray]
    labels: np.ndarray | None
    origin: str


@dataclass(frozen=True)
class PreparedProgram:
    program: Any  # torch.export.ExportedProgram with quantize/dequantize ops
    passes: tuple[Mapping[str, Any], ...]
    report: Mapping[str, Any]


@dataclass(frozen=True)
class PreparedGraph:
    model: onnx.ModelProto
    passes: tuple[Mapping[str, Any], ...]
    report: Mapping[str, Any]


def _top1(outputs: Mapping[str, np.ndarray]) -> np.ndarray:
    first = next(iter(outputs.values()))
    return first.reshape(len(first), -1).argmax(axis=1) if first.ndim > 1 else first


@dataclass
class PrecisionStage:
    """One per build: memoizes prepared graphs by settings and calibration statistics on disk."""

    calibration: CalibrationSet | None
    evaluation: EvalSet
    reference: Mapping[str, np.ndarray]  # float outputs on evaluation.inputs
    cache_dir: Path
    accuracy_budget: float | None = None
    progress: Callable[[str], None] = lambda m: None
    #: this host's int8 arithmetic: a quantized graph is judged by what the *target* computes (`compiler.arithmetic`)
    host_arithmetic: str = ""
    _prepared: dict[tuple, Any] = field(default_factory=dict)
    #: graph digest of a bias-corrected float graph -> the same graph before the correction
    _uncorrected: dict[str, onnx.ModelProto] = field(default_factory=dict)
    #: graph digest -> its activation ranges, computed once per build (the pre-quantization trials reuse them)
    _range_memo: dict[tuple, Any] = field(default_factory=dict)

    # --- metrics -------------------------------------------------------------------------------

    def accuracy(self, outputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
        errors = compare_outputs(self.reference, outputs)
        report: dict[str, Any] = {
            "samples": int(len(next(iter(self.evaluation.inputs.values())))),
            "evaluated_on": self.evaluation.origin,
            "outputs": [e.to_dict() for e in errors],
            "agreement_with_float_pct": round(float((_top1(outputs) == _top1(self.reference)).mean() * 100), 2),
        }
        if self.evaluation.labels is not None:
            labels = self.evaluation.labels
            float_top1 = float((_top1(self.reference) == labels).mean() * 100)
            top1 = float((_top1(outputs) == labels).mean() * 100)
            report.update(top1_float_pct=round(float_top1, 2), top1_pct=round(top1, 2),
                          top1_drop_points=round(float_top1 - top1, 2))
        return report

    def drop(self, report: Mapping[str, Any]) -> float:
        """The budgeted figure: top-1 points lost (labelled) or top-1 disagreement with float, in %."""
        if "top1_drop_points" in report:
            return float(report["top1_drop_points"])
        return 100.0 - float(report["agreement_with_float_pct"])

    # --- passes --------------------------------------------------------------------------------

    def _ranges(self, float_model: onnx.ModelProto, settings: QuantSettings) -> Ranges:
        key = (graph_digest(float_model), settings.method, settings.symmetric_activations, settings.activation_dtype)
        if key not in self._range_memo:
            self._range_memo[key] = self._collect(float_model, settings)
        return self._range_memo[key]

    def _collect(self, float_model: onnx.ModelProto, settings: QuantSettings) -> Ranges:
        if self.calibration is None:
            raise UsageError("int8 needs calibration samples: pass --calibration PATH, or --calibration random")
        try:
            return collect_ranges(float_model, self.calibration, settings.method, self.cache_dir,
                                  symmetric=settings.symmetric_activations, activation_dtype=settings.activation_dtype)
        except CalibrationError as exc:
            raise UsageError(str(exc)) from exc

    def _rewrite(self, float_model: onnx.ModelProto, settings: QuantSettings, ranges: Ranges | None, exclude=(),
                 only=None) -> onnx.ModelProto:
        uncorrected = self._uncorrected.get(graph_digest(float_model))
        if uncorrected is not None and (exclude or only is not None):
            # a layer left in float must not keep a bias corrected for a rounding it does not get
            floating = list(exclude) if only is None else [n.name for n in layers(float_model) if n.name not in only]
            float_model = _restore_biases(float_model, uncorrected, floating)
        if settings.precision == "int8":
            return quantize_int8(float_model, settings, ranges, exclude, only)
        if settings.precision == "int4":
            return quantize_int4(float_model, settings, exclude, only)
        return to_fp16(float_model)

    def _sensitivity(self, float_model: onnx.ModelProto, settings: QuantSettings, ranges: Ranges | None) -> list[dict[str, Any]]:
        candidates = layers(float_model)
        if settings.precision == "int4":
            candidates = [n for n in candidates if n.op_type == "MatMul"]
        rows = []
        for node in candidates[:MAX_SENSITIVITY_LAYERS]:
            alone = self._rewrite(float_model, settings, ranges, only=[node.name])
            errors = compare_outputs(self.reference, self._run(alone, settings))
            worst = min((e.sqnr_db if e.sqnr_db is not None else 300.0) for e in errors)
            rows.append({"node": node.name, "op": node.op_type, "sqnr_db": round(worst, 2),
                         "cosine": round(min(e.cosine for e in errors), 6)})
        return sorted(rows, key=lambda r: r["sqnr_db"])

    def prepare(self, settings: QuantSettings, float_model: onnx.ModelProto) -> PreparedGraph:
        """``float_model`` at ``settings``; the same settings on the same graph are prepared once per build."""
        key = (settings, graph_digest(float_model))
        if key not in self._prepared:
            self._prepared[key] = self._prepare(settings, float_model)
        return self._prepared[key]

    def _pre_quantization(self, settings: QuantSettings, float_model: onnx.ModelProto
                          ) -> tuple[onnx.ModelProto, dict[str, Any]]:
        """Try the int8 pre-quantization passes the settings allow; keep the variant whose quantized graph has
        the best accuracy report (the smallest drop, then the highest SQNR; the plain graph on a tie)."""
        from compiler.passes.bias_correction import BiasCorrection, channel_statistics, layer_inputs
        from compiler.passes.equalize import CrossLayerEqualization, SmoothQuant
        from compiler.passes.pipeline import Numerics as ExactCheck
        from compiler.passes.pipeline import Timing, run_pipeline

        real_data = self.calibration is not None and not self.calibration.is_random
        samples = self.calibration.batched(limit=64) if real_data else None
        exact = [Timing(), ExactCheck(self.evaluation.inputs)]
        rewritten, records, names = float_model, [], []
        if settings.equalize:
            rewritten, done = run_pipeline(rewritten, [CrossLayerEqualization()], exact)
            if done[0]["fired"]:
                records += done
                names.append("cross_layer_equalization")
        if settings.smoothquant and real_data:
            norms = {n.output[0]: -1 for n in rewritten.graph.node if n.op_type == "LayerNormalization"}
            if norms:
                stats = channel_statistics(rewritten, samples, norms)
                rewritten, done = run_pipeline(rewritten, [SmoothQuant({k: v[1] for k, v in stats.items()})], exact)
                if done[0]["fired"]:
                    records += done
                    names.append("smoothquant")
        variants = [("none", float_model, [])]
        if names:
            variants.append(("+".join(names), rewritten, records))
        if settings.bias_correction and real_data:
            for name, graph, recs in list(variants):
                inputs = {value: axis for value, axis in layer_inputs(graph).values()}
                if not inputs:
                    continue
                stats = channel_statistics(graph, samples, inputs)
                corrected, done = run_pipeline(graph, [BiasCorrection({k: v[0] for k, v in stats.items()},
                                                                      settings.per_channel)], [Timing()])
                if done[0]["fired"]:
                    variants.append(((name + "+" if name != "none" else "") + "bias_correction", corrected,
                                     recs + done))
                    self._uncorrected[graph_digest(corrected)] = graph
        record: dict[str, Any] = {"tried": [], "chosen": "none"}
        if not real_data:
            record["note"] = "bias correction and SmoothQuant need real calibration samples; not tried"
        if len(variants) == 1:
            return float_model, record
        best = None
        for name, graph, recs in variants:
            self.progress(f"precision: trying int8 with {name.replace('+', ', ')}" if name != "none"
                          else "precision: trying plain int8")
            ranges = self._ranges(graph, settings)
            quantized = FusionPass(FUSIONS["qdq_cleanup"]).run(quantize_int8(graph, settings, ranges)).model
            accuracy = self.accuracy(self._run(quantized, settings))
            drop = self.drop(accuracy)
            sqnr = min((o["sqnr_db"] if o["sqnr_db"] is not None else 300.0) for o in accuracy["outputs"])
            record["tried"].append({"variant": name, "drop": round(drop, 4), "sqnr_db": round(sqnr, 2),
                                    "cosine": round(min(o["cosine"] for o in accuracy["outputs"]), 6)})
            rank = (round(drop, 6), -round(sqnr, 3))
            if best is None or rank < best[0]:
                best = (rank, name, graph, recs)
        _, name, graph, recs = best
        record.update(chosen=name, passes=[{k: v for k, v in r.items() if k != "seconds"} for r in recs],
                      rule="each variant quantized and evaluated; the smallest accuracy drop wins, then the "
                           "highest output SQNR; the plain graph on a tie")
        return graph, record

    def _run(self, graph: onnx.ModelProto, settings: QuantSettings) -> dict[str, np.ndarray]:
        """The evaluation inputs through ``graph`` computed as the target computes them."""
        if settings.precision != "int8" or not settings.arithmetic or not self.host_arithmetic:
            return run_graph(graph, self.evaluation.inputs)
        return run_as(graph, self.evaluation.inputs,
                      execution_for(graph, settings.arithmetic, self.host_arithmetic))

    def _choose_scheme(self, settings: QuantSettings, float_model: onnx.ModelProto
                       ) -> tuple[QuantSettings, dict[str, Any]]:
        """The target's int8 scheme: the default one where its ISA computes it exactly, else the most accurate
        of those it does (each quantized plainly and judged on the evaluation set by the target's arithmetic);
        the default scheme's error on the target is measured too, so the record says what was avoided."""
        record: dict[str, Any] = {"arithmetic": settings.arithmetic, "tried": []}
        if settings.scheme_note:
            record["note"] = settings.scheme_note
        if not settings.candidates:
            record.update(chosen=settings.scheme.name, rule="the target's default scheme, exact on its ISA"
                          if not settings.scheme_note.startswith("forced") else "forced by --int8-weights and --force")
            return settings, record
        best = None
        for scheme in settings.candidates:
            concrete = settings.with_scheme(scheme)
            self.progress(f"precision: trying the int8 scheme {scheme.name}")
            quantized = quantize_int8(float_model, concrete, self._ranges(float_model, concrete))
            accuracy = self.accuracy(self._run(quantized, concrete))
            row = _scheme_row(scheme.name, accuracy, self.drop(accuracy), "exact on the target")
            record["tried"].append(row)
            rank = (row["drop"], -row["sqnr_db"])
            if best is None or rank < best[0]:
                best = (rank, concrete)
        default = settings.with_scheme(type(settings.scheme)(settings.activation_dtype))
        quantized = quantize_int8(float_model, default, self._ranges(float_model, default))
        execution = execution_for(quantized, settings.arithmetic, self.host_arithmetic)
        accuracy = self.accuracy(self._run(quantized, default))
        record["refused"] = {**_scheme_row(default.scheme.name, accuracy, self.drop(accuracy),
                                           f"not exact on the target; measured {EXECUTIONS[execution]}"
                                           + (" (this host computes it as the target does)"
                                              if execution == NATIVE else "")),
                             "why": settings.scheme_note}
        chosen = best[1]
        record.update(chosen=chosen.scheme.name,
                      rule="schemes the target computes exactly, each quantized and judged on the evaluation set; "
                           "the smallest accuracy drop wins, then the highest SQNR; the first on a tie")
        return chosen, record

    def _prepare(self, settings: QuantSettings, float_model: onnx.ModelProto) -> PreparedGraph:
        pre = None
        scheme = None
        if settings.precision == "int8":
            settings, scheme = self._choose_scheme(settings, float_model)
        if settings.precision == "int8":
            float_model, pre = self._pre_quantization(settings, float_model)
        ranges = self._ranges(float_model, settings) if settings.precision == "int8" else None
        label = settings.precision + (f" ({settings.method})" if settings.method else "")
        self.progress(f"precision: rewriting the graph to {label}")
        graph = self._rewrite(float_model, settings, ranges)
        qdq_cleanup = 0
        if settings.precision == "int8":
            # Q/DQ placement clean-up: a doubled Q/DQ pair costs two requantizations on an NPU for nothing.
            cleaned = FusionPass(FUSIONS["qdq_cleanup"]).run(graph)
            graph, qdq_cleanup = cleaned.model, cleaned.details["fired"]
        report: dict[str, Any] = {"qdq_pairs_removed": qdq_cleanup, "settings": settings.to_dict(),
                                  "accuracy": self.accuracy(self._run(graph, settings))}
        if scheme is not None:
            report["scheme"] = scheme
        if pre is not None:
            report["pre_quantization"] = pre
        if ranges is not None:
            report["statistics"] = {"method": ranges.method, "cache": str(ranges.path), "from_cache": ranges.cached,
                                    "samples_from": self.calibration.origin, "random_data": self.calibration.is_random}
        if settings.precision in ("int8", "int4"):
            self.progress(f"precision: ranking layer sensitivity ({label})")
            report["sensitivity"] = self._sensitivity(float_model, settings, ranges)
            ranked = len(report["sensitivity"])
            total = len(layers(float_model))
            report["sensitivity_note"] = (
                f"each layer quantized alone, output SQNR vs float over {report['accuracy']['samples']} samples; "
                f"{ranked} of {total} layers ranked (largest first)"
            )
            report["kept_in_float"] = []
            if self.accuracy_budget is not None:
                graph = self._fit_budget(float_model, settings, ranges, graph, report)
        passes = ({"name": f"quantize-{settings.precision}", **settings.to_dict(),
                   "kept_in_float": report.get("kept_in_float", [])},)
        if pre and pre["chosen"] != "none":
            passes = ({"name": "pre-quantization", "chosen": pre["chosen"], "passes": pre["passes"]},) + passes
        return PreparedGraph(graph, passes, report)

    def prepare_program(self, settings: QuantSettings, traced, quantizer: ProgramQuantizer) -> PreparedProgram:
        """The (static) torch program of ``traced`` quantized with PT2E (``quantizer``: the backend's own), with its
        accuracy report."""
        from compiler.passes.quantize_torch import quantize_program, run_program, settings_record

        key = ("program", settings, quantizer.tool, traced.source_digest, traced.signature)
        if key not in self._prepared:
            if self.calibration is None:
                raise UsageError("int8 needs calibration samples: pass --calibration PATH, or --calibration random")
            names = [t.name for t in traced.signature.inputs]
            self.progress(f"precision: quantizing the torch program to int8 ({quantizer.tool}, {settings.method})")
            program = quantize_program(traced.exported_program, self.calibration, names, settings.method, quantizer)
            outputs = run_program(program, self.evaluation.inputs, names, [t.name for t in traced.signature.outputs])
            record = settings_record(settings.method, quantizer)
            report = {"settings": {**settings.to_dict(), **record},
                      "accuracy": self.accuracy(outputs),
                      "sensitivity_note": "per-layer sensitivity is ranked for ONNX-quantized graphs only"}
            passes = ({"name": "quantize-int8-pt2e", **settings.to_dict(), **record},)
            self._prepared[key] = PreparedProgram(program, passes, report)
        return self._prepared[key]

    def _fit_budget(self, float_model: onnx.ModelProto, settings: QuantSettings, ranges, graph: onnx.ModelProto,
                    report: dict) -> onnx.ModelProto:
        budget = self.accuracy_budget
        what = "top-1 points" if self.evaluation.labels is not None else "% top-1 disagreement with float"
        report["budget"] = {"limit": budget, "metric": what, "initial_drop": self.drop(report["accuracy"])}
        kept: list[str] = []
        for row in report["sensitivity"]:
            if self.drop(report["accuracy"]) <= budget:
                break
            kept.append(row["node"])
            self.progress(f"precision: over budget ({self.drop(report['accuracy']):.2f} > {budget} {what}); "
                          f"keeping {row['node']} in float")
            graph = self._rewrite(float_model, settings, ranges, exclude=kept)
            report["accuracy"] = self.accuracy(self._run(graph, settings))
        report["kept_in_float"] = kept
        final = self.drop(report["accuracy"])
        report["budget"]["final_drop"] = final
        if final > budget:
            raise QuantizeError(
                f"accuracy budget {budget} ({what}) cannot be met at {settings.precision}: with the "
                f"{len(kept)} most sensitive layers kept in float the loss is still {final:.2f}. Raise the budget, "
                "give more representative calibration samples, or try another --method"
            )
        return graph


def _scheme_row(name: str, accuracy: Mapping[str, Any], drop: float, how: str) -> dict[str, Any]:
    outputs = accuracy["outputs"]
    return {"scheme": name, "drop": round(drop, 4),
            "sqnr_db": round(min((o["sqnr_db"] if o["sqnr_db"] is not None else 300.0) for o in outputs), 2),
            "cosine": round(min(o["cosine"] for o in outputs), 6), "how": how}


def _restore_biases(model: onnx.ModelProto, uncorrected: onnx.ModelProto, nodes) -> onnx.ModelProto:
    """``model`` with the bias initializers of ``nodes`` (by name) taken from ``uncorrected``."""
    names = set(nodes)
    biases = {n.input[2] for n in model.graph.node if (n.name in names) and len(n.input) > 2}
    producers = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:  # a MatMul's bias is the Add after it
        if node.op_type == "Add" and any(producers.get(i) is not None and producers[i].name in names
                                         and producers[i].op_type == "MatMul" for i in node.input):
            biases.update(node.input)
    original = {t.name: t for t in uncorrected.graph.initializer if t.name in biases}
    if not original:
        return model
    restored = copy_model(model)
    for tensor in restored.graph.initializer:
        if tensor.name in original:
            tensor.CopyFrom(original[tensor.name])
    return restored
