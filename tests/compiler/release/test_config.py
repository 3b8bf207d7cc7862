"""release.toml: every key checked, paths resolved, nothing built on a bad file."""

from __future__ import annotations

from pathlib import Path

import pytest

from compiler.errors import UsageError
from compiler.release.config import load_release
from compiler.release.driver import plan_release

SPECS = Path(__file__).resolve().parents[3] / "targets" / "specs"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "release.toml"
    path.write_text(text)
    return path


GOOD = """
name = "r1"
targets = ["apple-a17", "intel-npu-3720"]
[[model]]
path = "example"
precision = ["default", "int8", "fp16"]
[thresholds]
latency = 1.2
[thresholds.target.intel-npu-3720]
energy = 1.3
[profile]
runs = 30
"""


def test_a_good_file_reads_and_plans(tmp_path):
    config = load_release(write(tmp_path, GOOD))
    assert config.name == "r1" and config.models[0].name == "example"
    assert config.thresholds_dict()["default"]["latency"] == 1.2
    assert config.thresholds_dict()["target"] == {"intel-npu-3720": {"energy": 1.3}}
    cells = plan_release(config)
    # "default" is fp16 for both, so the explicit fp16 adds no cell
    assert sorted(c.label for c in cells) == ["example/fp16/apple-a17", "example/fp16/intel-npu-3720",
                                             "example/int8/apple-a17", "example/int8/intel-npu-3720"]
    assert len({c.key for c in cells}) == 4
    # the same inputs give the same keys
    assert [c.key for c in plan_release(load_release(write(tmp_path, GOOD)))] == [c.key for c in cells]


@pytest.mark.parametrize("text, expected", [
    ("targets = ['host']\nbogus = 1\n[[model]]\npath = 'example'\n", "unknown key 'bogus'"),
    ("targets = ['host']\n[[model]]\npath = 'example'\nprecison = 'int8'\n", "unknown key model[0].'precison'"),
    ("targets = ['host']\n[[model]]\npath = 'missing.onnx'\n", "model[0].path = 'missing.onnx': no such file"),
    ("targets = ['host']\n[[model]]\npath = 'example'\nprecision = 'int3'\n", "precision 'int3'"),
    ("targets = ['host']\n[[model]]\npath = 'example'\ncalibration = 'nowhere/'\n", "model[0].calibration"),
    ("targets = ['host']\n[[model]]\npath = 'example'\n[thresholds]\nlatnecy = 1.1\n", "unknown metric thresholds.'latnecy'"),
    ("targets = ['host']\n[[model]]\npath = 'example'\n[profile]\nrun = 3\n", "unknown key profile.'run'"),
    ("targets = ['host']\n[[model]]\npath = 'example'\n[[model]]\npath = 'example'\n", "used twice"),
    ("[[model]]\npath = 'example'\n", "has no targets"),
    ("targets = ['host']\n", "no [[model]] tables"),
    ("targets = ['host']\n[[model]]\npath = 'example'\nblock_size = '32'\n", "model[0].block_size must be int"),
    ("targets = ['host'\n", "not valid TOML"),
])
def test_bad_files_name_the_key(tmp_path, text, expected):
    with pytest.raises(UsageError) as err:
        load_release(write(tmp_path, text))
    assert expected in str(err.value)
    assert "release.toml" in str(err.value)


@pytest.mark.parametrize("text, expected", [
    ("targets = ['no-such-chip']\n[[model]]\npath = 'example'\n", "unknown target 'no-such-chip'"),
    ("targets = ['apple-a17']\n[[model]]\npath = 'example'\nprecision = 'int4'\n", "target apple-a17 does not build int4"),
    ("targets = ['host']\n[[model]]\npath = 'example'\n[thresholds.target.apple-a17]\nlatency = 2\n",
     "thresholds.target.apple-a17: no such target in this release"),
])
def test_plan_errors_come_before_any_work(tmp_path, text, expected):
    with pytest.raises(UsageError) as err:
        plan_release(load_release(write(tmp_path, text)))
    assert expected in str(err.value)


def test_int8_of_a_file_model_needs_calibration(tmp_path, conv_traced):
    import onnx

    onnx.save(conv_traced.onnx_model, tmp_path / "conv.onnx")
    config = load_release(write(tmp_path, "targets = ['snapdragon-8gen3']\n[[model]]\npath = 'conv.onnx'\n"))
    with pytest.raises(UsageError, match=r"model\[0\] \(conv\) builds int8 for snapdragon-8gen3.*calibration"):
        plan_release(config)


def test_spec_file_targets_join_the_release_and_may_not_shadow(tmp_path):
    text = (SPECS / "x86-64-avx2.toml").read_text()
    (tmp_path / "mine.toml").write_text(text.replace('id = "x86-64-avx2"', 'id = "my-avx2"'))
    (tmp_path / "clash.toml").write_text(text)
    cells = plan_release(load_release(write(tmp_path, "targets = ['mine.toml']\n[[model]]\npath = 'example'\n")))
    assert [c.target.id for c in cells] == ["my-avx2"] and cells[0].spec_file == str(tmp_path / "mine.toml")
    with pytest.raises(Exception, match="already registered"):
        plan_release(load_release(write(tmp_path, "targets = ['clash.toml']\n[[model]]\npath = 'example'\n")))


def test_a_spec_change_changes_only_that_targets_keys(tmp_path):
    text = (SPECS / "x86-64-avx2.toml").read_text().replace('id = "x86-64-avx2"', 'id = "my-avx2"')
    (tmp_path / "mine.toml").write_text(text)
    release = write(tmp_path, "targets = ['mine.toml', 'intel-npu-3720']\n[[model]]\npath = 'example'\n")
    before = {c.label: c.key for c in plan_release(load_release(release))}
    (tmp_path / "mine.toml").write_text(text.replace("[verify.fp32]", "# edited\n[verify.fp32]"))
    assert {c.label: c.key for c in plan_release(load_release(release))} == before  # formatting only
    assert 'description = "' in text
    (tmp_path / "mine.toml").write_text(text.replace('description = "', 'description = "edited: ', 1))
    after = {c.label: c.key for c in plan_release(load_release(release))}
    assert after["example/fp16/intel-npu-3720"] == before["example/fp16/intel-npu-3720"]
    assert after["example/fp32/my-avx2"] != before["example/fp32/my-avx2"]
