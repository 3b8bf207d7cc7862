"""Where chipfit keeps what outlives one command: the release build cache, kept tuning records, speed decisions."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """``$CHIPFIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/chipfit``, else ``~/.cache/chipfit``."""
    if os.environ.get("CHIPFIT_CACHE_DIR"):
        return Path(os.environ["CHIPFIT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "chipfit"
