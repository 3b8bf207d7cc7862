"""The build cache: keys from content, entries verified on every lookup, commits atomic."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compiler.artifact import MANIFEST_NAME, hash_files
from compiler.release.cache import BuildCache, cache_key, digest_model_source, digest_path
from tests.factories import make_manifest


def make_artifact(root: Path, payload: bytes = b"weights") -> Path:
    root.mkdir(parents=True)
    (root / "model.bin").write_bytes(payload)
    manifest = make_manifest(hash_files(root, ["model.bin"]))
    (root / MANIFEST_NAME).write_text(json.dumps(manifest.to_dict()))
    return root


def test_keys_follow_content_not_order():
    a = {"source_model": "1", "target_spec": "2"}
    assert cache_key(a) == cache_key(dict(reversed(list(a.items()))))
    assert cache_key(a) != cache_key({**a, "target_spec": "3"})


def test_folder_digest_covers_names_and_bytes(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.npy").write_bytes(b"1")
    first = digest_path(tmp_path / "d")
    (tmp_path / "d" / "b.npy").write_bytes(b"2")
    second = digest_path(tmp_path / "d")
    (tmp_path / "d" / "b.npy").rename(tmp_path / "d" / "c.npy")
    assert len({first, second, digest_path(tmp_path / "d")}) == 3


def test_onnx_digest_includes_external_data(tmp_path):
    weight = numpy_helper.from_array(np.ones((64, 64), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], [weight])
    model = helper.make_model(graph)
    onnx.save(model, tmp_path / "m.onnx", save_as_external_data=True, location="m.data", size_threshold=0)
    before = digest_model_source(str(tmp_path / "m.onnx"))
    data = bytearray((tmp_path / "m.data").read_bytes())
    data[10] ^= 1
    (tmp_path / "m.data").write_bytes(bytes(data))
    assert digest_model_source(str(tmp_path / "m.onnx")) != before
    assert digest_model_source("example") == digest_model_source("example")


def test_commit_then_lookup_and_corruption_is_detected(tmp_path):
    cache = BuildCache(tmp_path / "cache")
    artifact = make_artifact(tmp_path / "built" / "host")
    key = "k" * 64
    with cache.lock(key):
        assert cache.lookup(key) == (None, "")
        entry = cache.commit(key, {"host": artifact}, {"cell": "m/fp32/host"})
    with cache.lock(key):
        found, note = cache.lookup(key)
    assert found is not None and found.artifacts == ["host"] and note == ""
    (entry.path / "host" / "model.bin").write_bytes(b"weightz")  # same size, different bytes
    with cache.lock(key):
        found, note = cache.lookup(key)
    assert found is None and "corrupt" in note and "model.bin" in note
    assert not entry.path.exists()  # removed, never used
    # a truncated entry (no entry.json) is corrupt too
    with cache.lock(key):
        cache.commit(key, {"host": artifact}, {})
    (entry.path / "entry.json").unlink()
    with cache.lock(key):
        assert cache.lookup(key)[0] is None


def _commit_many(root: str, key: str, artifact: str, results) -> None:
    cache = BuildCache(root)
    made = 0
    for _ in range(20):
        with cache.lock(key):
            if cache.lookup(key)[0] is None:
                cache.commit(key, {"host": Path(artifact)}, {})
                made += 1
    results.put(made)


def test_concurrent_processes_commit_once_and_never_see_a_partial_entry(tmp_path):
    artifact = make_artifact(tmp_path / "built" / "host", b"x" * 100_000)
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_commit_many, args=(str(tmp_path / "cache"), "c" * 64, str(artifact), results))
             for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert sum(results.get(timeout=5) for _ in procs) == 1
    entry, note = BuildCache(tmp_path / "cache").lookup("c" * 64)
    assert entry is not None and note == ""


def test_prune_removes_old_then_least_recently_used_entries_and_spares_held_ones(tmp_path):
    import os

    cache = BuildCache(tmp_path / "cache")
    artifact = make_artifact(tmp_path / "built" / "host", b"x" * 10_000)
    keys = [c * 64 for c in "abcd"]
    for n, key in enumerate(keys):
        with cache.lock(key):
            entry = cache.commit(key, {"host": artifact}, {})
        os.utime(entry.path / "entry.json", (1000.0 + n, 1000.0 + n))  # a used first, d last
    assert [k for k, _, _ in cache.entries()] == keys
    with cache.lock(keys[1]):  # another process is using b: left alone
        removed = cache.prune(max_age_s=10.0, now=1012.0)  # a and b are older than 10 s
    assert removed == [keys[0]]
    size = cache.entries()[0][2]
    assert cache.prune(max_bytes=2 * size + 1) == [keys[1]]  # least recently used first
    assert [k for k, _, _ in cache.entries()] == keys[2:]
    with cache.lock(keys[2]):
        assert cache.lookup(keys[2])[0] is not None  # a hit marks it used
    assert cache.prune(max_bytes=size + 1) == [keys[3]]


def test_cache_cli(tmp_path, capsys):
    from compiler.cli import main

    cache = BuildCache(tmp_path / "cache")
    with cache.lock("e" * 64):
        cache.commit("e" * 64, {"host": make_artifact(tmp_path / "a" / "host")}, {})
    assert main(["cache", "info", "--cache", str(cache.root)]) == 0
    assert "1 entry" in capsys.readouterr().out
    assert main(["cache", "prune", "--cache", str(cache.root)]) == 2
    assert main(["cache", "prune", "--cache", str(cache.root), "--max-size-gb", "0"]) == 0
    assert "removed 1 entry" in capsys.readouterr().out and cache.entries() == []
