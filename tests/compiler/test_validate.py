from pathlib import Path

from compiler.cli import main
from compiler.validate import validate_spec

SPECS = Path(__file__).resolve().parents[2] / "targets" / "specs"


def _variant(tmp_path, old: str, new: str) -> Path:
    text = (SPECS / "arm64-cortex-a76.toml").read_text()
    assert old in text
    path = tmp_path / "vendor.toml"
    path.write_text(text.replace(old, new))
    return path


def test_builtin_specs_validate(capsys):
    for spec in sorted(SPECS.glob("*.toml")):
        if spec.name == "host.toml":
            continue  # completed at load time from the machine
        _, checks = validate_spec(spec)
        assert all(c.ok for c in checks), (spec.name, [c for c in checks if not c.ok])
    assert main(["targets", "validate", str(SPECS / "apple-a17.toml")]) == 0
    assert "valid" in capsys.readouterr().out


def test_unregistered_backend_and_bad_options_are_named(tmp_path, capsys):
    path = _variant(tmp_path, 'backends = ["executorch", "tvm", "onnxruntime", "llamacpp"]',
                    'backends = ["executorch", "tvm", "onnxruntime", "llamacpp", "mynpu"]')
    _, checks = validate_spec(path)
    failed = {c.name: c.detail for c in checks if not c.ok}
    assert "unknown backend 'mynpu'" in failed["backend mynpu"] and "Install the plugin" in failed["backend mynpu"]
    path = _variant(tmp_path, 'cross_compiler = "aarch64-linux-gnu-g++"', 'cross_compiler = "gcc"\nopt_level = 3')
    _, checks = validate_spec(path)
    assert "unknown option 'opt_level'" in next(c.detail for c in checks if not c.ok)
    assert main(["targets", "validate", str(path)]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_non_positive_bandwidth_and_unknown_fusion(tmp_path):
    _, checks = validate_spec(_variant(tmp_path, "memory_bandwidth_gbs = 11.59", "memory_bandwidth_gbs = 0"))
    assert "hardware.memory_bandwidth_gbs must be positive, got 0" in checks[0].detail
    _, checks = validate_spec(_variant(tmp_path, 'rules = ["conv_bn",', 'rules = ["flash_attention", "conv_bn",'))
    assert "unknown fusion(s) ['flash_attention']" in next(c.detail for c in checks if not c.ok)


def test_a_missing_cross_compiler_names_the_package_for_its_triple(tmp_path, monkeypatch):
    riscv = _variant(tmp_path, 'mtriple = "aarch64-linux-gnu", mcpu = "cortex-a76", mattr = ["+neon", "+dotprod", "+fullfp16"]',
                     'mtriple = "riscv64-linux-gnu", mcpu = "generic-rv64", mattr = ["+v"]')
    riscv.write_text(riscv.read_text().replace('cross_compiler = "aarch64-linux-gnu-g++"',
                                               'cross_compiler = "riscv64-linux-gnu-g++"'))
    monkeypatch.setenv("PATH", str(tmp_path))  # neither cross compiler on PATH
    _, checks = validate_spec(riscv)
    failed = [c.detail for c in checks if not c.ok]
    assert failed == ["target arm64-cortex-a76 cross-compiles with 'riscv64-linux-gnu-g++', which is not on PATH; "
                      "on Debian/Ubuntu install it with `apt-get install g++-riscv64-linux-gnu`"]
    _, checks = validate_spec(SPECS / "arm64-cortex-a76.toml")
    assert any("`apt-get install g++-aarch64-linux-gnu`" in c.detail for c in checks if not c.ok)


def test_a_cpu_or_feature_llvm_does_not_know_fails_validation(tmp_path):
    _, checks = validate_spec(_variant(tmp_path, 'mcpu = "cortex-a76"', 'mcpu = "rv-npu-1"'))
    (bad,) = [c for c in checks if not c.ok]
    assert bad.name == "toolchain tvm" and "mcpu 'rv-npu-1' is not a CPU LLVM knows for aarch64-linux-gnu" in bad.detail
    assert "cortex-a76" in bad.detail  # the known CPUs are listed
    _, checks = validate_spec(_variant(tmp_path, '"+dotprod"', '"+dotprd"'))
    (bad,) = [c for c in checks if not c.ok]
    assert "mattr ['+dotprd'] names features LLVM does not know for aarch64-linux-gnu" in bad.detail
