"""Energy meters against file trees in the kernel's format (this machine exposes no meter)."""

import stat
import time

import pytest

from profiles.meters import (
    CommandMeter,
    Ina3221Meter,
    MeterError,
    RaplMeter,
    energy_per_inference,
    open_meter,
)


def _rapl_tree(root, energy_uj=1_000, max_range=262_143_328_850):
    zone = root / "intel-rapl:0"
    (zone / "intel-rapl:0:0").mkdir(parents=True)  # a core sub-zone, not to be double counted
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    (zone / "max_energy_range_uj").write_text(f"{max_range}\n")
    (zone / "name").write_text("package-0\n")
    (zone / "intel-rapl:0:0" / "energy_uj").write_text("5\n")
    return zone


def test_rapl_counts_joules_and_survives_wraparound(tmp_path):
    zone = _rapl_tree(tmp_path, energy_uj=999_000, max_range=1_000_000)
    meter = RaplMeter(tmp_path)
    meter.start()
    (zone / "energy_uj").write_text("999900\n")
    assert meter.joules() == pytest.approx(900e-6)
    (zone / "energy_uj").write_text("400\n")  # wrapped past 1_000_000
    assert meter.joules() == pytest.approx((900 + 100 + 1 + 400) * 1e-6)


def test_rapl_sums_package_zones_only(tmp_path):
    _rapl_tree(tmp_path)
    second = tmp_path / "intel-rapl:1"
    second.mkdir()
    (second / "energy_uj").write_text("0\n")
    (second / "max_energy_range_uj").write_text("1000000\n")
    meter = RaplMeter(tmp_path)
    meter.start()
    (second / "energy_uj").write_text("2000000\n".replace("2000000", "500000"))
    assert meter.joules() == pytest.approx(0.5)


def test_missing_and_unreadable_meters_are_named(tmp_path):
    with pytest.raises(MeterError, match="no powercap tree"):
        RaplMeter(tmp_path / "nope")
    with pytest.raises(MeterError, match="no intel-rapl:N/energy_uj"):
        RaplMeter(tmp_path)
    with pytest.raises(MeterError, match="unknown meter 'watts'"):
        open_meter("watts")
    with pytest.raises(MeterError, match="no INA3221 hwmon directory"):
        open_meter(f"ina3221:{tmp_path / 'missing'}")


def test_ina3221_integrates_rail_power(tmp_path):
    (tmp_path / "in_power0_input").write_text("4000\n")  # mW
    (tmp_path / "in_power1_input").write_text("1000\n")
    (tmp_path / "in_voltage0_input").write_text("5000\n")
    meter = Ina3221Meter(tmp_path, interval_s=0.002)
    assert meter.power_w() == pytest.approx(5.0)
    meter.start()
    time.sleep(0.2)
    joules = meter.joules()
    meter.close()
    assert 0.5 < joules < 1.1  # about 5 W x 0.2 s (sampling stops at the last tick before joules())
    only = Ina3221Meter(tmp_path, rails=["in_power1_input"])
    assert only.power_w() == pytest.approx(1.0)


def test_command_meter_and_energy_per_inference(tmp_path):
    counter = tmp_path / "joules"
    counter.write_text("10.0")
    script = tmp_path / "meter.sh"
    script.write_text(f"#!/bin/sh\ncat {counter}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    meter = CommandMeter(str(script))

    def run_once():  # each inference costs 0.5 J on this imaginary lab meter
        counter.write_text(str(float(counter.read_text()) + 0.5))

    reading = energy_per_inference(meter, run_once, iterations=4, idle_seconds=0.05)
    assert reading.method == "measured:command"
    assert reading.energy_mj == pytest.approx(500.0, rel=1e-6)
    assert reading.samples_mj == pytest.approx([500.0] * 5)  # five loops, each read on its own
    assert reading.idle_power_w == 0.0
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/bin/sh\necho watts\n")
    bad.chmod(bad.stat().st_mode | stat.S_IEXEC)
    with pytest.raises(MeterError, match="not joules"):
        CommandMeter(str(bad)).start()


def test_idle_power_is_subtracted(tmp_path):
    zone = _rapl_tree(tmp_path, energy_uj=0, max_range=10**12)
    start = time.perf_counter()

    def advance(extra_uj=0):
        # 2 W of idle power accrues with wall time, plus what each inference adds.
        idle = int((time.perf_counter() - start) * 2_000_000)
        advance.extra += extra_uj
        (zone / "energy_uj").write_text(f"{idle + advance.extra}\n")

    advance.extra = 0

    class TickingRapl(RaplMeter):
        def _read(self):
            advance()
            return super()._read()

    reading = energy_per_inference(TickingRapl(tmp_path), lambda: advance(3000), iterations=20, idle_seconds=0.1)
    assert reading.idle_power_w == pytest.approx(2.0, rel=0.05)
    assert reading.energy_mj == pytest.approx(3.0, rel=0.25)  # 3000 uJ each, idle removed
