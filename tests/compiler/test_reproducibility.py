"""Content digests: equal for two builds of the same inputs, different when the content differs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from compiler.artifact import hash_files
from compiler.build import BuildOptions, build
from compiler.frontend import load_model
from compiler.reproducibility import compare_builds, content_digest
from targets.manifest import Manifest, read_manifest
from targets.registry import backend_registry


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory):
    root = tmp_path_factory.mktemp("repro")
    model = load_model("example")
    for run in ("a", "b"):
        for target, backend in (("apple-a17", None), ("x86-64-avx2", "tvm"), ("arm64-cortex-a76", "onnxruntime")):
            build(model, BuildOptions(targets=[target], out_dir=root / run, backend=backend, measure_latency=False))
    return root


def manifest(root: Path, run: str, artifact: str) -> Manifest:
    return read_manifest(root / run / "example" / artifact / "manifest.json")


@pytest.mark.parametrize("artifact, expected", [
    ("x86-64-avx2", "byte-identical"),  # TVM library
    ("apple-a17", "content digest equal"),  # Core ML: UUIDs and metadata order normalized
    ("arm64-cortex-a76", "content digest equal"),  # ONNX Runtime (--backend): model.ort left out
])
def test_two_builds_are_reproducible(two_builds, artifact, expected):
    first, second = manifest(two_builds, "a", artifact), manifest(two_builds, "b", artifact)
    same, detail = compare_builds(first, second)
    # The varying bytes of model.ort and Core ML metadata vary between processes; two builds in one
    # process may come out byte-identical, which is reproducible too.
    assert same and detail.startswith((expected, "byte-identical")), detail
    record = first.reproducibility
    assert record.content_digest == second.reproducibility.content_digest
    assert record.byte_identical_expected == (expected == "byte-identical")
    if artifact == "apple-a17":
        assert set(record.normalized) == {"model.mlpackage/Manifest.json",
                                          "model.mlpackage/Data/com.apple.CoreML/model.mlmodel"}
    if artifact.endswith("@onnxruntime"):
        assert set(record.excluded) == {"model.ort"}


def _tamper(root: Path, artifact: str, rel: str) -> Manifest:
    """Flip a byte of one file of build b, and re-record its hashes and content digest."""
    folder = root / "b" / "example" / artifact
    data = bytearray((folder / rel).read_bytes())
    data[len(data) // 2] ^= 0xFF
    # A new file renamed over the old one: the build's verification has the library mapped, and
    # rewriting a mapped shared object in place corrupts this process's code.
    (folder / (rel + ".new")).write_bytes(bytes(data))
    (folder / (rel + ".new")).replace(folder / rel)
    m = manifest(root, "b", artifact)
    files = hash_files(folder, list(m.files))
    normalizers = backend_registry().get(m.backend.name).normalizers()
    return replace(m, files=files, reproducibility=content_digest(folder, files, normalizers))


def test_real_differences_are_caught(two_builds):
    same, detail = compare_builds(manifest(two_builds, "a", "x86-64-avx2"),
                                  _tamper(two_builds, "x86-64-avx2", "model.so"))
    assert not same and "model.so" in detail
    weights = next(p for p in (two_builds / "b" / "example" / "apple-a17").rglob("weight.bin"))
    rel = weights.relative_to(two_builds / "b" / "example" / "apple-a17").as_posix()
    same, detail = compare_builds(manifest(two_builds, "a", "apple-a17"), _tamper(two_builds, "apple-a17", rel))
    assert not same and "weight.bin" in detail
