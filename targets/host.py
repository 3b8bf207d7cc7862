"""What this machine is: architecture, CPU vendor and model, ISA features, cores, clock and memory.

Read once per build or profile and recorded in every manifest and profile (`HostFacts`), because what a
build measured and verified is only meaningful with the machine that did it. The `host` target is the one
spec completed at load time from these facts; backends read them to fill in their own options (the TVM
backend picks LLVM's ``mcpu`` from the flags). The host's ISA is never taken for a target's: see `targets.isa`.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

from targets.isa import KNOWN_FEATURES, Isa, from_cpuinfo


@dataclass(frozen=True)
class HostFacts:
    """The host block of a manifest or profile: which machine built, verified or timed it."""

    arch: str
    vendor: str
    cpu: str
    isa: tuple[str, ...]
    int8_arithmetic: str
    cores: int
    memory_gb: float | None


@dataclass(frozen=True)
class HostInfo:
    arch: str
    model_name: str
    flags: frozenset[str]
    cores: int
    clock_ghz: float | None
    memory_gb: float | None
    vendor: str = "unknown"

    @property
    def isa(self) -> Isa:
        """This CPU's known ISA features (canonical names, in `KNOWN_FEATURES` order)."""
        present = from_cpuinfo(self.arch, self.flags)
        return Isa(self.arch, tuple(f for f in KNOWN_FEATURES.get(self.arch, {}) if f in present))

    @property
    def isa_features(self) -> list[str]:
        return list(self.isa.features)

    def facts(self) -> HostFacts:
        return HostFacts(self.arch, self.vendor, self.model_name, self.isa.features, self.isa.int8_arithmetic,
                         self.cores, self.memory_gb)


#: /proc/cpuinfo's "CPU implementer" on Arm (the MIDR field), for the vendor name
_ARM_IMPLEMENTERS = {"0x41": "ARM", "0x51": "Qualcomm", "0x61": "Apple", "0x48": "HiSilicon", "0x46": "Fujitsu",
                     "0x4e": "NVIDIA", "0xc0": "Ampere"}


def _cpuinfo_fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if ":" not in line:
            if fields:
                break  # first processor block only
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def detect_host(proc: Path = Path("/proc")) -> HostInfo:
    """Read this machine's CPU and memory facts (``proc`` is a parameter for tests)."""
    try:
        info = _cpuinfo_fields((proc / "cpuinfo").read_text())
    except OSError:
        info = {}
    flags = frozenset((info.get("flags") or info.get("Features") or "").split())
    clock = None
    if "cpu MHz" in info:
        try:
            clock = round(float(info["cpu MHz"]) / 1000.0, 3)
        except ValueError:
            clock = None
    memory = None
    try:
        for line in (proc / "meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = round(int(line.split()[1]) / (1024 * 1024), 1)
                break
    except (OSError, ValueError, IndexError):
        memory = None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    vendor = info.get("vendor_id") or _ARM_IMPLEMENTERS.get(info.get("CPU implementer", ""), "unknown")
    return HostInfo(
        arch=platform.machine(),
        model_name=info.get("model name", platform.processor() or platform.machine()),
        vendor=vendor,
        flags=flags,
        cores=cores,
        clock_ghz=clock,
        memory_gb=memory,
    )
