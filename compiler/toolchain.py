"""The toolchain an artifact is built with: package versions, read from installed metadata (no imports)."""

from __future__ import annotations

import platform
from typing import Iterable

from compiler import __version__


from targets.backend import package_version


def toolchain_versions(backends: Iterable) -> dict[str, str]:
    """chipfit, Python and the front-end packages, plus what each backend reports about itself."""
    versions = {"chipfit": __version__, "python": platform.python_version(), "torch": package_version("torch"),
                "onnx": package_version("onnx"), "numpy": package_version("numpy")}
    for backend in backends:
        versions.update(backend.versions())
    return dict(sorted(versions.items()))


def toolchain_fingerprint(backends: Iterable) -> dict[str, str]:
    """What the build cache key holds of the toolchain: the versions above and each backend's fingerprint
    (its package's version and a digest of its own code), so an edited plugin never gets a stale artifact."""
    backends = list(backends)
    data = toolchain_versions(backends)
    for backend in backends:
        data.update(backend.fingerprint())
    return dict(sorted(data.items()))
