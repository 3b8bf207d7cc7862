"""The fusion stage of a build: each cell's graph fused as its target declares, checked, recorded.

The pipeline for a cell is data: the target spec's ``[fusion] rules``, minus the rules whose
output the cell's backend cannot lower (and, for quantized cells, minus the ones producing
contrib ops, which ONNX Runtime's quantizer would then leave in float). Instruments time each
pass, count ops before and after, dump graphs on request, and check numerics after every pass
that changed the graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import onnx

from calibration.statistics import graph_digest
from compiler.passes.fusion import FUSIONS, fusion_passes
from compiler.passes.pipeline import Dump, Numerics, OpCounts, Timing, op_histogram, run_pipeline

QUANTIZED = ("int8", "int4")


@dataclass(frozen=True)
class FusionOptions:
    enabled: bool = True
    explain: bool = False
    dump_after: tuple[str, ...] = ()  # pass names
    dump_all: Path | None = None


@dataclass
class FusionStage:
    inputs: Mapping[str, np.ndarray]  # for the numerics check
    options: FusionOptions
    dump_root: Path
    progress: Callable[[str], None] = lambda m: None
    _done: dict[tuple[str, tuple[str, ...]], tuple[onnx.ModelProto, dict[str, Any]]] = field(default_factory=dict)

    def run(self, model: onnx.ModelProto, rules: tuple[str, ...], domains: tuple[str, ...], precision: str,
            where: str, label: str) -> tuple[onnx.ModelProto, dict[str, Any]]:
        accepted = () if precision in QUANTIZED else domains
        passes, skipped = fusion_passes(list(rules), accepted, where, self.options.explain)
        if precision in QUANTIZED:
            for s in skipped:
                if any(d in domains for d in FUSIONS[s["name"]].domains):
                    s["reason"] = "produces contrib ops, which the int8/int4 quantizer would leave in float"
        key = (graph_digest(model), tuple(p.name for p in passes))
        if key not in self._done:
            instruments: list = [Timing(), OpCounts()]
            if self.options.dump_all is not None:
                instruments.append(Dump(self.options.dump_all / label))
            elif self.options.dump_after:
                instruments.append(Dump(self.dump_root / label, frozenset(self.options.dump_after)))
            instruments.append(Numerics(self.inputs))
            self.progress(f"fusion: {', '.join(p.name for p in passes)}")
            fused, records = run_pipeline(model, passes, instruments)
            self._done[key] = (fused, {"passes": records, "op_histogram_before": op_histogram(model),
                                       "op_histogram_after": op_histogram(fused)})
        fused, report = self._done[key]
        return fused, {**report, "skipped": skipped, "declared": list(rules)}


def fusion_summary(report: Mapping[str, Any]) -> str:
    if "passes" not in report:
        return f"not applied: {report.get('reason', '')}"
    if report.get("dropped"):
        return f"dropped: {report['dropped']}"
    fired = [f"{p['name']} x{p['fired']}" for p in report["passes"] if p.get("fired")]
    before = sum(report["op_histogram_before"].values())
    after = sum(report["op_histogram_after"].values())
    text = (", ".join(fired) or "nothing fused") + f" ({before} -> {after} nodes)"
    rolled = [p["name"] for p in report["passes"] if p.get("rolled_back")]
    if rolled:
        text += "; rolled back (the rewritten graph did not load) " + ", ".join(rolled)
    if report.get("skipped"):
        text += "; skipped " + ", ".join(s["name"] for s in report["skipped"])
    return text
