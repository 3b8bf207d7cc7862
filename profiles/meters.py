"""Energy meters: Linux powercap/RAPL, NVIDIA Jetson INA3221 rails, and an external command.

Every meter answers one question, "how many joules since I started", through `start()` and
`joules()`. Readers take their sysfs root as a parameter, so they are tested against file trees
in the kernel's format (this machine exposes no meter).
"""

from __future__ import annotations

import shlex
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class MeterError(Exception):
    """A meter cannot be read; the message names the path or command."""


class Meter(Protocol):
    name: str

    def start(self) -> None: ...

    def joules(self) -> float: ...

    def close(self) -> None: ...


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except FileNotFoundError as exc:
        raise MeterError(f"{path}: does not exist") from exc
    except PermissionError as exc:
        raise MeterError(f"{path}: not readable (RAPL counters need root since Linux 5.10's CVE-2020-8694 fix)") from exc
    except ValueError as exc:
        raise MeterError(f"{path}: not an integer counter") from exc


@dataclass
class RaplMeter:
    """Package energy from ``<root>/intel-rapl:N/energy_uj`` (Intel and AMD; AMD uses the same powercap tree).

    The counter wraps at ``max_energy_range_uj``; each read adds the forward distance, so a wrap
    between two reads is counted correctly as long as reads are less than one range apart.
    """

    root: Path = Path("/sys/class/powercap")
    name: str = "rapl"
    _zones: list[Path] = field(default_factory=list)
    _last: list[int] = field(default_factory=list)
    _ranges: list[int] = field(default_factory=list)
    _total_uj: float = 0.0

    def __post_init__(self) -> None:
        root = Path(self.root)
        if not root.is_dir():
            raise MeterError(f"{root}: no powercap tree (no RAPL on this machine, or not exposed to this VM)")
        # Top-level package zones only (intel-rapl:0, intel-rapl:1); sub-zones (core, dram) are inside them.
        self._zones = sorted(p for p in root.iterdir() if p.name.count(":") == 1 and (p / "energy_uj").exists())
        if not self._zones:
            raise MeterError(f"{root}: no intel-rapl:N/energy_uj package zones")
        self._ranges = [_read_int(z / "max_energy_range_uj") for z in self._zones]

    def _read(self) -> list[int]:
        return [_read_int(z / "energy_uj") for z in self._zones]

    def start(self) -> None:
        self._last = self._read()
        self._total_uj = 0.0

    def joules(self) -> float:
        now = self._read()
        for i, (prev, cur) in enumerate(zip(self._last, now)):
            delta = cur - prev
            if delta < 0:  # wrapped
                delta += self._ranges[i] + 1
            self._total_uj += delta
        self._last = now
        return self._total_uj / 1e6

    def close(self) -> None:
        pass


@dataclass
class Ina3221Meter:
    """Power rails of a Jetson's INA3221 monitors (``in_power*_input``, milliwatts), integrated over time.

    A background thread samples every ``interval_s``; energy is the trapezoidal integral of the
    summed rails. ``rails`` limits the sum to named inputs (e.g. ``["in_power0_input"]``).
    """

    root: Path
    interval_s: float = 0.005
    rails: list[str] | None = None
    name: str = "ina3221"
    _files: list[Path] = field(default_factory=list)
    _energy_j: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        root = Path(self.root)
        if not root.is_dir():
            raise MeterError(f"{root}: no INA3221 hwmon directory")
        files = sorted(root.glob("in_power*_input"))
        if self.rails is not None:
            files = [f for f in files if f.name in self.rails]
        if not files:
            raise MeterError(f"{root}: no in_power*_input rails" + (f" named {self.rails}" if self.rails else ""))
        self._files = files

    def power_w(self) -> float:
        return sum(_read_int(f) for f in self._files) / 1000.0

    def _run(self) -> None:
        last_t, last_p = time.perf_counter(), self.power_w()
        while not self._stop.wait(self.interval_s):
            t, p = time.perf_counter(), self.power_w()
            with self._lock:
                self._energy_j += (p + last_p) / 2 * (t - last_t)
            last_t, last_p = t, p

    def start(self) -> None:
        self.close()
        self._energy_j = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def joules(self) -> float:
        with self._lock:
            return self._energy_j

    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None


@dataclass
class CommandMeter:
    """A lab meter behind a command that prints cumulative joules (one number) each time it runs."""

    command: str
    timeout_s: float = 10.0
    name: str = "command"
    _start: float = 0.0

    def _read(self) -> float:
        try:
            done = subprocess.run(shlex.split(self.command), capture_output=True, text=True, timeout=self.timeout_s)
        except FileNotFoundError as exc:
            raise MeterError(f"meter command {self.command!r}: not found") from exc
        except subprocess.TimeoutExpired as exc:
            raise MeterError(f"meter command {self.command!r}: no answer in {self.timeout_s} s") from exc
        if done.returncode != 0:
            raise MeterError(f"meter command {self.command!r} exited {done.returncode}: {done.stderr.strip()[:200]}")
        try:
            return float(done.stdout.strip().split()[-1])
        except (ValueError, IndexError) as exc:
            raise MeterError(f"meter command {self.command!r} printed {done.stdout.strip()[:80]!r}, not joules") from exc

    def start(self) -> None:
        self._start = self._read()

    def joules(self) -> float:
        return self._read() - self._start

    def close(self) -> None:
        pass


def open_meter(spec: str) -> Meter:
    """``rapl[:ROOT]``, ``ina3221:HWMON_DIR``, or ``cmd:COMMAND``."""
    kind, _, arg = spec.partition(":")
    if kind == "rapl":
        return RaplMeter(Path(arg) if arg else Path("/sys/class/powercap"))
    if kind == "ina3221":
        if not arg:
            raise MeterError("ina3221 needs its hwmon directory: --meter ina3221:/sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3")
        return Ina3221Meter(Path(arg))
    if kind == "cmd":
        if not arg:
            raise MeterError("cmd needs a command that prints joules: --meter 'cmd:my-meter --read'")
        return CommandMeter(arg)
    raise MeterError(f"unknown meter {spec!r}; use rapl[:ROOT], ina3221:HWMON_DIR or cmd:COMMAND")


@dataclass(frozen=True)
class EnergyReading:
    energy_mj: float  # per inference, idle power subtracted: the median of the repeats
    idle_power_w: float
    loop_energy_j: float
    loop_seconds: float
    iterations: int
    method: str  # "measured:<meter>"
    #: per-inference energy of each repeat, for noise-aware comparisons (`chipfit compare`)
    samples_mj: tuple[float, ...] = ()


def energy_per_inference(meter: Meter, run_once, iterations: int, idle_seconds: float = 0.5,
                         repeats: int = 5) -> EnergyReading:
    """(energy over a timed loop - idle power x loop time) / iterations, idle measured just before.

    The ``iterations`` are split over ``repeats`` loops, each read on its own: their spread is the
    measurement's noise, which the regression gate needs as much as the median.
    """
    meter.start()
    t0 = time.perf_counter()
    time.sleep(idle_seconds)
    idle_j = meter.joules()
    idle_w = idle_j / (time.perf_counter() - t0)
    per_loop = max(iterations // repeats, 1)
    samples, total_j, total_s = [], 0.0, 0.0
    for _ in range(repeats):
        meter.start()
        t0 = time.perf_counter()
        for _ in range(per_loop):
            run_once()
        loop_s = time.perf_counter() - t0
        loop_j = meter.joules()
        samples.append(max(loop_j - idle_w * loop_s, 0.0) / per_loop * 1e3)
        total_j, total_s = total_j + loop_j, total_s + loop_s
    meter.close()
    return EnergyReading(statistics.median(samples), idle_w, total_j, total_s, per_loop * repeats, f"measured:{meter.name}", tuple(samples))
