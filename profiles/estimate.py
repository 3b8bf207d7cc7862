"""The analytic latency and energy model for targets that cannot be measured (and as a check on those that can).

Per node of the artifact's graph (operations and bytes from `compiler.passes.cost`, at batch 1):

    time   = max(ops / (peak[dtype] x efficiency), bytes / bandwidth) + overhead per op
    energy = idle power x time + ops x energy per op[dtype] x node scale + bytes x DRAM energy per byte

Peak, bandwidth, power and process node come from the target's spec; per-op energies from
Horowitz (45 nm), scaled by sqrt(node / 45) (see ``data/energy_ops.toml``). What is unknown in
the spec is left out and listed, never guessed; every figure carries ``estimated:roofline-v1``.
"""

from __future__ import annotations

import math
import statistics
import tomllib
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any, Mapping, Sequence

from targets.cost import GraphCost

MODEL_NAME = "roofline-v1"
#: Used when nothing on this machine was measured to fit it; labelled as such.
DEFAULT_EFFICIENCY = 0.3
OVERHEAD_US_PER_OP = 2.0


def energy_table() -> dict[str, Any]:
    return tomllib.loads(resources.files("profiles").joinpath("data", "energy_ops.toml").read_text())


def _known(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


@dataclass(frozen=True)
class Estimate:
    latency_ms: float | None
    energy_mj: float | None
    method: str
    efficiency: float
    efficiency_source: str
    inputs: Mapping[str, Any]
    missing: tuple[str, ...] = ()
    assumptions: tuple[str, ...] = ()
    compute_bound_nodes: int = 0
    memory_bound_nodes: int = 0
    overhead_ms: float = 0.0  # the per-op overhead part of latency_ms (not scaled by efficiency)
    compute_unit: str = ""  # the spec's unit whose peaks and power were used; "" for the chip as a whole

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate(cost: GraphCost, figures: Mapping[str, Any], efficiency: float = DEFAULT_EFFICIENCY,
             efficiency_source: str = "default (no measurement to fit)", overhead_us: float = OVERHEAD_US_PER_OP) -> Estimate:
    peaks = {k: v for k, v in dict(figures.get("peak_gops", {})).items() if _known(v)}
    bandwidth = figures.get("memory_bandwidth_gbs")
    power = figures.get("power_w")
    node_nm = figures.get("process_nm")
    missing: list[str] = []
    assumptions: list[str] = []
    if not _known(bandwidth):
        missing.append("memory_bandwidth_gbs: memory-bound time left out (latency is a lower bound)")
    table = energy_table()
    horowitz = table["horowitz_45nm"]
    if _known(node_nm):
        scale = math.sqrt(float(node_nm) / horowitz["node_nm"])
    else:
        scale = 1.0
        missing.append("process_nm: 45 nm per-op energies used unscaled (energy is an upper bound)")

    def peak_for(dtype: str) -> float | None:
        if dtype in peaks:
            return float(peaks[dtype])
        for other in ("int8", "fp16", "fp32"):
            if other in peaks:
                note = f"{dtype} ops timed at the {other} peak ({dtype} peak unknown)"
                if note not in assumptions:
                    assumptions.append(note)
                return float(peaks[other])
        return None

    total_s = 0.0
    compute_bound = memory_bound = 0
    op_energy_pj = 0.0
    unknown_peak = False
    for node in cost.nodes:
        dtype = node.compute_dtype
        peak = peak_for(dtype)
        if peak is None:
            unknown_peak = True
            continue
        compute_s = node.ops / (peak * 1e9 * efficiency)
        memory_s = node.bytes / (float(bandwidth) * 1e9) if _known(bandwidth) else 0.0
        compute_bound += compute_s >= memory_s
        memory_bound += memory_s > compute_s
        total_s += max(compute_s, memory_s) + overhead_us * 1e-6
        prefix = {"int8": "int8", "fp16": "fp16"}.get(dtype, "fp32")
        per_op = (horowitz[f"{prefix}_mult_pj"] + horowitz[f"{prefix}_add_pj"]) / 2
        op_energy_pj += node.ops * per_op * scale
    latency_ms = None if unknown_peak else total_s * 1e3
    if unknown_peak:
        missing.append("peak_gops: no peak throughput known for this target; latency cannot be estimated")
    dram_pj_per_byte = horowitz["dram_pj_per_byte"][0]
    assumptions.append(f"every byte moved comes from DRAM at {dram_pj_per_byte} pJ/B (no cache reuse: upper bound)")
    energy_j = op_energy_pj * 1e-12 + cost.total_bytes * dram_pj_per_byte * 1e-12
    if _known(power) and latency_ms is not None:
        energy_j += float(power) * latency_ms * 1e-3
        assumptions.append(f"static power taken as the spec's power_w ({power} W) over the estimated time")
    else:
        missing.append("power_w: static/idle power term left out")
    return Estimate(
        latency_ms=latency_ms,
        energy_mj=energy_j * 1e3,
        method=f"estimated:{MODEL_NAME}",
        efficiency=efficiency,
        efficiency_source=efficiency_source,
        inputs={"peak_gops": peaks, "memory_bandwidth_gbs": bandwidth, "power_w": power, "process_nm": node_nm,
                "energy_node_scale": round(scale, 4), "overhead_us_per_op": overhead_us,
                "total_ops": cost.total_ops, "total_bytes": cost.total_bytes, "nodes": len(cost.nodes)},
        missing=tuple(missing),
        assumptions=tuple(assumptions),
        compute_bound_nodes=int(compute_bound),
        memory_bound_nodes=int(memory_bound),
        overhead_ms=len(cost.nodes) * overhead_us * 1e-3,
    )


@dataclass(frozen=True)
class EfficiencyFit:
    efficiency: float
    points: int
    max_rel_error: float  # of the fitted model against the measurements it was fitted on (in-sample)
    source: str
    #: worst relative error predicting each measurement from a fit on the others; None below 3 points,
    #: where it cannot say anything (an in-sample error of one point is 0 by construction)
    loo_error: float | None = None
    #: the per-op overhead as a share of OVERHEAD_US_PER_OP: below 1 for a runtime that fuses ops into fewer
    #: kernels than the graph has nodes (ONNX Runtime at its default level), so a measured latency below the
    #: nominal overhead still fits
    overhead_scale: float = 1.0


def fit_efficiency(points: Sequence[tuple[float, float, float]]) -> EfficiencyFit | None:
    """Fit one efficiency from (roofline time at efficiency 1, overhead time, measured latency) points.

    The model's latency is roofline / efficiency + overhead, so each point gives
    roofline / (measured - overhead); the median is the fit, and its error the worst relative miss. Where a
    measurement is below the nominal overhead, the overhead is scaled down until it is at most half of every
    measurement (the runtime runs fewer kernels than the graph has nodes).
    """
    positive = [(r, o, m) for r, o, m in points if r > 0 and m > 0]
    if not positive:
        return None
    scale = round(min([1.0] + [0.5 * m / o for _, o, m in positive if o > 0 and m <= o]), 4)
    usable = [(r, o * scale, m) for r, o, m in positive]
    eff = statistics.median(r / (m - o) for r, o, m in usable)
    errors = [abs(r / eff + o - m) / m for r, o, m in usable]
    loo = None
    if len(usable) >= 3:
        held_out = []
        for i, (r, o, m) in enumerate(usable):
            others = statistics.median(r2 / (m2 - o2) for j, (r2, o2, m2) in enumerate(usable) if j != i)
            held_out.append(abs(r / others + o - m) / m)
        loo = max(held_out)
    source = f"fitted on {len(usable)} measurement(s) on this host" + (
        f", per-op overhead x{scale:.2g}" if scale < 1 else "")
    return EfficiencyFit(eff, len(usable), max(errors), source, loo, scale)
