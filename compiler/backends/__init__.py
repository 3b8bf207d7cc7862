"""The backend protocol and the backend registry.

A backend lowers a `TracedModel` for a `TargetSpec` into files in a work
directory and, where its artifacts can run on this machine, gives a runner.
Every backend lives in its own folder (``tvm/``, ``onnxruntime/``, ``coreml/``)
with the same files: ``__init__.py`` (exports ``backend``), ``lower.py``,
``runner.py``, ``options.py`` and a ``README.md``. Backends register through
the ``chipfit.backends`` entry point group, in-tree and third-party alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol, runtime_checkable

import numpy as np

from compiler.signature import Signature
from compiler.traced import TracedModel
from targets.host import HostInfo
from targets.registry import BACKENDS_GROUP, EntryPointRegistry
from targets.spec import TargetError, TargetSpec

#: Version of this protocol; a plugin written for another one is refused.
BACKEND_API_VERSION = 1


@dataclass(frozen=True)
class Lowered:
    """What `Backend.lower` wrote into its work directory."""

    files: tuple[str, ...]  # relative paths, primary file first
    signature: Signature  # the I/O signature the artifact takes (symbolic dims where kept)
    options: Mapping[str, Any]  # the backend options actually used, resolved
    passes: tuple[Mapping[str, Any], ...] = ()
    notes: tuple[str, ...] = ()
    #: Structure check for artifacts that cannot run here (e.g. op types in a Core ML program).
    structure: Mapping[str, Any] | None = None
    #: Ops the target's accelerator will not take, run by a fallback (e.g. the CPU provider).
    fallbacks: tuple[str, ...] = ()


class Runner(Protocol):
    description: str  # e.g. "onnxruntime CPUExecutionProvider on this host"

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class NotRunnable(Exception):
    """The artifact cannot run on this machine; the message says why and where it can."""


@dataclass(frozen=True)
class RunPlan:
    """How an artifact is run here: on the target's own runtime, or on a stated proxy."""

    runner: Runner
    proxy: bool = False
    note: str = ""


@runtime_checkable
class Backend(Protocol):
    name: str
    api_version: int
    consumes: str  # "onnx" or "torch" (torch backends fall back to ONNX where they say so)
    precisions: tuple[str, ...]
    #: Precisions for which the backend lowers the ONNX graph rewritten by the precision stage
    #: (the others it produces itself, e.g. Core ML's fp16 compute).
    graph_precisions: tuple[str, ...]
    #: Precisions for which the backend lowers the torch program quantized by the precision stage (PT2E).
    program_precisions: tuple[str, ...]
    symbolic_dims: bool  # True if its artifacts keep symbolic dims (e.g. the batch)
    #: Op domains besides the standard one that the backend can lower (fusions producing others are skipped).
    accepted_domains: tuple[str, ...]

    def lowers_onnx(self, model: TracedModel, precision: str) -> bool: ...

    def versions(self) -> dict[str, str]: ...

    def check_options(self, target: TargetSpec) -> None: ...

    def lower(self, model: TracedModel, target: TargetSpec, precision: str, workdir: Path) -> Lowered: ...

    def plan_run(self, artifact_dir: Path, manifest: Mapping[str, Any], target: TargetSpec, host: HostInfo) -> RunPlan: ...


def _to_backend(obj: object, name: str) -> Backend:
    if not isinstance(obj, Backend):
        raise TargetError(f"entry point must give a Backend object (see compiler/backends/__init__.py), got {obj!r}")
    if obj.api_version != BACKEND_API_VERSION:
        raise TargetError(
            f"written for backend API version {obj.api_version}, this chipfit speaks version {BACKEND_API_VERSION}"
        )
    if obj.name != name:
        raise TargetError(f"entry point name {name!r} differs from the backend's name {obj.name!r}")
    return obj


def backend_registry(entry_points: Iterable[metadata.EntryPoint] | None = None) -> EntryPointRegistry[Backend]:
    return EntryPointRegistry(BACKENDS_GROUP, "backend", entry_points, _to_backend)


@dataclass(frozen=True)
class OptionField:
    """One allowed key in a backend's options table."""

    kind: type | tuple[type, ...]
    required: bool = False
    choices: tuple[Any, ...] = ()
    default: Any = None


@dataclass(frozen=True)
class OptionSchema:
    backend: str
    fields: Mapping[str, OptionField] = field(default_factory=dict)

    def resolve(self, target: TargetSpec) -> dict[str, Any]:
        """The target's options for this backend, checked and with defaults filled in."""
        given = dict(target.options_for(self.backend))
        where = f"{target.source_file}: backend_options.{self.backend}"
        for key in given:
            if key not in self.fields:
                raise TargetError(f"{where}: unknown option {key!r}; allowed: {', '.join(sorted(self.fields))}")
        resolved: dict[str, Any] = {}
        for key, spec in self.fields.items():
            if key not in given:
                if spec.required:
                    raise TargetError(f"{where}: missing required option {key!r}")
                resolved[key] = spec.default
                continue
            value = given[key]
            if not isinstance(value, spec.kind) or (isinstance(value, bool) and spec.kind is not bool):
                raise TargetError(f"{where}.{key} has the wrong type: {value!r}")
            if spec.choices and value not in spec.choices:
                raise TargetError(f"{where}.{key} = {value!r}; choose one of {', '.join(map(str, spec.choices))}")
            resolved[key] = value
        return resolved


def package_version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def host_mismatch(target: TargetSpec, host: HostInfo) -> str | None:
    """Why this host cannot run the target's native artifacts, or None if it can."""
    reach = target.reach
    if reach.kind != "local":
        return reach.reason or f"target {target.id} is reached by {reach.kind!r}, not on this machine"
    if reach.arch and reach.arch != host.arch:
        return f"target {target.id} is {reach.arch}; this host is {host.arch}"
    missing = [f for f in reach.cpu_flags if f not in host.flags]
    if missing:
        return f"this host's CPU lacks {', '.join(missing)}, which target {target.id} requires"
    return None
