"""The content-addressed build cache.

A cell's key is the sha256 of its *components*, each itself a digest, all derived from the cell's
`BuildRequest` (`key_components`): the source model (with its external data), the calibration /
verification / evaluation data, every other option of the request ("settings": whatever the request
holds, so a new option is in the key with no edit here), the target spec with its backends' options
as resolved on this host, and the toolchain (package versions, each backend's fingerprint: its
package version and a digest of its code, and chipfit's own source). The same inputs give the same
key on any machine; changing one target's spec changes only that target's keys.

Layout under the cache root::

    entries/<key>/entry.json         what was built, from what, and each artifact's manifest sha256
    entries/<key>/<artifact dir>/    the artifacts, exactly as built
    inputs/<sha256>.tar              a cell's input files, for workers on other machines (`inputs`)
    locks/<key>.lock                 flock'ed while a process looks up or builds the key
    tmp/<host id>/                   staging for builds and commits; each host removes only its own
                                     abandoned ones (a process id means nothing on another machine)

An entry is committed by renaming a complete staging directory, so it either exists whole or not at
all. Every lookup re-hashes the entry's files against its manifests: a corrupt entry is removed and
rebuilt, never used. A cache given as a URL (``s3://...``, ``file://...``) is `UrlBuildCache`
(`compiler.release.url_cache`): the same layout, committed by put-if-absent instead of rename and lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import onnx

from compiler.artifact import MANIFEST_NAME, STAGING_MARK, remove_abandoned
from compiler.errors import UsageError
from compiler.release import inputs
from targets.files import digest_path, file_lock, sha256_file, write_text_atomic
from targets.manifest import read_artifact
from targets.profile import PROFILE_NAME
from targets.request import BuildRequest, artifact_key_form, digest_json
from compiler.cache_dir import default_cache_dir  # noqa: F401 (re-exported for the CLI)

ENTRY_NAME = "entry.json"
ENTRY_SCHEMA_VERSION = 1
#: chipfit's own code that shapes an artifact; a change to it invalidates every entry.
SOURCE_PACKAGES = ("compiler", "targets", "calibration")


def host_id() -> str:
    """This machine's name in the cache's staging folders: ``$CHIPFIT_HOST_ID``, else the host name.

    Set it where host names repeat (containers) or to run several "hosts" on one machine (the tests).
    """
    name = os.environ.get("CHIPFIT_HOST_ID") or socket.gethostname() or "localhost"
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def is_url(location: str | Path) -> bool:
    return "://" in str(location)


def default_cache_max_gb() -> float:
    """The cache's size cap: ``$CHIPFIT_CACHE_MAX_GB``, else 10 GB (entries beyond it go, least recently used first)."""
    value = os.environ.get("CHIPFIT_CACHE_MAX_GB")
    try:
        return float(value) if value else 10.0
    except ValueError:
        raise UsageError(f"CHIPFIT_CACHE_MAX_GB={value!r}: not a number of gigabytes") from None


def digest_model_source(path: str) -> str:
    """The model file (or model folder), and for ONNX every external-data file it references."""
    if path == "example":
        from compiler import example

        package = Path(example.__file__).parent
        return digest_path(package)
    file = Path(path)
    if file.is_dir():
        from compiler.frontend import is_decoder_folder

        if is_decoder_folder(file):
            return digest_path(file)
        from compiler.frontend.optimum import ENVIRONMENT
        from compiler.isolated.environment import inspect_environment

        # exported by optimum in its environment: another exporter stack makes another graph
        return digest_json({"folder": digest_path(file), "exporter": inspect_environment(ENVIRONMENT).packages_digest()})
    h = hashlib.sha256(sha256_file(file).encode())
    if file.suffix.lower() == ".onnx":
        try:
            proto = onnx.load(str(file), load_external_data=False)
        except Exception as exc:
            raise UsageError(f"{file}: not a readable ONNX model ({type(exc).__name__}: {exc})") from None
        locations = sorted({entry.value for tensor in proto.graph.initializer for entry in tensor.external_data
                            if entry.key == "location"})
        for location in locations:
            data = file.parent / location
            h.update(f"{location}\0{sha256_file(data) if data.is_file() else 'missing'}\n".encode())
    return h.hexdigest()


def digest_source_code() -> str:
    """chipfit's own Python code (the packages that build artifacts)."""
    import compiler

    root = Path(compiler.__file__).parent.parent
    h = hashlib.sha256()
    for package in SOURCE_PACKAGES:
        for file in sorted((root / package).rglob("*.py")):
            h.update(f"{file.relative_to(root).as_posix()}\0{sha256_file(file)}\n".encode())
    return h.hexdigest()


def cache_key(components: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(dict(sorted(components.items()))).encode()).hexdigest()


def toolchain_digest(backends) -> str:
    return digest_json(toolchain_of(backends))


def toolchain_of(backends) -> dict[str, str]:
    """The toolchain fingerprint (package versions, backends' code) whose digest is a key's ``toolchain``."""
    from compiler.toolchain import toolchain_fingerprint

    return toolchain_fingerprint(backends)


def key_components(request: BuildRequest, spec, backends, host, toolchain: str | None = None,
                   source_code: str | None = None) -> dict[str, str]:
    """The digests a cell's cache key is made of, from its request (precision resolved), its target spec, the
    backends that build it (their options resolved on ``host``) and their toolchain (`toolchain_digest`)."""
    def digest(path: str) -> str:
        if path == request.spec_file:
            return spec.digest  # the spec's content, not its file's formatting
        if path == request.model.path:
            return digest_model_source(path)
        return digest_path(path)

    form = artifact_key_form(request, digest)
    model = dict(form["model"])
    source = model.pop("path")
    settings = {k: v for k, v in form.items() if k not in ("model", "data", "spec_file")} | {"model": model}
    return {
        "source_model": digest_json(source),
        "data": digest_json(form["data"]),
        "settings": digest_json(settings),
        "target_spec": digest_json({"spec": spec.digest,
                                    "options": {b.name: b.resolve_options(spec, host) for b in backends}}),
        "toolchain": toolchain or toolchain_digest(backends),
        "chipfit_source": source_code or digest_source_code(),
    }


def entry_problem(key: str, path: Path) -> str | None:
    """What is wrong with the entry folder ``path`` for ``key`` (its record, its artifacts' files), or None."""
    try:
        record = json.loads((path / ENTRY_NAME).read_text())
    except (OSError, ValueError) as exc:
        return f"{ENTRY_NAME} unreadable: {exc}"
    if record.get("schema_version") != ENTRY_SCHEMA_VERSION or record.get("key") != key:
        return f"{ENTRY_NAME} is for schema {record.get('schema_version')!r}, key {str(record.get('key'))[:12]}"
    for name, manifest_sha in record.get("artifacts", {}).items():
        artifact_dir = path / name
        manifest = artifact_dir / MANIFEST_NAME
        if not manifest.is_file():
            return f"{name}/{MANIFEST_NAME} missing"
        if sha256_file(manifest) != manifest_sha:
            return f"{name}/{MANIFEST_NAME} sha256 differs from the entry's"
        try:
            problems = read_artifact(artifact_dir).file_problems()
        except UsageError as exc:
            return str(exc)
        if problems:
            return f"{name}: {problems[0]}"
    return None


@dataclass(frozen=True)
class CacheEntry:
    key: str
    path: Path
    record: Mapping[str, Any]

    @property
    def artifacts(self) -> list[str]:
        return list(self.record["artifacts"])


class BuildCache:
    """The cache in a folder (local, or a shared POSIX/NFS path mounted at the same place on every worker)."""

    def __init__(self, root: str | Path, host: str | None = None) -> None:
        self.root = Path(root)
        self.host = host or host_id()

    @property
    def location(self) -> str:
        """Where a worker finds this cache (absolute: a Dask worker's working folder is not the driver's)."""
        return str(self.root.absolute())

    @property
    def calibration_dir(self) -> Path:
        """Calibration statistics, kept between releases (a local folder)."""
        return self.root / "calibration"

    def _entry_dir(self, key: str) -> Path:
        return self.root / "entries" / key

    def entries(self) -> list[tuple[str, float, int]]:
        """(key, last use as a timestamp, bytes) of every entry, least recently used first."""
        found = []
        for path in (self.root / "entries").glob("*"):
            record = path / ENTRY_NAME
            size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            found.append((path.name, record.stat().st_mtime if record.exists() else 0.0, size))
        return sorted(found, key=lambda e: e[1])

    def prune(self, max_age_s: float | None = None, max_bytes: int | None = None,
              now: float | None = None) -> list[str]:
        """Remove entries unused for ``max_age_s``, then least recently used ones until under ``max_bytes``.

        An entry whose lock another process holds (it is being used) is left alone.
        """
        import time

        now = time.time() if now is None else now
        entries = self.entries()
        total = sum(e[2] for e in entries)
        removed = []
        for key, used, size in entries:
            too_old = max_age_s is not None and now - used > max_age_s
            too_big = max_bytes is not None and total > max_bytes
            if not (too_old or too_big):
                continue
            with self.lock(key, wait=False) as held:
                if held and self._entry_dir(key).exists():
                    self._discard(self._entry_dir(key))
                    removed.append(key)
                    total -= size
        return removed

    @contextlib.contextmanager
    def lock(self, key: str, wait: bool = True) -> Iterator[bool]:
        """Held while a process looks up, builds or commits ``key``; others wait (and then hit).

        With ``wait`` off, yields False at once if another process holds it.
        """
        with file_lock(self.root / "locks" / f"{key}.lock", wait) as held:
            yield held

    def lookup(self, key: str) -> tuple[CacheEntry | None, str]:
        """The verified entry for ``key``, or None and why (empty: never built; else what was wrong).

        Call with the key's lock held. A corrupt entry is removed before returning.
        """
        path = self._entry_dir(key)
        if not path.exists():
            return None, ""
        problem = entry_problem(key, path)
        if problem is None:
            os.utime(path / ENTRY_NAME)  # last use, for `prune`
            return CacheEntry(key, path, json.loads((path / ENTRY_NAME).read_text())), ""
        self._discard(path)
        return None, f"cache entry {key[:12]} was corrupt ({problem}); removed and rebuilt"

    def peek(self, key: str) -> tuple[bool, str]:
        """Like `lookup`, without using or removing anything: (usable?, what is wrong if not)."""
        path = self._entry_dir(key)
        if not path.exists():
            return False, ""
        problem = entry_problem(key, path)
        return problem is None, f"cache entry {key[:12]} is corrupt ({problem})" if problem else ""

    def _discard(self, path: Path) -> None:
        doomed = self.root / "tmp" / f"discard-{uuid.uuid4().hex[:8]}"
        doomed.parent.mkdir(parents=True, exist_ok=True)
        path.replace(doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    def staging(self, label: str) -> Path:
        """A fresh directory for one build in this host's staging folder; the ones there left by dead processes
        are removed first (another host's are not: its process ids mean nothing here)."""
        tmp = self.root / "tmp"
        mine = tmp / self.host
        mine.mkdir(parents=True, exist_ok=True)
        remove_abandoned(tmp, f"*{STAGING_MARK}*")  # left by chipfit versions before host folders
        remove_abandoned(mine, f"*{STAGING_MARK}*")
        path = mine / f"{label}{STAGING_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        path.mkdir()
        return path

    def keep_profile(self, key: str, artifact: str, text: str) -> None:
        """A profile measured for an entry's artifact, kept beside it (call with the key's lock held)."""
        folder = self._entry_dir(key) / artifact
        if folder.is_dir():
            write_text_atomic(folder / PROFILE_NAME, text)

    def put_input(self, path: str | Path) -> str:
        """Store an input file or folder as a content-addressed archive; returns its sha256."""
        data = inputs.pack(path)
        sha = inputs.digest(data)
        dest = self.root / "inputs" / f"{sha}{inputs.SUFFIX}"
        if not dest.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}")
            tmp.write_bytes(data)
            tmp.replace(dest)
        return sha

    def get_input(self, sha: str, name: str, into: Path) -> Path:
        """The input ``sha`` unpacked under ``into`` (once); ``name``: the file or folder it was packed from."""
        if (into / sha).is_dir():
            return into / sha / name
        source = self.root / "inputs" / f"{sha}{inputs.SUFFIX}"
        if not source.is_file():
            raise inputs.InputError(f"input {sha[:12]} ({name}) is not in the cache {self.location}")
        return inputs.unpack(source.read_bytes(), sha, name, into)

    def commit(self, key: str, artifacts: Mapping[str, Path], record: Mapping[str, Any]) -> CacheEntry:
        """Copy built artifact directories (name -> path) in as one entry; call with the key's lock held."""
        staged = self.staging(f"entry-{key[:12]}")
        manifests = {}
        for name, source in artifacts.items():
            shutil.copytree(source, staged / name, symlinks=True)
            manifests[name] = sha256_file(staged / name / MANIFEST_NAME)
        full = {"schema_version": ENTRY_SCHEMA_VERSION, "key": key, **record, "artifacts": manifests}
        (staged / ENTRY_NAME).write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
        dest = self._entry_dir(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():  # a corrupt entry another process left between our lookup and now: never reached
            self._discard(dest)  # under the lock, but kept for safety against manual edits
        staged.replace(dest)
        return CacheEntry(key, dest, full)
