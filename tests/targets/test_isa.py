"""Target ISAs: the spec's [isa] table, and which int8 schemes an ISA computes exactly."""

import pytest

from targets.isa import EXACT, X86_PAIRS, Int8Scheme, Isa, exact_on, exact_schemes
from targets.spec import SpecError, load_spec
from tests.targets.test_spec import SPECS, _write


def test_builtin_targets_declare_their_chips_isa():
    avx2 = load_spec(SPECS / "x86-64-avx2.toml").isa
    assert avx2 == Isa("x86_64", ("avx2", "fma", "f16c")) and avx2.int8_arithmetic == X86_PAIRS
    assert load_spec(SPECS / "intel-core-ultra-cpu.toml").isa.has("avx_vnni")
    assert load_spec(SPECS / "intel-core-ultra-cpu.toml").isa.int8_arithmetic == EXACT
    a76 = load_spec(SPECS / "arm64-cortex-a76.toml").isa
    assert a76.has("dotprod") and a76.has("fp16") and not a76.has("i8mm")
    assert load_spec(SPECS / "snapdragon-8gen3.toml").isa == Isa("npu")


def test_full_range_u8s8_is_exact_only_with_an_int32_dot_product():
    u8s8 = Int8Scheme("uint8")
    assert exact_on(u8s8, EXACT)[0]
    exact, why = exact_on(u8s8, X86_PAIRS)
    assert not exact and "64770" in why
    assert not exact_on(Int8Scheme("int8"), X86_PAIRS)[0]  # shifted to uint8 on x86: overflows alike
    assert exact_on(Int8Scheme("uint8", "int8", True), X86_PAIRS)[0]
    assert exact_on(Int8Scheme("uint8", "uint8"), X86_PAIRS)[0]
    assert exact_schemes(["uint8"], EXACT) == [u8s8]
    assert exact_schemes(["uint8"], X86_PAIRS) == [Int8Scheme("uint8", "int8", True), Int8Scheme("uint8", "uint8")]


def test_an_unknown_isa_feature_lists_the_known_ones(tmp_path):
    text = (SPECS / "x86-64-avx2.toml").read_text().replace('features = ["avx2", "fma", "f16c"]',
                                                              'features = ["avx2", "vnni512"]')
    with pytest.raises(SpecError, match=r"isa\.features names 'vnni512', unknown for x86_64; known: avx2, .*avx512_vnni"):
        load_spec(_write(tmp_path, text))


def test_an_isa_that_contradicts_cpu_flags_names_both(tmp_path):
    text = (SPECS / "intel-core-ultra-cpu.toml").read_text().replace(
        'features = ["avx2", "fma", "f16c", "avx_vnni"]', 'features = ["avx2", "fma", "f16c"]')
    with pytest.raises(SpecError, match=r"reach\.cpu_flags require avx_vnni, which isa\.features does not declare"):
        load_spec(_write(tmp_path, text))
    arm = (SPECS / "x86-64-avx2.toml").read_text().replace('arch = "x86_64"\nfeatures', 'arch = "aarch64"\nfeatures')
    with pytest.raises(SpecError, match=r"isa\.features names 'avx2', 'fma', 'f16c', unknown for aarch64"):
        load_spec(_write(tmp_path, arm))
    wrong_arch = arm.replace('features = ["avx2", "fma", "f16c"]', 'features = ["neon"]')
    with pytest.raises(SpecError, match=r"isa\.arch = 'aarch64' contradicts reach\.arch = 'x86_64'"):
        load_spec(_write(tmp_path, wrong_arch))


def test_a_spec_without_isa_takes_reach(tmp_path):
    text = (SPECS / "x86-64-avx2.toml").read_text()
    start = text.index("[isa]")
    text = text[:start] + text[text.index("[reach]"):]
    assert load_spec(_write(tmp_path, text)).isa == Isa("x86_64", ("avx2", "fma", "f16c"))
