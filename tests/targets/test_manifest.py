"""The manifest is read through its type: unknown, missing and mistyped keys are refused by name."""

from __future__ import annotations

import json

import pytest

from targets.errors import SchemaError
from targets.manifest import Manifest, read_artifact
from tests.factories import make_manifest


def _write(tmp_path, data) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps(data))


def test_a_manifest_round_trips():
    manifest = make_manifest({})
    assert Manifest.from_dict(manifest.to_dict()) == manifest


def test_unknown_and_missing_keys_are_named(tmp_path):
    data = make_manifest({}).to_dict()
    _write(tmp_path, {**data, "backned": {"name": "x"}})
    with pytest.raises(SchemaError, match=r"manifest.json: unknown key 'backned'"):
        read_artifact(tmp_path)
    del data["numerics"]["status"]
    _write(tmp_path, data)
    with pytest.raises(SchemaError, match=r"missing required key numerics\.'status'"):
        read_artifact(tmp_path)


def test_a_mistyped_value_is_named(tmp_path):
    data = make_manifest({}).to_dict()
    data["files"] = {"model.bin": {"sha256": "ab", "bytes": "many"}}
    _write(tmp_path, data)
    with pytest.raises(SchemaError, match=r"files\.model\.bin\.bytes must be int, got str 'many'"):
        read_artifact(tmp_path)
