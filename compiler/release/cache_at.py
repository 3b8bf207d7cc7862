"""Which build cache a location names: a folder, or an fsspec URL mirrored into a local folder.

Its own module because both kinds of cache build on `compiler.release.cache`, and the choice between them
must not make either import the other.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from compiler.cache_dir import default_cache_dir
from compiler.release.cache import BuildCache, is_url
from compiler.release.url_cache import UrlBuildCache


def open_cache(location: str | Path, host: str | None = None, mirror: Path | None = None):
    """The build cache at ``location``: a folder (`BuildCache`), or an fsspec URL (`UrlBuildCache`, whose entries
    are copied into ``mirror``, a local folder: default one per URL under ``$CHIPFIT_CACHE_DIR/mirrors``)."""
    if not is_url(location):
        return BuildCache(location, host)
    if mirror is None:
        mirror = default_cache_dir() / "mirrors" / hashlib.sha256(str(location).encode()).hexdigest()[:16]
    return UrlBuildCache(str(location), mirror, host)
