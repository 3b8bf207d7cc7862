from compiler.backends.tvm import backend as tvm_backend
from targets.builtin import host_spec_data
from targets.host import HostInfo, detect_host
from targets.spec import spec_from_dict

from importlib import resources


def _info(flags: str, arch: str = "x86_64", clock=2.0) -> HostInfo:
    return HostInfo(arch, "test cpu", frozenset(flags.split()), 4, clock, 16.0)


def test_detect_host_reads_a_proc_tree(tmp_path):
    (tmp_path / "cpuinfo").write_text(
        "processor\t: 0\nmodel name\t: Test CPU\ncpu MHz\t\t: 2400.000\nflags\t\t: fpu sse4_2 avx2 fma bmi2\n\n"
        "processor\t: 1\nmodel name\t: other\n"
    )
    (tmp_path / "meminfo").write_text("MemTotal:       16384000 kB\n")
    info = detect_host(tmp_path)
    assert info.model_name == "Test CPU"
    assert info.clock_ghz == 2.4
    assert info.memory_gb == 15.6
    assert {"avx2", "fma"} <= info.flags


def test_host_spec_is_completed_from_detection():
    text = resources.files("targets").joinpath("specs", "host.toml").read_text()
    info = _info("avx512f avx512_vnni avx2 fma", clock=2.0)
    spec = spec_from_dict(host_spec_data(info, text), "host.toml")
    # the spec says mcpu = "detect"; the TVM backend fills it in from the same facts
    assert spec.backend_options["tvm"]["target"]["mcpu"] == "detect"
    assert tvm_backend.resolve_options(spec, info)["target"]["mcpu"] == "cascadelake"
    assert spec.hardware.figures["cores"] == 4
    assert spec.hardware.figures["peak_gops"] == {"fp32": 512.0, "int8": 2048.0}
    assert "derived" in spec.hardware.sources["peak_gops"][0]
    avx2 = spec_from_dict(host_spec_data(_info("avx2 fma"), text), "host.toml")
    assert avx2.hardware.figures["peak_gops"] == {"fp32": 256.0, "int8": "unknown"}  # 32 FLOP/clk x 2 GHz x 4
    plain = spec_from_dict(host_spec_data(_info("sse4_2"), text), "host.toml")
    assert plain.hardware.figures["peak_gops"] == {"fp32": "unknown", "int8": "unknown"}


def test_host_facts_name_vendor_isa_and_int8_arithmetic(tmp_path):
    (tmp_path / "cpuinfo").write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n"
        "flags\t\t: fpu sse4_2 avx f16c avx2 fma bmi2\n"
    )
    (tmp_path / "meminfo").write_text("MemTotal:       16384000 kB\n")
    facts = detect_host(tmp_path).facts()
    assert (facts.vendor, facts.cpu, facts.memory_gb) == ("AuthenticAMD", "AMD EPYC", 15.6)
    assert facts.isa == ("avx2", "fma", "f16c")
    assert facts.int8_arithmetic == "x86-u8s8-int16-pairs"
    assert _info("avx2 fma f16c avx512f avx512bw avx512vl avx512_vnni").facts().int8_arithmetic == "int32-exact"


def test_arm_features_are_read_by_their_canonical_names(tmp_path):
    (tmp_path / "cpuinfo").write_text(
        "processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32 atomics fphp asimdhp asimddp i8mm\n"
        "CPU implementer\t: 0x41\n"
    )
    (tmp_path / "meminfo").write_text("MemTotal:       8192000 kB\n")
    info = detect_host(tmp_path)
    arm = HostInfo("aarch64", info.model_name, info.flags, 4, None, 8.0, info.vendor)
    assert arm.isa.features == ("neon", "dotprod", "i8mm", "fp16")
    assert info.vendor == "ARM"
    assert arm.isa.int8_arithmetic == "int32-exact"


def test_the_host_target_declares_the_detected_isa():
    text = resources.files("targets").joinpath("specs", "host.toml").read_text()
    avx2 = spec_from_dict(host_spec_data(_info("avx2 fma f16c"), text), "host.toml")
    assert avx2.isa.features == ("avx2", "fma", "f16c") and avx2.isa.int8_arithmetic == "x86-u8s8-int16-pairs"
    vnni = spec_from_dict(host_spec_data(_info("avx2 fma avx512f avx512_vnni"), text), "host.toml")
    assert vnni.isa.int8_arithmetic == "int32-exact"
