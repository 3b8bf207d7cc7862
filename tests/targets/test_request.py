"""`BuildRequest`: every option is in the cache key, one serialisation, strict reading."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from targets.errors import SchemaError, UsageError
from targets.request import (BuildRequest, ModelSource, ProfileRequest, artifact_key_form, check_request, digest_json,
                             option, options)

BASE = BuildRequest(ModelSource("/models/m.onnx", "m"), "host")


def _digest(path: str) -> str:
    return f"content-of:{path}"


def _other_value(hint, opt, current):
    """A value of the field's type that differs from ``current``."""
    if opt.choices:
        return next(c for c in opt.choices if c != current)
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    kind = args[0]
    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]
        return (item(7),) if item is int else ("x=1x2",)
    return {bool: not current if current is not None else True, int: 77, float: 0.5, str: "other"}[kind]


def _with(request, path, value):
    if len(path) == 1:
        return dataclasses.replace(request, **{path[0]: value})
    return dataclasses.replace(request, **{path[0]: _with(getattr(request, path[0]), path[1:], value)})


@pytest.mark.parametrize("path", [p for p, _, _ in options() if p[0] != "profile"], ids=".".join)
def test_every_option_changes_the_artifact_key(path):
    hint, opt = next((h, o) for p, h, o in options() if p == path)
    current = BASE
    for part in path:
        current = getattr(current, part)
    changed = _with(BASE, path, _other_value(hint, opt, current))
    assert digest_json(artifact_key_form(changed, _digest)) != digest_json(artifact_key_form(BASE, _digest))


@pytest.mark.parametrize("path", [p for p, _, _ in options(ProfileRequest)], ids=".".join)
def test_profile_options_key_the_measurement_not_the_artifact(path):
    hint, opt = next((h, o) for p, h, o in options(ProfileRequest) if p == path)
    changed = dataclasses.replace(BASE, profile=_with(BASE.profile, path, _other_value(hint, opt, getattr(BASE.profile, path[0]))))
    assert artifact_key_form(changed, _digest) == artifact_key_form(BASE, _digest)
    if path[0] not in ("timeout_s", "reuse"):  # how long to wait, and whether to reuse, decide no figure
        assert changed.profile.measurement_form() != BASE.profile.measurement_form()


def test_a_field_added_to_the_request_is_in_the_key_with_no_other_edit():
    extended = dataclasses.make_dataclass(
        "ExtendedRequest", [("new_knob", int, option(0, name="new_knob", help="a new option"))],
        bases=(BuildRequest,), frozen=True)
    a = extended(ModelSource("/m.onnx", "m"), "host")
    b = dataclasses.replace(a, new_knob=1)
    assert digest_json(artifact_key_form(a, _digest)) != digest_json(artifact_key_form(b, _digest))
    assert "new_knob" in {o.name for _, _, o in options(extended)}


def test_paths_enter_the_key_by_content():
    moved = dataclasses.replace(BASE, model=ModelSource("/elsewhere/m.onnx", "m"))
    same_content = lambda path: "same"  # noqa: E731
    assert artifact_key_form(moved, same_content) == artifact_key_form(BASE, same_content)


def test_one_serialisation_round_trips_and_reading_is_strict():
    request = BASE.with_options(precision="int8", calibration="/data/calib.npz", method="mse", fusion=False,
                                prompt_lengths=(16, 32), context=512)
    data = request.to_dict()
    assert BuildRequest.from_dict(data) == request
    with pytest.raises(SchemaError, match=r"unknown key quantization\.'methd'"):
        BuildRequest.from_dict({**data, "quantization": {**data["quantization"], "methd": "mse"}})
    del data["data"]["samples"]
    with pytest.raises(SchemaError, match=r"missing required key data\.'samples'"):
        BuildRequest.from_dict(data)
    with pytest.raises(SchemaError, match="schema_version 9"):
        BuildRequest.from_dict({**request.to_dict(), "schema_version": 9})


def test_public_names_are_unique_and_checks_name_the_option():
    names = [o.name for _, _, o in options()]
    assert len(names) == len(set(names))
    with pytest.raises(UsageError, match="unknown build option 'methd'"):
        BASE.with_options(methd="mse")
    with pytest.raises(UsageError, match=r"--block-size = 8: must be at least 16"):
        check_request(BASE.with_options(block_size=8), lambda o: o.cli_flag)
