"""The build cache behind an fsspec URL (``s3://bucket/prefix``, ``gs://...``, ``file:///shared/cache``).

An object store has neither ``flock`` nor an atomic rename of a folder, so an entry is committed the way
object stores allow: its artifacts are uploaded under a folder of their own (``entries/<key>/<commit>/``,
the commit id names the host and a random part), then ``entries/<key>/entry.json`` is written
put-if-absent, last, as the commit marker. Two runs that build the same key both upload; the first marker
wins, the other run removes its upload and uses the winner's entry (entries are content-addressed: either
is right). A reader sees an entry only once its marker exists, and checks every file against the
manifests as for a local cache.

Entries are used from a local mirror (a `BuildCache` folder): a lookup downloads the committed entry there
once, and `dist/` is filled from the mirror. Staging, calibration statistics and the size cap apply to the
mirror; the shared store's own retention (an S3 lifecycle rule, say) decides how long its entries live.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping

from compiler.artifact import MANIFEST_NAME
from compiler.errors import ChipfitError
from compiler.release import inputs
from compiler.release.cache import (ENTRY_NAME, ENTRY_SCHEMA_VERSION, BuildCache, CacheEntry, entry_problem,
                                    host_id)
from targets.files import sha256_file
from targets.profile import PROFILE_NAME


class CacheError(ChipfitError):
    """The shared store did not give back what was committed to it."""


class UrlBuildCache:
    def __init__(self, url: str, mirror: str | Path, host: str | None = None) -> None:
        import fsspec

        self.url = url.rstrip("/")
        self.fs, self.base = fsspec.core.url_to_fs(self.url)
        self.host = host or host_id()
        self.mirror = BuildCache(mirror, self.host)

    @property
    def location(self) -> str:
        return self.url

    @property
    def root(self) -> Path:
        return self.mirror.root

    @property
    def calibration_dir(self) -> Path:
        return self.mirror.calibration_dir

    def _remote(self, *parts: str) -> str:
        return posixpath.join(self.base, *parts)

    @contextlib.contextmanager
    def lock(self, key: str, wait: bool = True) -> Iterator[bool]:
        """Guards the mirror's copy only: the store itself is committed put-if-absent (first commit wins)."""
        with self.mirror.lock(key, wait) as held:
            yield held

    def _marker(self, key: str) -> dict[str, Any] | None:
        """The committed entry's record, or None while there is none (or it is still being written)."""
        try:
            record = json.loads(self.fs.cat_file(self._remote("entries", key, ENTRY_NAME)))
        except (FileNotFoundError, ValueError):
            return None
        return record if isinstance(record, dict) and record.get("commit") else None

    def lookup(self, key: str) -> tuple[CacheEntry | None, str]:
        record = self._marker(key)
        if record is None:
            return None, ""
        local = self.mirror.root / "entries" / key
        if local.is_dir() and _commit_of(local) == record["commit"] and entry_problem(key, local) is None:
            return CacheEntry(key, local, json.loads((local / ENTRY_NAME).read_text())), ""
        staged = self.mirror.staging(f"download-{key[:12]}")
        try:
            prefix = self._remote("entries", key, record["commit"])
            for remote in self.fs.find(prefix):
                dest = staged / posixpath.relpath(remote, prefix)
                dest.parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(remote, str(dest))
            (staged / ENTRY_NAME).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
            problem = entry_problem(key, staged)
            if problem is not None:
                self._remove(key, record["commit"])
                return None, f"cache entry {key[:12]} was corrupt ({problem}); removed and rebuilt"
            if local.exists():
                self.mirror._discard(local)
            local.parent.mkdir(parents=True, exist_ok=True)
            staged.replace(local)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
        return CacheEntry(key, local, record), ""

    def peek(self, key: str) -> tuple[bool, str]:
        """Whether the store holds a committed entry (its files are checked when it is used)."""
        return self._marker(key) is not None, ""

    def _remove(self, key: str, commit: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._remote("entries", key, ENTRY_NAME))
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self._remote("entries", key, commit), recursive=True)

    def _put_if_absent(self, path: str, data: bytes) -> bool:
        """Write ``path`` unless it exists; False if it did (another writer was first)."""
        self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
        try:
            with self.fs.open(path, "xb") as handle:
                handle.write(data)
            return True
        except FileExistsError:
            return False
        except (NotImplementedError, ValueError):
            # a filesystem without exclusive creation: check, then write (a narrow race; the entries are
            # content-addressed, so the later writer's marker names an upload as good as the first's)
            if self.fs.exists(path):
                return False
            self.fs.pipe_file(path, data)
            return True

    def commit(self, key: str, artifacts: Mapping[str, Path], record: Mapping[str, Any]) -> CacheEntry:
        commit = f"{self.host}-{uuid.uuid4().hex[:12]}"
        manifests = {}
        for name, source in artifacts.items():
            for file in sorted(p for p in Path(source).rglob("*") if p.is_file()):
                remote = self._remote("entries", key, commit, name, file.relative_to(source).as_posix())
                self.fs.makedirs(posixpath.dirname(remote), exist_ok=True)
                self.fs.put_file(str(file), remote)
            manifests[name] = sha256_file(Path(source) / MANIFEST_NAME)
        full = {"schema_version": ENTRY_SCHEMA_VERSION, "key": key, **record, "commit": commit,
                "artifacts": manifests}
        data = (json.dumps(full, indent=2, sort_keys=True) + "\n").encode()
        if not self._put_if_absent(self._remote("entries", key, ENTRY_NAME), data):
            with contextlib.suppress(FileNotFoundError):  # another run committed first: its entry is used
                self.fs.rm(self._remote("entries", key, commit), recursive=True)
        entry, problem = self.lookup(key)
        if entry is None:
            raise CacheError(f"cache entry {key[:12]} could not be read back from {self.url}: "
                                    f"{problem or 'no commit marker after writing it'}")
        return entry

    def keep_profile(self, key: str, artifact: str, text: str) -> None:
        self.mirror.keep_profile(key, artifact, text)
        record = self._marker(key)
        if record is not None:
            with contextlib.suppress(OSError):  # a profile is a convenience: the entry stands without it
                self.fs.pipe_file(self._remote("entries", key, record["commit"], artifact, PROFILE_NAME),
                                  text.encode())

    def staging(self, label: str) -> Path:
        return self.mirror.staging(label)

    def entries(self) -> list[tuple[str, float, int]]:
        return self.mirror.entries()

    def prune(self, max_age_s: float | None = None, max_bytes: int | None = None,
              now: float | None = None) -> list[str]:
        """Prunes the local mirror (the shared store's retention is the store's own policy)."""
        return self.mirror.prune(max_age_s, max_bytes, now)

    def put_input(self, path: str | Path) -> str:
        data = inputs.pack(path)
        sha = inputs.digest(data)
        self._put_if_absent(self._remote("inputs", f"{sha}{inputs.SUFFIX}"), data)
        return sha

    def get_input(self, sha: str, name: str, into: Path) -> Path:
        if (into / sha).is_dir():
            return into / sha / name
        try:
            data = self.fs.cat_file(self._remote("inputs", f"{sha}{inputs.SUFFIX}"))
        except FileNotFoundError:
            raise inputs.InputError(f"input {sha[:12]} ({name}) is not in the cache {self.url}") from None
        return inputs.unpack(data, sha, name, into)


def _commit_of(local: Path) -> str | None:
    try:
        return json.loads((local / ENTRY_NAME).read_text()).get("commit")
    except (OSError, ValueError):
        return None
