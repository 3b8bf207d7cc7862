"""Each fusion rule: the graph before, the op types expected after, and outputs unchanged."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.errors import UsageError
from compiler.passes.fusion import FUSIONS, FusionPass, fusion_passes
from compiler.passes.pipeline import Dump, Numerics, OpCounts, PassNumericsError, PassResult, Timing, op_histogram, run_pipeline
from compiler.passes.quantize import run_graph
from targets.signature import seeded_inputs


def _model(nodes, inits, in_shape=(1, 3, 8, 8), out_shape=None):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _fuse(model, name, explain=False):
    rng = np.random.default_rng(0)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    inputs = {"x": rng.standard_normal(shape).astype(np.float32)}
    fused, records = run_pipeline(model, [FusionPass(FUSIONS[name], explain)], [OpCounts(), Numerics(inputs)])
    return fused, records[0], inputs


def _same_outputs(a, b, inputs):
    for (ka, va), (kb, vb) in zip(run_graph(a, inputs).items(), run_graph(b, inputs).items()):
        np.testing.assert_allclose(va, vb, rtol=1e-4, atol=1e-5)


def _conv(rng, cin=3, cout=4):
    return numpy_helper.from_array(rng.standard_normal((cout, cin, 3, 3)).astype(np.float32), "w"), \
        numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), "b")


def test_conv_bn_folds_batchnorm_into_conv():
    rng = np.random.default_rng(1)
    w, b = _conv(rng)
    bn = [numpy_helper.from_array(v.astype(np.float32), n) for v, n in
          ((rng.uniform(0.5, 1.5, 4), "s"), (rng.standard_normal(4), "o"), (rng.standard_normal(4), "m"),
           (rng.uniform(0.5, 2, 4), "v"))]
    model = _model([helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
                    helper.make_node("BatchNormalization", ["c", "s", "o", "m", "v"], ["y"])], [w, b, *bn])
    fused, record, inputs = _fuse(model, "conv_bn")
    assert op_histogram(fused) == {"Conv": 1}
    assert record["fired"] == 1 and record["numerics"] == "unchanged"
    _same_outputs(model, fused, inputs)


def test_conv_activation_becomes_fused_conv_only_when_safe():
    rng = np.random.default_rng(2)
    w, b = _conv(rng)
    model = _model([helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
                    helper.make_node("Relu", ["c"], ["y"])], [w, b])
    fused, record, inputs = _fuse(model, "conv_activation")
    assert op_histogram(fused) == {"com.microsoft.FusedConv": 1}
    assert record["op_delta"] == {"Conv": -1, "Relu": -1, "com.microsoft.FusedConv": 1}
    _same_outputs(model, fused, inputs)
    shared = _model([helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
                     helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Add", ["r", "c"], ["y"])], [w, b])
    kept, record, _ = _fuse(shared, "conv_activation", explain=True)
    assert record["fired"] == 0 and "Conv" in op_histogram(kept)
    assert "Matched: Conv" in record["explain"]  # the matcher shows how far it got before the shared Conv output stopped it


def test_hardswish_pattern_becomes_hardswish():
    consts = [numpy_helper.from_array(np.array(v, np.float32), n) for v, n in ((3.0, "three"), (0.0, "zero"), (6.0, "six"))]
    model = _model([helper.make_node("Add", ["x", "three"], ["a"]), helper.make_node("Clip", ["a", "zero", "six"], ["c"]),
                    helper.make_node("Mul", ["c", "x"], ["m"]), helper.make_node("Div", ["m", "six"], ["y"])], consts)
    fused, record, inputs = _fuse(model, "hardswish")
    assert op_histogram(fused) == {"HardSwish": 1}
    _same_outputs(model, fused, inputs)


def test_transformer_block_layer_norm_and_bias_gelu(block_traced):
    inputs = seeded_inputs(block_traced.signature)
    passes, _ = fusion_passes(["layer_norm", "bias_gelu"], ("com.microsoft",), "test")
    fused, records = run_pipeline(block_traced.onnx_model, passes, [Numerics(inputs)])
    ops = op_histogram(fused)
    assert ops.get("com.microsoft.SkipLayerNormalization") == 1 and ops.get("com.microsoft.BiasGelu") == 1
    np.testing.assert_allclose(next(iter(run_graph(fused, inputs).values())),
                               next(iter(block_traced.reference(inputs).values())), rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def hf_llama():
    pytest.importorskip("transformers")
    from compiler.conformance import tiny_decoder_lm

    return tiny_decoder_lm("llama")


def test_bert_attention_fuses(hf_bert):
    passes, _ = fusion_passes(["layer_norm", "bias_gelu", "attention"], ("com.microsoft",), "test")
    inputs = {"input_ids": np.random.default_rng(0).integers(0, 100, (1, 16))}
    fused, records = run_pipeline(hf_bert.onnx_model, passes, [OpCounts(), Numerics(inputs)])
    ops = op_histogram(fused)
    assert ops["com.microsoft.Attention"] == 2  # one per layer: 2 of 2
    assert ops["com.microsoft.SkipLayerNormalization"] >= 4 and ops["com.microsoft.BiasGelu"] == 2
    assert len(fused.graph.node) < len(hf_bert.onnx_model.graph.node) / 2


def test_llama_rms_norm_rotary_and_attention_fuse(hf_llama):
    passes, _ = fusion_passes(["rms_norm", "rotary", "attention"], ("com.microsoft",), "test")
    inputs = {"input_ids": np.random.default_rng(0).integers(0, 100, (1, 16))}
    fused, records = run_pipeline(hf_llama.onnx_model, passes, [OpCounts(), Numerics(inputs)])
    fired = {r["name"]: r["fired"] for r in records}
    assert fired["rms_norm"] > 0 and fired["rotary"] > 0 and fired["attention"] > 0
    assert "com.microsoft.MultiHeadAttention" in op_histogram(fused)


def test_a_pass_that_breaks_numerics_is_named():
    rng = np.random.default_rng(3)
    w, b = _conv(rng)
    model = _model([helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])], [w, b])

    class Broken:
        name, requires_domains = "broken_rule", ()

        def run(self, m):
            bad = onnx.ModelProto()
            bad.CopyFrom(m)
            bad.graph.initializer[1].CopyFrom(numpy_helper.from_array(np.zeros(4, np.float32) + 5, "b"))
            return PassResult(bad, True, {"fired": 1})

    inputs = {"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)}
    with pytest.raises(PassNumericsError, match=r"pass 'broken_rule' changed the model's numerics: output 'y'"):
        run_pipeline(model, [Broken()], [Numerics(inputs)])


def test_instruments_time_count_and_dump(tmp_path, example_traced):
    passes, skipped = fusion_passes(["conv_activation"], ("com.microsoft",), "test")
    _, records = run_pipeline(example_traced.onnx_model, passes, [Timing(), OpCounts(), Dump(tmp_path)])
    assert [r["name"] for r in records] == ["cleanup", "conv_activation"]
    assert all("seconds" in r and "nodes_before" in r for r in records)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["01-cleanup.onnx", "02-conv_activation.onnx"]


def test_contrib_fusions_are_skipped_for_standard_only_backends():
    passes, skipped = fusion_passes(["conv_bn", "attention"], (), "spec.toml")
    assert [p.name for p in passes] == ["cleanup", "conv_bn"]
    assert skipped == [{"name": "attention", "reason": "produces com.microsoft ops this backend does not take"}]
    with pytest.raises(UsageError, match=r"spec.toml: unknown fusion\(s\) \['flash_attention'\]"):
        fusion_passes(["flash_attention"], (), "spec.toml")


def test_doubled_qdq_pairs_are_removed_and_real_requantization_kept():
    scale = numpy_helper.from_array(np.array(0.05, np.float32), "s")
    other = numpy_helper.from_array(np.array(0.1, np.float32), "s2")
    zero = numpy_helper.from_array(np.array(0, np.uint8), "z")

    def graph(second_scale):
        return _model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                       helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
                       helper.make_node("QuantizeLinear", ["d", second_scale, "z"], ["q2"]),
                       helper.make_node("DequantizeLinear", ["q2", second_scale, "z"], ["y"])], [scale, other, zero])

    fused, record, inputs = _fuse(graph("s"), "qdq_cleanup")
    assert record["fired"] == 1
    assert op_histogram(fused) == {"DequantizeLinear": 1, "QuantizeLinear": 1}
    _same_outputs(graph("s"), fused, inputs)
    kept, record, _ = _fuse(graph("s2"), "qdq_cleanup")
    assert record["fired"] == 0 and op_histogram(kept)["QuantizeLinear"] == 2


def _decoder_forward(family: str):
    """A 2-layer decoder of ``family`` (Hugging Face config, seeded random weights), traced as a graph model."""
    import torch
    import transformers

    from compiler.frontend import trace_module

    torch.manual_seed(0)
    common = dict(vocab_size=100, num_hidden_layers=2, num_attention_heads=4, use_cache=False)
    if family == "gpt2":
        config = transformers.GPT2Config(n_embd=32, n_head=4, n_layer=2, n_positions=64, vocab_size=100,
                                         use_cache=False)
        model = transformers.GPT2LMHeadModel(config)
    else:
        cls = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
               "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
               "phi3": (transformers.Phi3Config, transformers.Phi3ForCausalLM)}[family]
        config = cls[0](hidden_size=32, intermediate_size=64, num_key_value_heads=2, max_position_embeddings=64,
                        pad_token_id=0, **common)
        model = cls[1](config)
    return trace_module(model.eval(), {"input_ids": torch.randint(0, 100, (1, 16))}, name=family)


@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen2", "phi3"])
def test_the_host_rules_keep_decoder_graphs_loadable_and_exact(family, tmp_path):
    """Every host fusion rule on real decoder architectures: each rewritten graph loads in ONNX Runtime at its default
    optimization level (a rewrite that breaks shape inference is rolled back and named) and keeps the outputs."""
    from compiler.build import BuildOptions, build
    from compiler.passes.pipeline import load_problem

    traced = _decoder_forward(family)
    (result,) = build(traced, BuildOptions(["host"], tmp_path, backend="onnxruntime", measure_latency=False))
    assert result.status == "verified", result.message
    records = result.fusion["passes"]
    for record in records:
        if record.get("rolled_back"):
            assert "does not load" in record["rolled_back"] and record["fired"] == 0
    from targets.registry import target_registry

    host = target_registry().get("host")
    passes, _ = fusion_passes(list(host.fusions), ("com.microsoft",), "host")
    fused, _ = run_pipeline(traced.onnx_model, passes)
    assert load_problem(fused) is None
    if family == "gpt2":  # the attention rewrite gives GPT-2's [tokens, hidden] projection input a batch axis
        assert any(r["name"] == "attention" and r.get("rolled_back") for r in records)
