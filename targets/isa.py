"""Instruction sets: what a chip's arithmetic is, as a target declares it and as a host reports it.

A target spec declares the ISA of its chip (``[isa]``: architecture and features); the build host's ISA is
read from ``/proc/cpuinfo``. They are different things: every choice that depends on arithmetic (the int8
scheme first) follows the *target's* ISA, and verification runs an execution that computes what the target
computes. This module holds the facts both sides share: the known features per architecture, their names
in ``/proc/cpuinfo``, and the int8 arithmetic an ISA implies.

The one int8 fact that matters on today's CPUs: x86 without VNNI has no int8 dot product into int32. Its
fast u8 x s8 instruction (``vpmaddubsw``) adds two adjacent products into a *saturating* int16, so full-range
uint8 activations times int8 weights (2 x 255 x 127 > 32767) can clip, and runtimes that use it (ONNX
Runtime's MLAS, oneDNN) compute another answer than the QDQ graph says. int8 activations are shifted to uint8
there and clip the same way. 7-bit weights (2 x 255 x 64 <= 32767) or uint8 weights (widened to int16 and
multiplied with ``vpmaddwd``) are exact. VNNI (``vpdpbusd``), Arm's dot products and NPUs accumulate int8
products in int32: exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

#: Features chipfit knows per architecture: canonical name -> what it means for a model's arithmetic.
KNOWN_FEATURES: dict[str, dict[str, str]] = {
    "x86_64": {
        "avx2": "256-bit integer and float SIMD",
        "fma": "fused multiply-add (float)",
        "f16c": "fp16 <-> fp32 conversion (fp16 storage; arithmetic in fp32)",
        "avx512f": "512-bit SIMD",
        "avx512bw": "512-bit byte/word integer SIMD",
        "avx512vl": "AVX-512 instructions on 128/256-bit registers",
        "avx512_vnni": "int8 dot product into int32 (vpdpbusd), 512-bit",
        "avx_vnni": "int8 dot product into int32 (vpdpbusd), 256-bit (Alder Lake, Meteor Lake)",
        "avx512_bf16": "bf16 dot products",
        "avx512_fp16": "fp16 arithmetic",
        "amx_tile": "AMX tile registers",
        "amx_int8": "AMX int8 tile matrix multiply into int32",
        "amx_bf16": "AMX bf16 tile matrix multiply",
    },
    "aarch64": {
        "neon": "Advanced SIMD (asimd)",
        "dotprod": "int8 dot product into int32 (sdot/udot)",
        "i8mm": "int8 matrix multiply into int32 (smmla/usmmla)",
        "fp16": "fp16 arithmetic (fphp/asimdhp)",
        "bf16": "bf16 dot products and matrix multiply",
        "sve": "Scalable Vector Extension",
    },
}
#: Accelerators declare an architecture without CPU features: their int8 units accumulate in int32.
ACCELERATOR_ARCHS = ("npu", "gpu", "dsp")

#: /proc/cpuinfo's names where they differ from the canonical ones (Arm's "Features" line).
_CPUINFO_ALIASES = {"asimd": "neon", "asimddp": "dotprod", "asimdhp": "fp16", "fphp": "fp16"}
_VNNI = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})

#: The int8 arithmetic classes an ISA implies.
EXACT = "int32-exact"
X86_PAIRS = "x86-u8s8-int16-pairs"
ARITHMETIC = {
    EXACT: "int8 products accumulate exactly in int32 (VNNI, Arm dot products, NPU MAC arrays, or widening to int16)",
    X86_PAIRS: "x86 without VNNI: u8 x s8 products are added in pairs into a saturating int16 (vpmaddubsw) before "
               "int32; full-range uint8 activations x int8 weights can clip",
}


def from_cpuinfo(arch: str, flags: Iterable[str]) -> frozenset[str]:
    """The known ISA features among a CPU's /proc/cpuinfo flags, by their canonical names."""
    known = KNOWN_FEATURES.get(arch, {})
    names = {_CPUINFO_ALIASES.get(f, f) for f in flags}
    return frozenset(n for n in names if n in known)


def unknown_features(arch: str, features: Iterable[str]) -> list[str]:
    known = KNOWN_FEATURES.get(arch, {})
    return [f for f in features if f not in known]


@dataclass(frozen=True)
class Isa:
    """A chip's instruction set: its architecture and the features chipfit's choices depend on."""

    arch: str  # "x86_64", "aarch64", or an accelerator ("npu", "gpu", "dsp")
    features: tuple[str, ...] = ()

    @property
    def int8_arithmetic(self) -> str:
        """How this ISA computes an int8 matmul or convolution: one of `ARITHMETIC`."""
        if self.arch == "x86_64" and not (_VNNI & set(self.features)):
            return X86_PAIRS
        return EXACT

    @property
    def label(self) -> str:
        """A short name of the ISA class, for tables and for keying speed decisions."""
        return f"{self.arch}:{'+'.join(sorted(self.features)) or 'baseline'}"

    def has(self, feature: str) -> bool:
        return feature in self.features


@dataclass(frozen=True)
class Int8Scheme:
    """How a graph's int8 layers are quantized: activation type, weight type and weight bits."""

    activation_dtype: str  # uint8, int8, uint16, int16
    weight_dtype: str = "int8"  # int8 or uint8
    reduce_range: bool = False  # 7-bit weights

    @property
    def name(self) -> str:
        short = {"uint8": "U8", "int8": "S8", "uint16": "U16", "int16": "S16"}
        return (short[self.activation_dtype] + short[self.weight_dtype]
                + (" (7-bit weights)" if self.reduce_range else ""))


def exact_on(scheme: Int8Scheme, arithmetic: str) -> tuple[bool, str]:
    """(whether ``scheme`` computes exactly under ``arithmetic``, why)."""
    if arithmetic == EXACT:
        return True, ARITHMETIC[EXACT]
    if scheme.activation_dtype in ("uint16", "int16"):
        return True, "16-bit activations have no int8 dot-product kernel: they run dequantized, in float"
    if scheme.weight_dtype == "uint8":
        return True, "uint8 weights are widened to int16 and multiplied with vpmaddwd: no int16 saturation"
    if scheme.reduce_range:
        return True, "7-bit weights keep a pair of u8 x s7 products within int16 (2 x 255 x 64 <= 32767)"
    return False, (f"{scheme.name}: two full-range products (2 x 255 x 127 = 64770) overflow the int16 pair sum on x86 "
                   "without VNNI (int8 activations are shifted to uint8 there and overflow alike)")


def exact_schemes(activation_dtypes: Iterable[str], arithmetic: str) -> list[Int8Scheme]:
    """The schemes a target can run exactly, for each of its activation types, full-range weights first."""
    schemes = []
    for activation in activation_dtypes:
        widened = (Int8Scheme(activation, "uint8"),) if activation == "uint8" else ()
        for scheme in (Int8Scheme(activation), Int8Scheme(activation, "int8", True)) + widened:
            if exact_on(scheme, arithmetic)[0] and scheme not in schemes:
                schemes.append(scheme)
                if scheme.weight_dtype == "int8" and not scheme.reduce_range:
                    break  # full range is exact: no reason to give bits away
    return schemes
