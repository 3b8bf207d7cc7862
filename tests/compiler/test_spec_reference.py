"""docs/targets.md: its generated part is what the code says today, and its worked example is a valid spec."""

import re
from pathlib import Path

from compiler import spec_reference
from compiler.validate import validate_spec
from targets.spec import SPEC_TABLES

DOC = Path(__file__).resolve().parents[2] / "docs" / "targets.md"


def test_the_reference_tables_match_the_schema():
    text = DOC.read_text()
    assert spec_reference.update(text, spec_reference.builtin_backends()) == text, (
        "docs/targets.md is stale: run `chipfit targets reference --write docs/targets.md`")
    for table, keys in SPEC_TABLES.items():
        assert all(f"| `{k.name}` |" in text for k in keys), table
    for backend in spec_reference.builtin_backends():
        assert f"### `[backend_options.{backend.name}]`" in text


def test_the_worked_example_is_a_valid_spec(tmp_path):
    example = re.search(r"## Worked example.*?```toml\n(.*?)```", DOC.read_text(), re.S).group(1)
    path = tmp_path / "rv-board.toml"
    path.write_text(example)
    spec, checks = validate_spec(path)
    assert spec is not None and set(spec.hardware.units) == {"cpu", "npu"}
    failed = [c for c in checks if not c.ok]
    # only what this machine lacks may fail: the RISC-V cross compiler
    assert all(c.name == "toolchain tvm" and "riscv64-linux-gnu-g++" in c.detail for c in failed), failed
