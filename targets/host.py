"""What this machine is: architecture, ISA features, cores, clock and memory.

The `host` target is the one spec that is completed at load time, from what
the machine reports (its hardware figures); backends read the same facts to fill
in their own options (the TVM backend picks LLVM's ``mcpu`` from the ISA flags).
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

#: Features that decide which peak-throughput figures apply to this CPU.
ISA_FEATURES_REPORTED = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


@dataclass(frozen=True)
class HostInfo:
    arch: str
    model_name: str
    flags: frozenset[str]
    cores: int
    clock_ghz: float | None
    memory_gb: float | None

    @property
    def isa_features(self) -> list[str]:
        return [f for f in ISA_FEATURES_REPORTED if f in self.flags]


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
    return HostInfo(
        arch=platform.machine(),
        model_name=info.get("model name", platform.processor() or platform.machine()),
        flags=flags,
        cores=cores,
        clock_ghz=clock,
        memory_gb=memory,
    )
