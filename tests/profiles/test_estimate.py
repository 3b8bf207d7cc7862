import pytest

from compiler.passes.cost import GraphCost, NodeCost
from profiles.estimate import estimate, fit_efficiency

COST = GraphCost((NodeCost("conv", "Conv", ops=2_000_000_000, bytes=1_000_000, weight_bytes=500_000, compute_dtype="int8"),
                  NodeCost("relu", "Relu", ops=1_000_000, bytes=8_000_000_000, weight_bytes=0, compute_dtype="fp32")))
FIGURES = {"peak_gops": {"int8": 1000.0, "fp32": 100.0}, "memory_bandwidth_gbs": 10.0, "power_w": 2.0, "process_nm": 7}


def test_roofline_takes_the_slower_of_compute_and_memory():
    est = estimate(COST, FIGURES, efficiency=0.5, overhead_us=0.0)
    # conv: 2 GOP / (1000 GOPS x 0.5) = 4 ms (compute-bound); relu: 8 GB / 10 GB/s = 800 ms (memory-bound)
    assert est.latency_ms == pytest.approx(804.0)
    assert est.compute_bound_nodes == 1 and est.memory_bound_nodes == 1
    assert est.method == "estimated:roofline-v1"
    scale = (7 / 45) ** 0.5
    ops_pj = 2e9 * (0.2 + 0.03) / 2 * scale + 1e6 * (3.7 + 0.9) / 2 * scale
    expected_j = ops_pj * 1e-12 + 8_001_000_000 * 162.5e-12 + 2.0 * 0.804
    assert est.energy_mj == pytest.approx(expected_j * 1e3)


def test_unknown_figures_are_listed_not_guessed():
    est = estimate(COST, {"peak_gops": {"int8": "unknown"}, "memory_bandwidth_gbs": "unknown", "power_w": "unknown",
                          "process_nm": "unknown"})
    assert est.latency_ms is None
    assert any("peak_gops" in m for m in est.missing) and any("process_nm" in m for m in est.missing)
    partial = estimate(COST, {"peak_gops": {"fp16": 500.0}, "memory_bandwidth_gbs": "unknown", "power_w": "unknown",
                              "process_nm": 5})
    assert partial.latency_ms is not None
    assert any("int8 ops timed at the fp16 peak" in a for a in partial.assumptions)
    assert any("memory_bandwidth_gbs" in m for m in partial.missing)


def test_efficiency_fit_reproduces_its_points():
    truth = 0.25
    points = [(r, o, r / truth + o) for r, o in ((1.0, 0.1), (4.0, 0.2), (0.5, 0.05))]
    fit = fit_efficiency(points)
    assert fit.efficiency == pytest.approx(truth) and fit.max_rel_error == pytest.approx(0.0, abs=1e-12)
    assert fit_efficiency([]) is None


def test_a_runtime_faster_than_the_nominal_op_overhead_still_fits():
    # ONNX Runtime at its default level fuses the graph into fewer kernels than it has nodes: measured below the
    # nominal per-op overhead, the overhead is scaled down instead of the point being dropped
    fit = fit_efficiency([(0.002, 0.018, 0.011)])
    assert fit is not None and fit.overhead_scale < 1
    assert abs(0.002 / fit.efficiency + 0.018 * fit.overhead_scale - 0.011) < 1e-9
