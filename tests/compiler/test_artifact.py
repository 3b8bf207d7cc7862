import json
import os

import pytest

from compiler.artifact import MANIFEST_NAME, STAGING_MARK, Staging, hash_files
from compiler.errors import UsageError
from targets.manifest import find_artifacts, read_artifact
from tests.factories import make_manifest


def _manifest(files):
    return make_manifest(files)


def test_commit_writes_manifest_last_and_renames_into_place(tmp_path):
    dest = tmp_path / "m" / "t"
    with Staging(dest) as staging:
        (staging.path / "model.bin").write_bytes(b"abc")
        assert not dest.exists()
        staging.commit(_manifest(hash_files(staging.path, ["model.bin"])))
    artifact = read_artifact(dest)
    assert artifact.file_problems() == []
    assert artifact.size_bytes == 3
    assert not list((tmp_path / "m").glob(f"*{STAGING_MARK}*"))


def test_exception_leaves_nothing_behind(tmp_path):
    dest = tmp_path / "m" / "t"
    with pytest.raises(RuntimeError):
        with Staging(dest) as staging:
            (staging.path / "half.bin").write_bytes(b"x" * 10)
            raise RuntimeError("backend crashed")
    assert not dest.exists()
    assert list((tmp_path / "m").iterdir()) == []


def test_rebuild_replaces_previous_artifact_whole(tmp_path):
    dest = tmp_path / "t"
    for payload in (b"old", b"new!"):
        with Staging(dest) as staging:
            (staging.path / "model.bin").write_bytes(payload)
            if payload == b"old":
                (staging.path / "stale.txt").write_text("only in the old build")
            staging.commit(_manifest(hash_files(staging.path, ["model.bin"])))
    assert (dest / "model.bin").read_bytes() == b"new!"
    assert not (dest / "stale.txt").exists()


def test_abandoned_staging_of_a_dead_process_is_removed(tmp_path):
    dest = tmp_path / "t"
    dead = tmp_path / f".t{STAGING_MARK}999999999-deadbeef"
    dead.mkdir()
    live = tmp_path / f".t{STAGING_MARK}{os.getpid()}-cafe"
    live.mkdir()
    with Staging(dest):
        pass
    assert not dead.exists() and live.exists()


def test_tampered_file_is_detected(tmp_path):
    dest = tmp_path / "t"
    with Staging(dest) as staging:
        (staging.path / "model.bin").write_bytes(b"abc")
        staging.commit(_manifest(hash_files(staging.path, ["model.bin"])))
    (dest / "model.bin").write_bytes(b"abd")
    assert "sha256 differs" in read_artifact(dest).file_problems()[0]
    (dest / "model.bin").unlink()
    assert "missing" in read_artifact(dest).file_problems()[0]


def test_read_artifact_errors(tmp_path):
    with pytest.raises(UsageError, match="not a chipfit artifact"):
        read_artifact(tmp_path)
    staging = tmp_path / f".t{STAGING_MARK}1-x"
    staging.mkdir()
    with pytest.raises(UsageError, match="unfinished build"):
        read_artifact(staging)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / MANIFEST_NAME).write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(UsageError, match="schema_version 99"):
        read_artifact(bad)


def test_find_artifacts_skips_staging_dirs(tmp_path):
    for name in ("a", f".b{STAGING_MARK}1-x"):
        d = tmp_path / "m" / name
        d.mkdir(parents=True)
        (d / MANIFEST_NAME).write_text(json.dumps(_manifest({}).to_dict()))
    assert [a.path.name for a in find_artifacts(tmp_path)] == ["a"]
