"""The artifact format: one directory per model x target, its files and ``manifest.json``.

An artifact is built in a staging directory beside its destination and renamed
into place only once its manifest is written, so an interrupted or failed build
never leaves a directory that looks complete. `read_artifact` checks the
manifest's schema and every file's sha256.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from compiler.errors import UsageError

MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA_VERSION = 1
STAGING_MARK = ".staging-"
#: a build whose verification failed is kept beside its place as ``<target>.failed``, for inspection
FAILED_SUFFIX = ".failed"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def hash_files(root: Path, files: list[str] | tuple[str, ...]) -> dict[str, dict[str, Any]]:
    return {rel: {"sha256": sha256_file(root / rel), "bytes": (root / rel).stat().st_size} for rel in files}


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with path.open("rb") as f:
                os.fsync(f.fileno())
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_abandoned(folder: Path, pattern: str) -> None:
    """Staging directories (``*<STAGING_MARK><pid>-...``) left in ``folder`` by processes that no longer exist."""
    for old in folder.glob(pattern):
        pid = old.name.rsplit(STAGING_MARK, 1)[1].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Write beside ``path`` and rename: a reader sees the old file or the new one, never a part."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@contextlib.contextmanager
def file_lock(path: Path, wait: bool = True) -> Iterator[bool]:
    """An exclusive ``flock`` on ``path`` (created if missing); yields False if ``wait`` is off and it is held."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Staging:
    """A staging directory for one artifact; `commit` renames it into place.

    Leaving the ``with`` block without committing (an exception, a failed
    verification the caller chose not to commit) removes the staging directory.
    """

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.path = dest.parent / f".{dest.name}{STAGING_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def __enter__(self) -> "Staging":
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        remove_abandoned(self.dest.parent, f".{self.dest.name}{STAGING_MARK}*")  # left by a killed build
        self.path.mkdir()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)

    def commit(self, manifest: Mapping[str, Any], dest: Path | None = None) -> Path:
        """Write the manifest last, flush everything, then swap the directory into ``dest``."""
        dest = dest or self.dest
        tmp = self.path / (MANIFEST_NAME + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        tmp.replace(self.path / MANIFEST_NAME)
        _fsync_tree(self.path)
        return swap_into(self.path, dest)


def swap_into(source: Path, dest: Path) -> Path:
    """Rename a complete directory onto ``dest``, replacing what was there (same filesystem)."""
    old = None
    if dest.exists():
        old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
        dest.replace(old)
    source.replace(dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return dest


@dataclass(frozen=True)
class Artifact:
    path: Path
    manifest: Mapping[str, Any]

    @property
    def target(self) -> str:
        return self.manifest["target"]["id"]

    @property
    def backend(self) -> str:
        return self.manifest["backend"]["name"]

    @property
    def size_bytes(self) -> int:
        return sum(f["bytes"] for f in self.manifest["files"].values())

    def file_problems(self) -> list[str]:
        """Files that are missing or whose sha256 differs from the manifest's."""
        problems = []
        for rel, meta in self.manifest["files"].items():
            path = self.path / rel
            if not path.is_file():
                problems.append(f"{rel}: missing")
            elif sha256_file(path) != meta["sha256"]:
                problems.append(f"{rel}: sha256 differs from the manifest (modified or corrupt)")
        return problems


def read_artifact(path: str | Path) -> Artifact:
    path = Path(path)
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.is_file():
        if STAGING_MARK in path.name:
            raise UsageError(f"{path}: an unfinished build's staging directory, not an artifact (safe to delete)")
        raise UsageError(f"{path}: not a chipfit artifact (no {MANIFEST_NAME}); give build/<model>/<target>")
    try:
        manifest = json.loads(manifest_path.read_text())
    except ValueError as exc:
        raise UsageError(f"{manifest_path}: not valid JSON ({exc})") from exc
    version = manifest.get("schema_version")
    if version != MANIFEST_SCHEMA_VERSION:
        raise UsageError(
            f"{manifest_path}: manifest schema_version {version!r}; this chipfit reads {MANIFEST_SCHEMA_VERSION}"
        )
    return Artifact(path, manifest)


def find_artifacts(root: str | Path) -> list[Artifact]:
    """Every artifact at or under ``root`` (staging and failed directories excluded)."""
    root = Path(root)
    if (root / MANIFEST_NAME).is_file():
        return [read_artifact(root)]
    found = []
    for manifest in sorted(root.rglob(MANIFEST_NAME)):
        directory = manifest.parent
        if any(STAGING_MARK in part or part.startswith(".") or part.endswith(FAILED_SUFFIX)
               for part in directory.relative_to(root).parts):
            continue
        found.append(read_artifact(directory))
    return found
