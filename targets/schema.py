"""One checked reader for every table chipfit reads, and one serialisation for its frozen dataclasses.

Spec files, release files, backend options and the records chipfit writes (requests, manifests,
profiles, comparisons) are all read through here, so that an unknown or missing key is always an
error naming the file and the key, and a value of the wrong type says what it should have been.

`to_json` / `from_json` turn a frozen dataclass into JSON-able data and back, driven by its type
hints: every field is written, and reading refuses unknown keys and missing keys by name. Nested
dataclasses, ``tuple[X, ...]``, ``Mapping[str, X]``, ``X | None`` and JSON values (``Any``) are handled.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Iterable, Mapping, TypeVar

from targets.errors import SchemaError, UsageError

T = TypeVar("T")


# --- checked tables ------------------------------------------------------------------------------


def check_keys(table: Mapping[str, Any], allowed: Mapping[str, bool] | Iterable[str], where: str, origin: str,
               error: type[UsageError] = SchemaError) -> None:
    """Refuse keys not in ``allowed`` and, where ``allowed`` maps key -> required, missing required keys."""
    required = allowed if isinstance(allowed, Mapping) else {k: False for k in allowed}
    for key in table:
        if key not in required:
            raise error(f"{origin}: unknown key {where}{key!r}; allowed here: {', '.join(sorted(required))}")
    for key, needed in required.items():
        if needed and key not in table:
            raise error(f"{origin}: missing required key {where}{key!r}")


def kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def expect(value: Any, kind: type | tuple[type, ...], name: str, origin: str,
           error: type[UsageError] = SchemaError) -> Any:
    """``value`` if it is a ``kind`` (a bool is never taken for a number), else an error naming ``name``."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        raise error(f"{origin}: {name} must be {kind_name(kind)}, got {type(value).__name__} {value!r}")
    return value


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --- dataclasses <-> JSON ------------------------------------------------------------------------


def to_json(obj: Any) -> Any:
    """JSON-able data for a frozen dataclass (every field), tuple, mapping or plain value."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    return obj


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def from_json(cls: type[T], data: Any, where: str = "", origin: str = "<record>") -> T:
    """Build ``cls`` from `to_json` data; unknown and missing keys are `SchemaError`s naming the key."""
    return _convert(cls, data, where, origin)


def _convert(hint: Any, value: Any, where: str, origin: str) -> Any:
    if hint is Any:
        return value
    origin_type = typing.get_origin(hint)
    if origin_type in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _convert(option, value, where, origin)
            except SchemaError as exc:
                errors.append(str(exc))
        raise SchemaError(errors[0] if len(errors) == 1 else f"{origin}: {where or 'value'} matches none of "
                          f"{[getattr(o, '__name__', str(o)) for o in options]}: {value!r}")
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise SchemaError(f"{origin}: {where or hint.__name__} must be a table, got {type(value).__name__}")
        fields = {f.name: f for f in dataclasses.fields(hint) if f.init}
        derived = {f.name: False for f in dataclasses.fields(hint) if not f.init}  # written, recomputed on reading
        check_keys(value, {**derived, **{name: True for name in fields}}, f"{where}." if where else "", origin)
        hints = _hints(hint)
        return hint(**{name: _convert(hints[name], value[name], f"{where}.{name}" if where else name, origin)
                       for name in fields})
    if origin_type in (tuple, list, typing.Sequence, _abc_sequence()):
        if not isinstance(value, (list, tuple)):
            raise SchemaError(f"{origin}: {where} must be a list, got {type(value).__name__} {value!r}")
        args = typing.get_args(hint)
        item = args[0] if args else Any
        if len(args) == 2 and args[1] is Ellipsis or len(args) == 1 or not args:
            return tuple(_convert(item, v, f"{where}[{i}]", origin) for i, v in enumerate(value))
        if len(args) != len(value):
            raise SchemaError(f"{origin}: {where} must have {len(args)} items, got {len(value)}")
        return tuple(_convert(a, v, f"{where}[{i}]", origin) for i, (a, v) in enumerate(zip(args, value)))
    if origin_type in (dict, typing.Mapping, _abc_mapping()):
        if not isinstance(value, Mapping):
            raise SchemaError(f"{origin}: {where} must be a table, got {type(value).__name__} {value!r}")
        args = typing.get_args(hint)
        item = args[1] if len(args) == 2 else Any
        return {k: _convert(item, v, f"{where}.{k}", origin) for k, v in value.items()}
    if hint is float:
        return float(expect(value, (int, float), where, origin))
    if isinstance(hint, type):
        return expect(value, hint, where, origin)
    return value


def _abc_sequence() -> Any:
    import collections.abc

    return collections.abc.Sequence


def _abc_mapping() -> Any:
    import collections.abc

    return collections.abc.Mapping


def check_version(data: Any, version: int, kind: str, origin: str, hint: str = "") -> None:
    """A record written as ``{"schema_version": N, ...}`` of this chipfit's version N, else a `SchemaError`."""
    if not isinstance(data, Mapping):
        raise SchemaError(f"{origin}: not a {kind} (expected a JSON object)")
    found = data.get("schema_version")
    if found != version:
        raise SchemaError(f"{origin}: {kind} schema_version {found!r}; this chipfit reads {version}" +
                          (f". {hint}" if hint else ""))
