"""The toolchain an artifact is built with: package versions, read from installed metadata (no imports)."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Iterable

from compiler import __version__


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def toolchain_versions(backends: Iterable) -> dict[str, str]:
    """chipfit, Python and the front-end packages, plus what each backend reports about itself."""
    versions = {"chipfit": __version__, "python": platform.python_version(), "torch": package_version("torch"),
                "onnx": package_version("onnx"), "numpy": package_version("numpy")}
    for backend in backends:
        versions.update(backend.versions())
    return dict(sorted(versions.items()))
