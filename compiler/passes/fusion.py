"""Fusion passes on the ONNX graph, named so that a target spec can list the ones its hardware runs.

Each pass wraps the onnxscript rewriter: its common rules (BatchNorm folding, HardSwish) and its
ONNX Runtime fusions (GELU, LayerNorm/RMSNorm, attention, rotary embedding), plus one rule of
chipfit's own (Conv + activation into ONNX Runtime's FusedConv) written as a pattern / check /
rewrite class. A pass that does not fire can say why (`explain=True` runs the rewriter's match
tracer and keeps what it printed).

Passes that produce ``com.microsoft`` ops only run for backends that accept that domain; the
others are skipped with that reason, never applied and left to fail later.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from typing import Any, Callable

import onnx
import onnx_ir as ir
from onnxscript.rewriter import pattern

from compiler.errors import UsageError
from compiler.passes.graph import copy_model
from compiler.passes.pipeline import PassResult

MS = "com.microsoft"


def _to_ir(model: onnx.ModelProto) -> ir.Model:
    return ir.serde.deserialize_model(copy_model(model))


def _to_proto(model: ir.Model) -> onnx.ModelProto:
    return ir.serde.serialize_model(model)


class ConvActivation(pattern.RewriteRuleClassBase):
    """Conv (with bias) followed by Relu / Sigmoid / LeakyRelu / Tanh -> com.microsoft FusedConv."""

    def __init__(self, activation: str) -> None:
        super().__init__(f"conv_{activation.lower()}")
        self.activation = activation

    def pattern(self, op, x, w, b):
        conv = op.Conv(x, w, b, _allow_other_attributes=True, _outputs=["conv_out"])
        return getattr(op, self.activation)(conv, _allow_other_attributes=True, _outputs=["act_out"])

    def check(self, context, x, w, b, conv_out, act_out, **_):
        result = pattern.MatchResult()
        if len(conv_out.uses()) != 1:
            return result.fail("the Conv output has other users; fusing would duplicate the convolution")
        if w.shape is None or len(w.shape) != 4:
            return result.fail("FusedConv covers 2-D convolutions; this weight is not 4-D")
        return result

    def rewrite(self, op, x, w, b, conv_out, act_out, **_):
        attributes = dict(conv_out.producer().attributes)
        act = act_out.producer()
        extra = {}
        if self.activation == "LeakyRelu":
            alpha = act.attributes.get("alpha")
            extra["activation_params"] = ir.AttrFloat32s("activation_params", [alpha.value if alpha else 0.01])
        return op.FusedConv(x, w, b, activation=self.activation, _domain=MS, **{k: v for k, v in attributes.items()}, **extra)


class DoubledQDQ(pattern.RewriteRuleClassBase):
    """QuantizeLinear(DequantizeLinear(q, s, z), s, z) -> q: a requantization that changes nothing."""

    def pattern(self, op, q, s1, z1, s2, z2):
        return op.QuantizeLinear(op.DequantizeLinear(q, s1, z1, _allow_other_attributes=True), s2, z2,
                                 _allow_other_attributes=True)

    def check(self, context, q, s1, z1, s2, z2, **_):
        result = pattern.MatchResult()
        values = [v.const_value for v in (s1, z1, s2, z2)]
        if any(v is None for v in values):
            return result.fail("scales or zero points are not constants")
        a, b, c, d = (v.numpy() for v in values)
        if a.shape != c.shape or b.dtype != d.dtype or not (a == c).all() or not (b == d).all():
            return result.fail("the two pairs use different scales or zero points (a real requantization)")
        return result

    def rewrite(self, op, q, **_):
        return op.Identity(q)


def _rule_pass(rules: Callable[[], list]) -> Callable[[ir.Model, bool], int]:
    def apply(model: ir.Model, debug: bool) -> int:
        rule_set = pattern.RewriteRuleSet(rules())
        return rule_set.apply_to_model(model, verbose=2 if debug else None)

    return apply


def _common(*names: str) -> Callable[[], list]:
    def rules() -> list:
        from onnxscript.rewriter.rules import common

        found = []
        for name in names:
            value = getattr(common, name)
            if callable(value) and not hasattr(value, "remove_nodes") and not hasattr(value, "rules"):
                value = value()  # some modules export a function that builds their rule set
            found.extend(value.rules if hasattr(value, "rules") else [value])
        return found

    return rules


def _ort(module: str, function: str) -> Callable[[ir.Model, bool], int]:
    def apply(model: ir.Model, debug: bool) -> int:
        import importlib

        fn = getattr(importlib.import_module(f"onnxscript.rewriter.ort_fusions.{module}"), function)
        return fn(model, debug=debug)

    return apply


def _cleanup(model: ir.Model, debug: bool) -> int:
    from onnxscript import optimizer

    before = len(list(model.graph))
    optimizer.optimize(model)
    return max(before - len(list(model.graph)), 0)


def _attention(model: ir.Model, debug: bool) -> int:
    """Scaled-dot-product attention, then multi-head attention, then the fused Attention op."""
    from onnxscript.rewriter.ort_fusions import _core

    _core._pre_optimize(model)
    count = 0
    for module, function in (("sdpa", "fuse_sdpa"), ("mha", "fuse_mha1"), ("mha", "fuse_mha2"),
                             ("mha_scale", "fuse_mha_scale"), ("mha_bias", "fuse_mha_bias"),
                             ("attention", "fuse_attention"), ("sdpa_via_mha", "replace_sdpa_by_mha")):
        count += _ort(module, function)(model, debug)
    return count


@dataclass(frozen=True)
class FusionRule:
    name: str
    description: str
    apply: Callable[[ir.Model, bool], int] = field(repr=False)
    domains: tuple[str, ...] = ()  # non-standard op domains its output contains


FUSIONS: dict[str, FusionRule] = {
    rule.name: rule
    for rule in (
        FusionRule("cleanup", "constant folding and dead-code removal (onnxscript optimizer)", _cleanup),
        FusionRule("conv_bn", "fold BatchNormalization into the preceding Conv / ConvTranspose / Gemm",
                   _rule_pass(_common("fuse_batchnorm_into_conv_rule", "fuse_batchnorm_into_conv_transpose_rule",
                                      "fuse_batchnorm_into_gemm_rule"))),
        FusionRule("hardswish", "HardSigmoid*x or x*Clip(x+3,0,6)/6 into HardSwish", _rule_pass(_common("fuse_hardswish_rules"))),
        FusionRule("matmul_add_gemm", "MatMul + Add (2-D) into Gemm", _rule_pass(_common("matmul_add_to_gemm_rule"))),
        FusionRule("conv_activation", "Conv + Relu/Sigmoid/LeakyRelu/Tanh into FusedConv",
                   _rule_pass(lambda: [ConvActivation.rule(a) for a in ("Relu", "Sigmoid", "LeakyRelu", "Tanh")]), (MS,)),
        FusionRule("gelu", "erf/tanh GELU subgraphs into Gelu", lambda m, d: _ort("erfgelu", "fuse_erfgelu")(m, d)
                   + _ort("gelu", "fuse_gelu")(m, d), (MS,)),
        FusionRule("bias_gelu", "Add(bias) + Gelu into BiasGelu", _ort("bias_gelu", "fuse_bias_gelu"), (MS,)),
        FusionRule("layer_norm", "residual Add + LayerNormalization into SkipLayerNormalization",
                   _ort("skip_normalization", "fuse_skip_layer_normalization"), (MS,)),
        FusionRule("rms_norm", "RMSNorm subgraphs into SimplifiedLayerNormalization (+ skip variant)",
                   lambda m, d: _ort("rms_normalization", "fuse_rms_normalization")(m, d)
                   + _ort("skip_normalization", "fuse_skip_rms_normalization")(m, d), (MS,)),
        FusionRule("attention", "scaled-dot-product attention into MultiHeadAttention / Attention", _attention, (MS,)),
        FusionRule("qdq_cleanup", "doubled DequantizeLinear -> QuantizeLinear pairs with equal parameters removed",
                   lambda m, d: _rule_pass(lambda: [DoubledQDQ.rule()])(m, d)),
        FusionRule("rotary", "rotary position embedding into RotaryEmbedding",
                   lambda m, d: _ort("rotary_embedding", "fuse_rotary_embedding")(m, d)
                   + _ort("cos_sin_cache", "fuse_cos_sin_cache")(m, d), (MS,)),
    )
}


@dataclass(frozen=True)
class FusionPass:
    """One named fusion as a `Pass`."""

    rule: FusionRule
    explain: bool = False

    @property
    def name(self) -> str:
        return self.rule.name

    @property
    def requires_domains(self) -> tuple[str, ...]:
        return self.rule.domains

    def run(self, model: onnx.ModelProto) -> PassResult:
        graph = _to_ir(model)
        trace = io.StringIO()
        with contextlib.redirect_stdout(trace):
            fired = self.rule.apply(graph, self.explain)
        if fired:
            from onnxscript import optimizer

            # Inline the intermediate functions a fusion introduced (e.g. SDPA) and drop what is unused.
            with contextlib.redirect_stdout(io.StringIO()):
                optimizer.optimize(graph)
        details: dict[str, Any] = {"fired": int(fired)}
        if self.explain and not fired:
            details["explain"] = trace.getvalue().strip()[-4000:] or "no candidate subgraph for this rule in the model"
        return PassResult(_to_proto(graph) if fired else model, bool(fired), details)


def fusion_passes(names: list[str] | tuple[str, ...], accepted_domains: tuple[str, ...], where: str,
                  explain: bool = False) -> tuple[list[FusionPass], list[dict[str, str]]]:
    """The passes for ``names`` (always starting with cleanup) and the ones skipped, with why."""
    unknown = [n for n in names if n not in FUSIONS]
    if unknown:
        raise UsageError(f"{where}: unknown fusion(s) {unknown}; known: {', '.join(FUSIONS)}")
    passes, skipped = [], []
    for name in ["cleanup", *[n for n in names if n != "cleanup"]]:
        rule = FUSIONS[name]
        missing = [d for d in rule.domains if d not in accepted_domains]
        if missing:
            skipped.append({"name": name, "reason": f"produces {', '.join(missing)} ops this backend does not take"})
            continue
        passes.append(FusionPass(rule, explain))
    return passes, skipped
