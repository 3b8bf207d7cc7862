"""Small file helpers every stage shares: hashing, atomic text writes, UTC timestamps, advisory locks."""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import os
import uuid
from pathlib import Path
from typing import Iterator


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_text_atomic(path: Path, text: str) -> None:
    """Write beside ``path`` and rename: a reader sees the old file or the new one, never a part."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@contextlib.contextmanager
def file_lock(path: Path, wait: bool = True) -> Iterator[bool]:
    """An exclusive ``flock`` on ``path`` (created if missing); yields False if ``wait`` is off and it is held."""
    path = Path(path)
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


def digest_path(path: str | Path) -> str:
    """sha256 over a file's bytes, or over a folder's files (relative names and bytes, sorted)."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_file():
        h.update(sha256_file(path).encode())
        return h.hexdigest()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(f"{file.relative_to(path).as_posix()}\0{sha256_file(file)}\n".encode())
    return h.hexdigest()
