"""The template's own tests: its spec validates, it builds, and it passes chipfit's conformance kit."""

from pathlib import Path

from compiler.build import BuildOptions, build
from compiler.conformance import OP_TESTS, run_conformance
from compiler.frontend import load_model
from compiler.validate import validate_spec
from targets.spec import load_spec

SPEC = Path(__file__).resolve().parents[1] / "src" / "my_npu" / "targets" / "my-npu.toml"


def test_spec_validates():
    _, checks = validate_spec(SPEC)
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]


def _runs_here() -> bool:
    """A target reached over RPC (or not at all) is verified where it runs, not at build time on this machine."""
    return load_spec(SPEC).reach.kind == "local"


def test_builds_and_verifies_the_example(tmp_path):
    (result,) = build(load_model("example"), BuildOptions(targets=["my-npu"], out_dir=tmp_path, measure_latency=False))
    assert result.status == ("verified" if _runs_here() else "not-run"), result.message
    assert (tmp_path / "example" / "my-npu" / "mynpu.json").is_file()


def test_passes_the_conformance_kit():
    report = run_conformance("my-npu", ops=OP_TESTS[:12], models=False).to_dict()
    assert report["failed"] == 0, [o for o in report["outcomes"] if not o["passed"]]
    if _runs_here():
        assert report["not_run"] == 0 and report["passed"] == report["total"]
