"""A cell's input files (model, calibration / verification / evaluation data, spec file) as content-addressed
archives, so that a worker on another machine builds from the same bytes without the user's paths.

An input is packed as an uncompressed tar with fixed metadata (sorted names, mtime 0, owner 0), so the same
files always give the same archive and its sha256 names it in the cache (``inputs/<sha256>.tar``). A file is
packed under its own name, an ONNX file with every external-data file it references beside it, a folder
under its name with everything in it. A worker unpacks each archive once into its scratch folder and builds
from there (`compiler.release.worker` records the user's paths in the manifests, not the scratch ones).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import uuid
from pathlib import Path

from compiler.errors import ChipfitError, UsageError

SUFFIX = ".tar"


class InputError(ChipfitError):
    """An input archive is missing from the cache or does not match its digest."""


def _members(path: Path) -> list[tuple[str, Path]]:
    """(name in the archive, file) for one input."""
    if path.is_dir():
        return [(f"{path.name}/{f.relative_to(path).as_posix()}", f)
                for f in sorted(path.rglob("*")) if f.is_file() and "__pycache__" not in f.parts]
    members = [(path.name, path)]
    if path.suffix.lower() == ".onnx":
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        for location in sorted({e.value for t in proto.graph.initializer for e in t.external_data if e.key == "location"}):
            data = path.parent / location
            if data.is_file() and ".." not in Path(location).parts and not Path(location).is_absolute():
                members.append((Path(location).as_posix(), data))
    return members


def pack(path: str | Path) -> bytes:
    """The archive of one input (a file or a folder), byte for byte the same for the same files."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such file or folder (an input of the release)")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, file in _members(path):
            info = tarfile.TarInfo(name)
            info.size = file.stat().st_size
            info.mode = 0o644
            info.mtime = 0
            with file.open("rb") as handle:
                tar.addfile(info, handle)
    return buffer.getvalue()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def unpack(data: bytes, sha: str, name: str, into: Path) -> Path:
    """Unpack an archive into ``into/<sha>/`` (once: an earlier unpacking is reused); returns the input's path
    there (``name``: the file or folder the archive was packed from)."""
    folder = into / sha
    if not folder.is_dir():
        if digest(data) != sha:
            raise InputError(f"input {sha[:12]}: the archive's sha256 is {digest(data)[:12]}; the cache copy is damaged")
        staging = into / f".{sha}.{os.getpid()}-{uuid.uuid4().hex[:8]}"
        staging.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(staging, filter="data")
        try:
            staging.rename(folder)
        except OSError:  # another cell of this worker unpacked it first: the same bytes
            shutil.rmtree(staging, ignore_errors=True)
    return folder / name
