"""Request options as users spell them: command-line flags and release-file keys, both derived from
the declarations in `targets.request`, so that each option is written down once.

`add_arguments` gives an argparse parser a flag per option; `values_from_arguments` reads them back by
public name. `read_table` reads a release file's table of options with the same types and checks.
"""

from __future__ import annotations

import argparse
import types
import typing
from typing import Any, Iterable, Mapping

from targets.errors import UsageError
from targets.request import Option, options
from targets.schema import expect


def _scalar(hint: Any) -> tuple[type, bool, bool]:
    """(item type, optional?, repeated?) of a request field's type hint."""
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional, hint = True, args[0]
    if typing.get_origin(hint) is tuple:
        return typing.get_args(hint)[0], optional, True
    return hint, optional, False


def _dest(opt: Option) -> str:
    return f"opt_{opt.name}"


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers, e.g. 64,256,1024") from None


def add_arguments(parser: argparse.ArgumentParser, of: type, skip: Iterable[str] = ()) -> None:
    """A flag for every option of the request type ``of`` that has one (except the names in ``skip``)."""
    skipped = set(skip)
    for _, hint, opt in options(of):
        flag = opt.cli_flag
        if flag is None or opt.name in skipped:
            continue
        kind, _, repeated = _scalar(hint)
        kwargs: dict[str, Any] = {"dest": _dest(opt), "help": opt.help, "default": None}
        if kind is bool:
            kwargs["action"] = "store_const"
            kwargs["const"] = not opt.invert
        elif repeated and kind is int:
            kwargs["type"] = _int_list
            kwargs["metavar"] = "N,N,..."
        elif repeated:
            kwargs["action"] = "append"
        else:
            kwargs["type"] = kind
            if opt.choices:
                kwargs["choices"] = opt.choices
        if kind is not bool and "metavar" not in kwargs and not opt.choices:
            kwargs["metavar"] = opt.name.upper()
        parser.add_argument(flag, *opt.aliases, **kwargs)


def values_from_arguments(args: argparse.Namespace, of: type) -> dict[str, Any]:
    """The options given on the command line, by public name (options not given are left out)."""
    values = {}
    for _, hint, opt in options(of):
        value = getattr(args, _dest(opt), None)
        if value is not None:
            values[opt.name] = tuple(value) if isinstance(value, list) else value
    return values


def flag_of(opt: Option) -> str:
    return opt.cli_flag or opt.name


def read_table(table: Mapping[str, Any], of: type, where: str, file: str, only: Iterable[str] | None = None
               ) -> dict[str, Any]:
    """Options of the request type ``of`` from a release file's table (keys = public names), typed and checked;
    keys not in the table are left out. ``only`` limits the keys read."""
    wanted = set(only) if only is not None else None
    values: dict[str, Any] = {}
    known = {opt.name: (hint, opt) for _, hint, opt in options(of)
             if opt.release and (wanted is None or opt.name in wanted)}
    for key, value in table.items():
        if key not in known:
            continue
        hint, opt = known[key]
        kind, optional, repeated = _scalar(hint)
        name = f"{where}{key}"
        if repeated:
            items = [value] if isinstance(value, (str, int)) and not isinstance(value, bool) else value
            expect(items, list, name, file, UsageError)
            values[key] = tuple(expect(item, kind, f"{name} item", file, UsageError) for item in items)
        elif kind is float:
            values[key] = float(expect(value, (int, float), name, file, UsageError))
        else:
            values[key] = expect(value, kind, name, file, UsageError)
    return values


def release_keys(of: type) -> set[str]:
    return {opt.name for _, _, opt in options(of) if opt.release}
