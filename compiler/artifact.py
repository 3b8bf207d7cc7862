"""Writing artifacts: one directory per model x target, its files and ``manifest.json``, put in place atomically.

An artifact is built in a staging directory beside its destination and renamed into place only once
its manifest is written, so an interrupted or failed build never leaves a directory that looks
complete. Reading artifacts (`read_artifact`, `find_artifacts`) and the `Manifest` type are in
`targets.manifest`, where every stage can reach them.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from targets.files import sha256_file
from targets.manifest import FAILED_SUFFIX, MANIFEST_NAME, STAGING_MARK, FileRecord, Manifest

__all__ = ["FAILED_SUFFIX", "MANIFEST_NAME", "STAGING_MARK", "Staging", "hash_files", "remove_abandoned", "swap_into"]


def hash_files(root: Path, files: list[str] | tuple[str, ...]) -> dict[str, FileRecord]:
    return {rel: FileRecord(sha256_file(root / rel), (root / rel).stat().st_size) for rel in files}


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

    def commit(self, manifest: Manifest, dest: Path | None = None) -> Path:
        """Write the manifest last, flush everything, then swap the directory into ``dest``."""
        dest = dest or self.dest
        tmp = self.path / (MANIFEST_NAME + ".tmp")
        tmp.write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n")
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
