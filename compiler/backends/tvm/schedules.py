"""How TVM's kernels get their schedules: kept tuning records first, then TVM's default rules, else none.

Relax legalizes every operator into a TIR function whose loops are a plain nest; without a schedule
LLVM compiles those loops as written (the 50-100x gap to ONNX Runtime on this CPU). Two sources of
schedules, applied in this order to the fused module:

1. **Tuning records** that `chipfit tune` kept for this target (`compiler/backends/tvm/tuning.py`): a
   MetaSchedule database, keyed by each function's structure, so any model with the same workload
   reuses them. Applied with `MetaScheduleApplyDatabase`; the functions it scheduled are listed.
2. **dlight's CPU rules** (GEMV and reductions, which dominate LLM decode) for the functions left.

What each function got is returned for the manifest (`passes`), so an artifact says how it was scheduled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _scheduled(mod) -> set[str]:
    import tvm

    return {g.name_hint for g, f in mod.functions_items()
            if isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None and f.attrs.get("tirx.is_scheduled", False)}


def _prim_funcs(mod) -> set[str]:
    import tvm

    return {g.name_hint for g, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}


#: function-name parts of kernels whose anchor is a convolution or a matrix product: dlight's Reduction rule
#: matches them (they reduce over channels) but schedules them slower than LLVM's plain loop nest (measured here:
#: a conv + mean module 47 -> 71 ms), so it is kept to the normalisations and pooling it was written for
_NOT_REDUCTIONS = ("conv", "matmul", "dense", "bmm")


def schedule(mod, database: Path | None, default_rules: bool = True) -> tuple[Any, dict[str, Any]]:
    """``mod`` (inside ``with target:``, after legalization and fusion) with schedules applied, and the record."""
    from tvm import relax
    from tvm.s_tir import dlight as dl
    from tvm.s_tir import meta_schedule as ms

    record: dict[str, Any] = {"name": "tvm-schedules", "functions": len(_prim_funcs(mod))}
    tuned: set[str] = set()
    if database is not None:
        with ms.database.JSONDatabase(work_dir=str(database), allow_missing=False):
            mod = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)
        tuned = _scheduled(mod)
        record["database"] = str(database)
    record["tuned_records_applied"] = sorted(tuned)
    by_rules: set[str] = set()
    if default_rules:
        refused: list[dict[str, str]] = []
        mod = _per_function(mod, sorted(_prim_funcs(mod) - _scheduled(mod)), dl, dl.cpu.GEMV(), "dlight.cpu.GEMV",
                            refused)
        reductions = [g for g in _prim_funcs(mod) - _scheduled(mod) if not any(k in g for k in _NOT_REDUCTIONS)]
        mod = _per_function(mod, sorted(reductions), dl, dl.cpu.Reduction(), "dlight.cpu.Reduction", refused)
        by_rules = _scheduled(mod) - tuned
        if refused:
            record["default_rules_failed"] = refused
    record["default_rules_applied"] = sorted(by_rules)
    record["unscheduled"] = record["functions"] - len(tuned) - len(by_rules)
    return mod, record


def _per_function(mod, names, dl, rule, rule_name: str, refused: list[dict[str, str]]):
    """``rule`` applied to each function alone: a rule that fails on one kernel (dlight's GEMV asserts on some
    reductions without a reduction loop, e.g. MobileViT's unfold at some shapes) leaves that kernel with LLVM's
    plain loop nest, recorded by name, instead of failing the whole model."""
    for name in names:
        try:
            sub = dl.ApplyDefaultSchedule(rule)(tvm_subset(mod, [name]))
        except Exception as exc:  # a rule's own bug, for this kernel only
            refused.append({"function": name, "rule": rule_name, "error": f"{type(exc).__name__}: {exc}".strip()})
            continue
        for g, f in sub.functions_items():
            mod[g] = f
    return mod


def tvm_subset(mod, names):
    import tvm

    return tvm.IRModule({g: f for g, f in mod.functions_items() if g.name_hint in names})
