"""The Python API: an in-memory module, a failed verification, a third-party target."""

from __future__ import annotations

import json
import sys
import textwrap
from importlib.metadata import EntryPoint

import torch

from compiler.build import BuildContext, BuildOptions, build, exit_code
from compiler.frontend import trace_module
from targets.registry import TARGETS_GROUP, target_registry
from tests.conftest import TransformerBlock, seeded


def test_in_memory_transformer_block_builds_for_host(tmp_path):
    traced = trace_module(seeded(TransformerBlock()), (torch.zeros(1, 8, 32),), name="block")
    results = build(traced, BuildOptions(targets=["host"], out_dir=tmp_path))
    assert [r.status for r in results] == ["verified", "verified", "verified"]
    assert exit_code(results) == 0
    for r in results:
        assert r.numerics.outputs[0].cosine > 0.99999


def _strict_target_module(tmp_path) -> None:
    """A vendor-style plugin module whose spec demands bit-exact fp16 (which fp16 cannot give)."""
    from importlib import resources

    text = resources.files("targets").joinpath("specs", "intel-npu-3720.toml").read_text()
    text = text.replace('id = "intel-npu-3720"', 'id = "strict-npu"')
    text = text.replace("[verify.fp16]\natol = 1e-2\nrtol = 1e-2\nmin_cosine = 0.9995",
                        "[verify.fp16]\natol = 0.0\nrtol = 0.0\nmin_cosine = 1.0")
    (tmp_path / "strict.toml").write_text(text)
    (tmp_path / "strict_plugin.py").write_text(textwrap.dedent(f'''
        from targets.spec import load_spec
        def spec():
            return load_spec({str(tmp_path / "strict.toml")!r})
    '''))
    # Not monkeypatch.syspath_prepend: it restores all of sys.path afterwards, dropping the folder that
    # onnxruntime.transformers appends on import, which breaks its later imports in this process.
    sys.path.insert(0, str(tmp_path))


def test_failed_verification_is_kept_aside_and_exits_1(example_traced, tmp_path):
    _strict_target_module(tmp_path)
    registry = target_registry([EntryPoint("strict-npu", "strict_plugin:spec", TARGETS_GROUP),
                                EntryPoint("host", "targets.builtin:host", TARGETS_GROUP)])
    out = tmp_path / "out"
    results = build(example_traced, BuildOptions(targets=["strict-npu", "host"], out_dir=out, measure_latency=False),
                    BuildContext(targets=registry))
    strict, *host = results
    assert strict.status == "failed" and "outside tolerance" in strict.numerics.reason
    assert all(r.status == "verified" for r in host)  # the other cells still built
    assert exit_code(results) == 1
    assert not (out / "example" / "strict-npu").exists()
    manifest = json.loads((out / "example" / "strict-npu.failed" / "manifest.json").read_text())
    assert manifest["numerics"]["status"] == "failed"


def test_model_larger_than_target_memory_warns_at_build(example_traced, tmp_path):
    from dataclasses import replace

    registry = target_registry([EntryPoint("arm64-cortex-a76", "targets.builtin:arm64_cortex_a76", TARGETS_GROUP)])
    spec = registry.get("arm64-cortex-a76")
    registry._loaded["arm64-cortex-a76"] = replace(spec, hardware=replace(
        spec.hardware, figures=dict(spec.hardware.figures, memory_gb=1e-5)))
    (result,) = build(example_traced, BuildOptions(targets=["arm64-cortex-a76"], out_dir=tmp_path, measure_latency=False),
                      BuildContext(targets=registry))
    assert result.ok and result.warnings and "has 1e-05 GB of memory" in result.warnings[0]
