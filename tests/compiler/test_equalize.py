"""Pre-quantization passes: cross-layer equalization, bias correction, SmoothQuant, chosen by accuracy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from compiler.build import BuildOptions, build
from compiler.frontend import trace_module
from compiler.passes.bias_correction import BiasCorrection, channel_statistics, layer_inputs, simulate_int8
from compiler.passes.equalize import CrossLayerEqualization, SmoothQuant
from compiler.passes.pipeline import Numerics, run_pipeline
from compiler.passes.quantize import run_graph


class DigitsNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv2(torch.relu(self.conv1(image)))).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def rescaled_digits(tmp_path_factory):
    """A conv net trained on scikit-learn's digits, then rescaled per channel between its two convolutions around
    the ReLU: an exactly function-preserving change that leaves one activation with channels 1000x apart."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    train, test = order[:1400], order[1400:]
    torch.manual_seed(0)
    net = DigitsNet()
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train])
    for _ in range(60):
        for i in range(0, len(xt), 128):
            opt.zero_grad()
            nn.functional.cross_entropy(net(xt[i:i + 128]), yt[i:i + 128]).backward()
            opt.step()
    net.eval()
    factors = torch.from_numpy(np.logspace(-2, 1, 8).astype(np.float32))[rng.permutation(8)]
    with torch.no_grad():
        net.conv1.weight *= factors[:, None, None, None]
        net.conv1.bias *= factors
        net.conv2.weight /= factors[None, :, None, None]
    folder = tmp_path_factory.mktemp("digits")
    np.savez(folder / "calibration.npz", image=x[train[:256]])
    np.savez(folder / "eval.npz", image=x[test], label=y[test])
    traced = trace_module(net, (torch.from_numpy(x[:1]),), name="digits")
    return traced, folder


def _int8(traced, folder, out, **settings):
    (result,) = build(traced, BuildOptions(["host"], out, backend="onnxruntime", precision="int8",
                                           calibration=str(folder / "calibration.npz"), eval=str(folder / "eval.npz"),
                                           measure_latency=False, **settings))
    from pathlib import Path

    return result.status, json.loads((Path(result.artifact) / "manifest.json").read_text())["quantization"]


def test_equalization_keeps_every_layer_int8_where_the_plain_quantizer_loses_accuracy(rescaled_digits, tmp_path):
    traced, folder = rescaled_digits
    plain_status, plain = _int8(traced, folder, tmp_path / "plain", equalize=False, bias_correction=False,
                                smoothquant=False)
    status, chosen = _int8(traced, folder, tmp_path / "chosen")
    plain_drop = plain["accuracy"]["top1_drop_points"]
    drop = chosen["accuracy"]["top1_drop_points"]
    assert status == "verified" and chosen["kept_in_float"] == [] and drop <= 0.5, chosen["pre_quantization"]
    # the plain quantizer (ONNX Runtime's, per-channel weights) loses accuracy on it and fails verification
    assert drop < plain_drop and plain_status == "failed"
    pre = chosen["pre_quantization"]
    assert "cross_layer_equalization" in pre["chosen"]
    assert {t["variant"] for t in pre["tried"]} >= {"none", "cross_layer_equalization"}


def test_the_passes_are_exact_in_float_where_they_should_be(rescaled_digits):
    traced, folder = rescaled_digits
    inputs = dict(np.load(folder / "eval.npz"))
    inputs.pop("label")
    graph, records = run_pipeline(traced.onnx_model, [CrossLayerEqualization()], [Numerics(inputs)])
    assert records[0]["fired"] == 1 and records[0]["numerics"] == "unchanged"
    assert records[0]["channel_range_spread_after"] < records[0]["channel_range_spread_before"] / 10
    # bias correction moves the float outputs on purpose: by the expected rounding shift, not more
    stats = channel_statistics(graph, inputs, {v: axis for v, axis in layer_inputs(graph).values()})
    corrected = BiasCorrection({k: v[0] for k, v in stats.items()}, per_channel=True).run(graph)
    assert corrected.modified and corrected.details["fired"] == 3
    before, after = run_graph(graph, inputs), run_graph(corrected.model, inputs)
    name = next(iter(before))
    assert 0 < np.abs(before[name] - after[name]).max() < 0.1 * np.abs(before[name]).max()


def test_simulated_rounding_matches_the_quantizers_scale():
    w = np.array([[0.5, -1.0, 0.25], [2.0, 0.0, -0.1]], np.float32)
    q = simulate_int8(w, 0)
    assert np.allclose(np.abs(q).max(axis=1), [1.0, 2.0], atol=1e-2)  # the largest value survives each channel
    assert np.abs(q - w).max() <= 2 * 2.0 / 255


def test_smoothquant_moves_outliers_into_the_weights_exactly(block_traced):
    inputs = {"x": np.random.default_rng(0).standard_normal((4,) + tuple(block_traced.signature.inputs[0].shape[1:]))
              .astype(np.float32)} if block_traced.signature.inputs[0].name == "x" else None
    name = block_traced.signature.inputs[0].name
    shape = [d if isinstance(d, int) else 4 for d in block_traced.signature.inputs[0].shape]
    inputs = {name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    norms = [n for n in block_traced.onnx_model.graph.node if n.op_type == "LayerNormalization"]
    stats = channel_statistics(block_traced.onnx_model, inputs, {n.output[0]: -1 for n in norms})
    result, records = run_pipeline(block_traced.onnx_model, [SmoothQuant({k: v[1] for k, v in stats.items()})],
                                   [Numerics(inputs)])
    assert records[0]["fired"] >= 1 and records[0]["numerics"] == "unchanged"
