"""Options a target spec may set under ``[backend_options.tvm]``, and how they are resolved on a host."""

from __future__ import annotations

from typing import Any

from compiler.backends import OptionField, OptionSchema
from targets.host import HostInfo

SCHEMA = OptionSchema(
    "tvm",
    {
        "target": OptionField(
            dict, required=True,
            help="a TVM target as a JSON-style table, e.g. { kind = \"llvm\", mcpu = \"cortex-a76\", mtriple = "
                 "\"aarch64-linux-gnu\", mattr = [\"+neon\"] }; mcpu = \"detect\" is this machine's CPU with its "
                 "core count; `chipfit targets validate` checks mcpu and mattr against LLVM"),
        "cross_compiler": OptionField(str, default="",
                                      help="compiler driver that links the shared library when cross-compiling, e.g. "
                                           "aarch64-linux-gnu-g++ (must be on PATH)"),
        "pipeline": OptionField(str, choices=("zero", "default"), default="zero",
                                help="Relax pipeline before tvm.compile (\"zero\" fuses and legalizes; tvm.compile "
                                     "alone does not fuse on CPU)"),
        "use_tuning": OptionField(bool, default=True,
                                  help="apply the tuning records `chipfit tune` kept for this target (chipfit's cache, "
                                       "tvm-tuning/)"),
    },
)
DETECT = "detect"

#: (LLVM mcpu, CPU flags from /proc/cpuinfo that it needs), most specific first.
X86_MCPU_BY_FEATURES: tuple[tuple[str, frozenset[str]], ...] = (
    ("sapphirerapids", frozenset({"amx_tile", "amx_int8", "amx_bf16", "avx512_fp16", "avx512_vnni"})),
    ("znver5", frozenset({"avx512_vp2intersect", "avx_vnni", "avx512_bf16", "avx512_vnni"})),
    ("znver4", frozenset({"avx512_bf16", "avx512_vnni", "avx512ifma", "avx512_vbmi2"})),
    ("cooperlake", frozenset({"avx512_bf16", "avx512_vnni", "avx512f"})),
    ("icelake-server", frozenset({"avx512_vnni", "avx512ifma", "avx512_vbmi2", "avx512f"})),
    ("cascadelake", frozenset({"avx512_vnni", "avx512f"})),
    ("skylake-avx512", frozenset({"avx512f", "avx512bw", "avx512dq", "avx512vl"})),
    ("alderlake", frozenset({"avx_vnni", "avx2", "fma"})),
    ("haswell", frozenset({"avx2", "fma", "bmi2"})),
    ("x86-64-v2", frozenset({"sse4_2", "popcnt"})),
)

#: LLVM's attribute names (``mattr``) of the ISA features a target spec declares (`targets.isa`)
LLVM_FEATURES = {
    "avx2": "avx2", "fma": "fma", "f16c": "f16c", "avx512f": "avx512f", "avx512bw": "avx512bw", "avx512vl": "avx512vl",
    "avx512vnni": "avx512_vnni", "avxvnni": "avx_vnni", "avx512bf16": "avx512_bf16", "avx512fp16": "avx512_fp16",
    "amx-tile": "amx_tile", "amx-int8": "amx_int8", "amx-bf16": "amx_bf16",
    "neon": "neon", "dotprod": "dotprod", "i8mm": "i8mm", "fullfp16": "fp16", "bf16": "bf16", "sve": "sve",
}


def mattr_contradictions(mattr: Any, features: tuple[str, ...]) -> list[str]:
    """``mattr`` entries that enable an ISA feature the spec's [isa] does not declare, or disable one it does."""
    attrs = mattr.split(",") if isinstance(mattr, str) else list(mattr or [])
    problems = []
    for attr in attrs:
        sign, name = attr[:1], attr[1:]
        feature = LLVM_FEATURES.get(name)
        if feature is None or sign not in "+-":
            continue
        if (sign == "+") != (feature in features):
            problems.append(f"{attr} ({'not declared' if sign == '+' else 'declared'} in isa.features)")
    return problems


def mcpu_for(host: HostInfo) -> str:
    """LLVM's name for this CPU: the first row of the table whose features it has."""
    if host.arch == "x86_64":
        for mcpu, needed in X86_MCPU_BY_FEATURES:
            if needed <= host.flags:
                return mcpu
        return "x86-64"
    return "generic"


def resolve(options: dict[str, Any], host: HostInfo) -> dict[str, Any]:
    """``mcpu = "detect"`` replaced by this host's CPU, core count and (off x86) triple; and the digest of the
    tuning records kept for that target (``"none"``), so that a build after `chipfit tune` is a different build."""
    from compiler.backends.tvm.tuning import database_digest

    target = dict(options["target"])
    if target.get("mcpu") == DETECT:
        target["mcpu"] = mcpu_for(host)
        target["num-cores"] = host.cores
        if host.arch != "x86_64":
            target["mtriple"] = f"{host.arch}-linux-gnu"
    tuning = database_digest(target) if options.get("use_tuning", True) else None
    return {**options, "target": target, "tuning_database": tuning or "none"}
