"""The int8 artifact follows the target's ISA, and is verified by what the target computes, on either host kind.

The example is built for the AVX2 target (no VNNI) and for the same target declaring AVX-512 VNNI. Every
assertion holds on an AVX2-only host and on a VNNI one: the execution that verifies differs (the numerics say
which), the verdicts do not."""

import json

import pytest

from compiler.build import BuildContext, BuildOptions, build
from compiler.cli import main
from compiler.errors import UsageError
from targets.registry import target_registry
from targets.spec import load_spec
from tests.targets.test_spec import SPECS

FAST = dict(precision="int8", backend="onnxruntime", measure_latency=False, equalize=False, bias_correction=False,
            smoothquant=False)


@pytest.fixture(scope="module")
def ctx():
    vnni = load_spec(SPECS / "x86-64-avx2.toml", {
        "id": "x86-64-vnni", "isa": {"arch": "x86_64", "features": ["avx2", "fma", "f16c", "avx512f", "avx512_vnni"]}})
    return BuildContext(targets=target_registry().including({"x86-64-vnni": vnni}, "test"))


def _manifest(out, target):
    return json.loads((out / "example" / target / "manifest.json").read_text())


def test_a_no_vnni_target_gets_an_exact_scheme_and_the_u8s8_error_on_record(example_traced, ctx, tmp_path):
    [result] = build(example_traced, BuildOptions(["x86-64-avx2"], tmp_path, **FAST), ctx)
    assert result.status == "verified", result.numerics.summary()
    assert result.numerics.min_cosine > 0.999
    scheme = _manifest(tmp_path, "x86-64-avx2")["quantization"]["scheme"]
    assert scheme["arithmetic"] == "x86-u8s8-int16-pairs"
    assert scheme["chosen"] in ("U8S8 (7-bit weights)", "U8U8")
    assert {t["scheme"] for t in scheme["tried"]} == {"U8S8 (7-bit weights)", "U8U8"}
    # what the VNNI machine used to ship, measured with the target's arithmetic: it clips
    assert scheme["refused"]["scheme"] == "U8S8" and scheme["refused"]["cosine"] < 0.99
    host = _manifest(tmp_path, "x86-64-avx2")["host"]
    assert host["isa"] and host["int8_arithmetic"] in ("x86-u8s8-int16-pairs", "int32-exact")


def test_a_vnni_target_keeps_full_range_u8s8_and_verifies_it_exactly(example_traced, ctx, tmp_path):
    [result] = build(example_traced, BuildOptions(["x86-64-vnni"], tmp_path, **FAST), ctx)
    assert result.status == "verified", result.numerics.summary()
    assert result.numerics.min_cosine > 0.999
    assert _manifest(tmp_path, "x86-64-vnni")["quantization"]["scheme"]["chosen"] == "U8S8"
    # natively on a VNNI host; with Q/DQ as written where this host's kernels would clip
    expected = "native" if ctx.host.isa.int8_arithmetic == "int32-exact" else "qdq"
    assert result.numerics.execution == expected


def test_a_forced_u8s8_build_for_a_no_vnni_target_is_caught(example_traced, ctx, tmp_path):
    with pytest.raises(UsageError, match=r"--int8-weights int8 with uint8 activations: .*x86-64-avx2.*--force"):
        build(example_traced, BuildOptions(["x86-64-avx2"], tmp_path, int8_weights="int8", **FAST), ctx)
    [result] = build(example_traced, BuildOptions(["x86-64-avx2"], tmp_path, int8_weights="int8", force=True, **FAST),
                     ctx)
    assert result.status == "failed" and result.stage == "MISMATCH"
    assert result.numerics.min_cosine < 0.99
    # this host's kernels clip as the target's do, or the target's arithmetic is emulated
    expected = "native" if ctx.host.isa.int8_arithmetic == "x86-u8s8-int16-pairs" else "emulated"
    assert result.numerics.execution == expected


def test_the_cli_refuses_an_inexact_scheme_before_any_work(tmp_path, capsys):
    code = main(["build", "example", "-t", "x86-64-avx2", "--precision", "int8", "--int8-weights", "int8",
                 "-o", str(tmp_path)])
    assert code == 2
    assert "cannot compute it exactly" in capsys.readouterr().err
    assert not (tmp_path / "example" / "x86-64-avx2").exists()
