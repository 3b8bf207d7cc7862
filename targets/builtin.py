"""Entry points for the built-in targets: each loads its spec file from ``targets/specs/``.

`host` is the one spec completed at load time, from what this machine reports
(see `targets.host`); every figure filled in that way says so in its source.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from typing import Any

from targets.host import HostInfo, detect_host
from targets.isa import KNOWN_FEATURES
from targets.spec import UNKNOWN, TargetSpec, load_spec, spec_from_dict

#: From shared/data/chips.toml [chip.x86_avx512_vnni_core] (2 FMA ports, Ice Lake-SP reference).
AVX512_FP32_GFLOPS_PER_GHZ = 64
VNNI_INT8_GOPS_PER_GHZ = 256
AVX512_SOURCE = (
    "derived: per-core figures of chips.toml x86_avx512_vnni_core (fp32 64 FLOP/clk, int8 VNNI 256 op/clk, "
    "2 FMA ports; https://www.microway.com/knowledge-center-articles/detailed-specifications-of-the-ice-lake-sp-"
    "intel-xeon-processor-scalable-family-cpus/) x detected clock x detected cores"
)


#: The same derivation at AVX2's 256-bit width: 2 FMA ports x 8 fp32 lanes x 2 (no int8 figure: without VNNI the
#: int8 dot product takes two instructions, and chips.toml gives no measured rate for it).
AVX2_FP32_GFLOPS_PER_GHZ = 32
AVX2_SOURCE = (
    "derived: chips.toml x86_avx512_vnni_core's derivation (2 FMA x lanes x 2) at AVX2's 8 fp32 lanes = 32 FLOP/clk "
    "(https://docs.rs/crate/tract-linalg/0.23.4/source/src/x86_64_fma/fma_width.rs) x detected clock x detected cores"
)


def _spec(file: str) -> TargetSpec:
    with resources.as_file(resources.files(__package__).joinpath("specs", file)) as path:
        return load_spec(path)


def host_spec_data(info: HostInfo, text: str) -> dict[str, Any]:
    """The host spec table: ``host.toml`` completed with what ``info`` says about this machine."""
    data = tomllib.loads(text)
    hw = data["hardware"]
    sources = hw["sources"]
    detected = "detected on this machine (/proc/cpuinfo, /proc/meminfo, sched_getaffinity)"
    hw["compute"] = f"{info.model_name} ({info.arch}; ISA: {', '.join(info.isa_features) or 'baseline'})"
    hw["cores"] = info.cores
    sources["cores"] = detected
    if info.clock_ghz:
        hw["clock_ghz"] = info.clock_ghz
        sources["clock_ghz"] = detected
    if info.memory_gb:
        hw["memory_gb"] = info.memory_gb
        sources["memory_gb"] = detected
    peak: dict[str, Any] = {"fp32": UNKNOWN, "int8": UNKNOWN}
    if info.clock_ghz and "avx512f" in info.flags:
        peak["fp32"] = round(AVX512_FP32_GFLOPS_PER_GHZ * info.clock_ghz * info.cores, 1)
        if "avx512_vnni" in info.flags:
            peak["int8"] = round(VNNI_INT8_GOPS_PER_GHZ * info.clock_ghz * info.cores, 1)
        sources["peak_gops"] = AVX512_SOURCE
    elif info.clock_ghz and {"avx2", "fma"} <= info.flags:
        peak["fp32"] = round(AVX2_FP32_GFLOPS_PER_GHZ * info.clock_ghz * info.cores, 1)
        sources["peak_gops"] = AVX2_SOURCE
    hw["peak_gops"] = peak
    data["reach"]["arch"] = info.arch
    # the host target is this machine: its ISA is the detected one (an accelerator-less VM reports what it has)
    isa = info.isa
    data["isa"] = {"arch": isa.arch, "features": list(isa.features)} if isa.arch in KNOWN_FEATURES else {"arch": "npu"}
    return data


def host() -> TargetSpec:
    ref = resources.files(__package__).joinpath("specs", "host.toml")
    return spec_from_dict(host_spec_data(detect_host(), ref.read_text()), str(ref))


def x86_64_avx2() -> TargetSpec:
    return _spec("x86-64-avx2.toml")


def arm64_cortex_a76() -> TargetSpec:
    return _spec("arm64-cortex-a76.toml")


def apple_a17() -> TargetSpec:
    return _spec("apple-a17.toml")


def snapdragon_8gen3() -> TargetSpec:
    return _spec("snapdragon-8gen3.toml")


def snapdragon_8_elite() -> TargetSpec:
    return _spec("snapdragon-8-elite.toml")


def intel_npu_3720() -> TargetSpec:
    return _spec("intel-npu-3720.toml")


def intel_core_ultra_cpu() -> TargetSpec:
    return _spec("intel-core-ultra-cpu.toml")
