import tomllib
from pathlib import Path

import pytest

from targets.spec import HARDWARE_FIGURES, OPTIONAL_FIGURES, SpecError, load_spec

SPECS = Path(__file__).resolve().parents[2] / "targets" / "specs"
SHARED_CHIPS = Path(__file__).resolve().parents[3] / "shared" / "data" / "chips.toml"


def _spec_text(name: str = "arm64-cortex-a76.toml") -> str:
    return (SPECS / name).read_text()


def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "t.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", sorted(p.name for p in SPECS.glob("*.toml") if p.name != "host.toml"))
def test_builtin_specs_load(name):
    spec = load_spec(SPECS / name)
    assert spec.id == name.removesuffix(".toml")
    assert set(spec.hardware.figures) == set(HARDWARE_FIGURES + OPTIONAL_FIGURES)
    assert spec.default_precision in spec.precisions
    for precision in spec.precisions:
        assert spec.tolerance(precision).min_cosine > 0.9


def test_unknown_top_level_key_names_file_and_key(tmp_path):
    path = _write(tmp_path, 'bakend = "tvm"\n' + _spec_text())
    with pytest.raises(SpecError, match=r"t\.toml: unknown key 'bakend'"):
        load_spec(path)


def test_unknown_nested_key_names_its_table(tmp_path):
    text = _spec_text().replace('[reach]\n', '[reach]\nspeed = 3\n')
    with pytest.raises(SpecError, match=r"unknown key reach\.'speed'"):
        load_spec(_write(tmp_path, text))


def test_missing_figure_is_an_error_that_offers_unknown(tmp_path):
    text = _spec_text().replace("clock_ghz = 2.4\n", "")
    with pytest.raises(SpecError, match=r"missing required key hardware\.'clock_ghz'.*clock_ghz = \"unknown\""):
        load_spec(_write(tmp_path, text))


UNITS = """
[hardware.units.cpu]
kind = "cpu"
peak_gops = { fp32 = 100.0, int8 = 400.0 }
power_w = 2.0
sources = { peak_gops = "4 cores x 1.6 GHz x 16 fp32 lanes", power_w = "board datasheet" }

[hardware.units.npu]
kind = "npu"
peak_gops = { int8 = 4000.0 }
power_w = 3.0
backends = ["onnxruntime"]
sources = { peak_gops = "NPU datasheet", power_w = "board datasheet" }
"""


def test_compute_units_give_each_backend_its_peaks_and_power(tmp_path):
    spec = load_spec(_write(tmp_path, _spec_text() + UNITS))
    cpu, unit = spec.figures_for("tvm", "cpu")  # tvm declares it runs on a CPU
    assert unit == "cpu" and cpu["peak_gops"] == {"fp32": 100.0, "int8": 400.0} and cpu["power_w"] == 2.0
    npu, unit = spec.figures_for("onnxruntime", "")  # assigned by the spec
    assert unit == "npu" and npu["peak_gops"] == {"int8": 4000.0} and npu["power_w"] == 3.0
    assert npu["memory_bandwidth_gbs"] == cpu["memory_bandwidth_gbs"]  # one memory, shared
    assert spec.figures_for("coreml", "")[1] == ""  # a backend on no declared unit: the chip's figures
    assert load_spec(SPECS / "arm64-cortex-a76.toml").digest != spec.digest


@pytest.mark.parametrize("change, message", [
    (('backends = ["onnxruntime"]', 'backends = ["mynpu"]'), r"hardware\.units\.npu\.backends names 'mynpu'"),
    (('kind = "npu"', 'kind = "tpu"'), r"hardware\.units\.npu\.kind must be one of cpu, gpu, npu, dsp"),
    (("power_w = 3.0\n", ""), r"missing required key hardware\.units\.npu\.'power_w'.*\"unknown\""),
    (('peak_gops = "NPU datasheet", ', ""), r"hardware\.units\.npu\.peak_gops has a value but no hardware\.units\.npu\.sources"),
    (('[hardware.units.cpu]\nkind = "cpu"', '[hardware.units.cpu]\nkind = "cpu"\nbackends = ["onnxruntime"]'),
     r"'onnxruntime' is listed by hardware\.units\.cpu and hardware\.units\.npu"),
])
def test_compute_unit_mistakes_are_named(tmp_path, change, message):
    with pytest.raises(SpecError, match=message):
        load_spec(_write(tmp_path, _spec_text() + UNITS.replace(*change)))


def test_figure_without_source_is_an_error(tmp_path):
    text = _spec_text("snapdragon-8-elite.toml").replace('memory_bandwidth_gbs = "unknown"', "memory_bandwidth_gbs = 17.0")
    with pytest.raises(SpecError, match=r"hardware\.memory_bandwidth_gbs has a value but no hardware\.sources"):
        load_spec(_write(tmp_path, text))


def test_guessed_figure_text_is_refused(tmp_path):
    text = _spec_text("snapdragon-8-elite.toml").replace('power_w = "unknown"', 'power_w = "about 5"')
    with pytest.raises(SpecError, match="figures are never guessed"):
        load_spec(_write(tmp_path, text))


def test_precision_without_tolerance_is_an_error(tmp_path):
    text = _spec_text().replace("[verify.int8]\natol = 0.1\nrtol = 0.1\nmin_cosine = 0.99\n", "")
    with pytest.raises(SpecError, match=r"missing required key verify\.int8"):
        load_spec(_write(tmp_path, text))


def test_rpc_reach_needs_a_key(tmp_path):
    text = _spec_text().replace('rpc_key = "rpi5"\n', "")
    with pytest.raises(SpecError, match="rpc_key"):
        load_spec(_write(tmp_path, text))


def test_invalid_toml_names_file(tmp_path):
    with pytest.raises(SpecError, match=r"t\.toml: not valid TOML"):
        load_spec(_write(tmp_path, "id = \n"))


def test_digest_ignores_formatting_but_not_content(tmp_path):
    base = load_spec(SPECS / "arm64-cortex-a76.toml")
    reformatted = load_spec(_write(tmp_path, "# a comment\n" + _spec_text()))
    assert reformatted.digest == base.digest
    changed = load_spec(_write(tmp_path, _spec_text().replace("clock_ghz = 2.4", "clock_ghz = 2.5")))
    assert changed.digest != base.digest



def test_each_figure_says_how_it_was_had(tmp_path):
    hardware = load_spec(SPECS / "arm64-cortex-a76.toml").hardware
    assert hardware.kind_of("memory_bandwidth_gbs") == "measured-elsewhere" and hardware.kind_of("peak_gops") == "derived"
    assert load_spec(SPECS / "host.toml").hardware.kind_of("cores") == "unstated"
    with pytest.raises(SpecError, match=r"hardware\.kinds\.power_w = 'guess': choose one of datasheet"):
        load_spec(_write(tmp_path, _spec_text().replace('power_w = "measured-elsewhere"', 'power_w = "guess"')))
    with pytest.raises(SpecError, match=r"hardware\.kinds\.idle_power_w names no figure with a value"):
        load_spec(_write(tmp_path, _spec_text() + 'idle_power_w = "datasheet"\n'))


# Figures in the built-in specs must be the ones in shared/data/chips.toml (where it is present).
CHIP_FIGURES = {
    "arm64-cortex-a76.toml": {"process_nm": ("rpi5", "process_nm"), "clock_ghz": ("rpi5", "cpu_clock_ghz")},
    "apple-a17.toml": {"clock_ghz": ("apple_a17_pro", "cpu_clock_ghz", 0), "memory_gb": ("apple_a17_pro", "mem_capacity_gb")},
    "snapdragon-8gen3.toml": {"clock_ghz": ("snapdragon_8_gen3", "cpu_clock_ghz", 0)},
    "intel-npu-3720.toml": {"clock_ghz": ("intel_meteor_lake_npu", "npu_clock_ghz")},
}


@pytest.mark.skipif(not SHARED_CHIPS.exists(), reason="shared/data/chips.toml is not beside this checkout")
@pytest.mark.parametrize("name", sorted(CHIP_FIGURES))
def test_figures_match_shared_datasheet(name):
    chips = tomllib.loads(SHARED_CHIPS.read_text())["chip"]
    spec = load_spec(SPECS / name)
    assert spec.hardware.chip in chips
    for figure, (chip, key, *index) in CHIP_FIGURES[name].items():
        value = chips[chip][key]
        if index:
            value = value[index[0]]
        assert spec.hardware.figures[figure] == value, (name, figure)
    peak = spec.hardware.figures["peak_gops"]
    if name == "intel-npu-3720.toml":
        assert peak["int8"] == chips["intel_meteor_lake_npu"]["int8_tops_dense"] * 1000
    if name == "apple-a17.toml":
        assert peak["fp16"] == chips["apple_a17_pro"]["npu_tops_dtype_unspecified"] * 1000
