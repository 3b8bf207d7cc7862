"""Registries over Python entry points: one mechanism for in-tree and third-party plugins.

Targets register in the ``chipfit.targets`` group (each entry point resolves to a
zero-argument callable returning a `TargetSpec`); backends in ``chipfit.backends``.
Entry points are loaded lazily, one by one: a plugin that fails to import is
reported by name with its error and the others keep working. There is no global
registry object: callers make one and pass it on.
"""

from __future__ import annotations

from importlib import metadata
from typing import Callable, Generic, Iterable, TypeVar

from typing import TYPE_CHECKING

from targets.errors import TargetError
from targets.spec import TargetSpec

if TYPE_CHECKING:
    from targets.backend import Backend

TARGETS_GROUP = "chipfit.targets"
BACKENDS_GROUP = "chipfit.backends"

T = TypeVar("T")


class PluginLoadError(TargetError):
    """An entry point exists but its plugin cannot be loaded."""


class EntryPointRegistry(Generic[T]):
    """Name -> lazily loaded plugin object, from one entry point group."""

    def __init__(
        self,
        group: str,
        kind: str,
        entry_points: Iterable[metadata.EntryPoint] | None = None,
        convert: Callable[[object, str], T] | None = None,
    ) -> None:
        eps = list(metadata.entry_points(group=group) if entry_points is None else entry_points)
        self._kind = kind
        self._group = group
        self._eps = {ep.name: ep for ep in sorted(eps, key=lambda e: e.name)}
        self._convert = convert
        self._loaded: dict[str, T] = {}
        self._extra: dict[str, T] = {}

    def including(self, extra: dict[str, T], origin: str) -> "EntryPointRegistry[T]":
        """A new registry that also holds ``extra`` (e.g. spec files named in a release file).

        A name already registered is refused rather than shadowed: two different specs under one id
        would make artifacts and profiles ambiguous.
        """
        for name in extra:
            if name in self._eps:
                raise TargetError(f"{origin}: {self._kind} {name!r} is already registered (entry point "
                                  f"{self._eps[name].value}); give the spec file another id")
        other = EntryPointRegistry(self._group, self._kind, self._eps.values(), self._convert)
        other._loaded = {**self._loaded, **extra}
        other._extra = {**self._extra, **extra}
        return other

    def names(self) -> list[str]:
        return list(self._eps) + [n for n in self._extra if n not in self._eps]

    def __contains__(self, name: str) -> bool:
        return name in self._eps or name in self._extra

    def get(self, name: str) -> T:
        if name in self._loaded:
            return self._loaded[name]
        ep = self._eps.get(name)
        if ep is None:
            known = ", ".join(self._eps) or "(none registered)"
            raise TargetError(f"unknown {self._kind} {name!r}; known {self._kind}s: {known}")
        try:
            obj = ep.load()
            if self._convert is not None:
                obj = self._convert(obj, name)
        except TargetError as exc:
            raise PluginLoadError(f"{self._kind} {name!r} (entry point {ep.value}, group {self._group}): {exc}") from exc
        except Exception as exc:
            raise PluginLoadError(
                f"{self._kind} {name!r} failed to load (entry point {ep.value}, group {self._group}): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        self._loaded[name] = obj
        return obj

    def load_all(self) -> tuple[dict[str, T], dict[str, str]]:
        """Every plugin that loads, and an error message for each that does not."""
        ok: dict[str, T] = {}
        failed: dict[str, str] = {}
        for name in self.names():
            try:
                ok[name] = self.get(name)
            except PluginLoadError as exc:
                failed[name] = str(exc)
        return ok, failed


def _to_spec(obj: object, name: str) -> TargetSpec:
    spec = obj() if callable(obj) and not isinstance(obj, TargetSpec) else obj
    if not isinstance(spec, TargetSpec):
        raise TargetError(f"entry point must give a TargetSpec (or a callable returning one), got {type(spec).__name__}")
    if spec.id != name:
        raise TargetError(f"entry point name {name!r} differs from the spec's id {spec.id!r} ({spec.source_file})")
    return spec


def target_registry(entry_points: Iterable[metadata.EntryPoint] | None = None) -> EntryPointRegistry[TargetSpec]:
    return EntryPointRegistry(TARGETS_GROUP, "target", entry_points, _to_spec)


def backend_registry(entry_points: Iterable[metadata.EntryPoint] | None = None) -> "EntryPointRegistry[Backend]":
    from targets.backend import check_backend

    return EntryPointRegistry(BACKENDS_GROUP, "backend", entry_points, check_backend)


def compute_unit(backends: "EntryPointRegistry[Backend]", name: str) -> str:
    """The kind of compute unit backend ``name`` declares; "" where it declares none or is not installed here (its
    artifacts are then estimated on the chip as a whole, or on the unit the spec assigns it)."""
    try:
        return backends.get(name).capabilities.compute_unit
    except TargetError:
        return ""

