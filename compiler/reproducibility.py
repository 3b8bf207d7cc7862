"""Content digests: what an artifact holds, without the bytes a toolchain varies from build to build.

TVM libraries and ONNX files come out byte-identical for the same inputs, so their content digest is
simply over their bytes. Two formats embed nondeterminism:

* Core ML packages: ``Manifest.json`` names its items by freshly generated UUIDs, and ``model.mlmodel``
  serializes protobuf maps (the metadata) in hash order. The digest reads the first with the UUIDs
  replaced by the items' paths and re-serializes the second deterministically.
* ONNX Runtime's ORT format (``model.ort``): its flatbuffer writer lays tables out in an order that
  varies per build. It is excluded; it is generated from ``model.onnx``, which is covered.

`content_digest` says which files it normalized or left out, and why; the manifest records that.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Mapping

from compiler.artifact import sha256_file


def _coreml_manifest(path: Path) -> bytes:
    data = json.loads(path.read_text())
    entries = data.get("itemInfoEntries", {})
    by_path = {uid: entry.get("path", uid) for uid, entry in entries.items()}
    data["itemInfoEntries"] = {by_path[uid]: entry for uid, entry in entries.items()}
    data["rootModelIdentifier"] = by_path.get(data.get("rootModelIdentifier"), data.get("rootModelIdentifier"))
    return json.dumps(data, sort_keys=True).encode()


def _coreml_spec(path: Path) -> bytes:
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    spec.ParseFromString(path.read_bytes())
    return spec.SerializeToString(deterministic=True)


#: file name -> (how the file is normalized before hashing, or None to leave it out; why)
_NORMALIZED: dict[str, tuple[Callable[[Path], bytes] | None, str]] = {
    "Manifest.json": (_coreml_manifest, "Core ML package manifest: generated item UUIDs replaced by item paths"),
    "model.mlmodel": (_coreml_spec, "Core ML model spec: re-serialized deterministically (metadata map order)"),
    "model.ort": (None, "ORT-format flatbuffer: table layout varies per build; generated from model.onnx, which is covered"),
}


def content_digest(root: Path, files: Mapping[str, Any]) -> dict[str, Any]:
    """A digest over ``files`` (relative to ``root``) that two builds of the same inputs share.

    Returns ``{"content_digest", "byte_identical_expected", "normalized", "excluded"}``.
    """
    h = hashlib.sha256()
    normalized: dict[str, str] = {}
    excluded: dict[str, str] = {}
    for rel in sorted(files):
        path = root / rel
        rule = _NORMALIZED.get(path.name)
        if rule is None:
            h.update(f"{rel}\0{sha256_file(path)}\n".encode())
            continue
        normalize, why = rule
        if normalize is None:
            excluded[rel] = why
            continue
        h.update(f"{rel}\0{hashlib.sha256(normalize(path)).hexdigest()}\n".encode())
        normalized[rel] = why
    return {"content_digest": h.hexdigest(), "byte_identical_expected": not normalized and not excluded,
            "normalized": normalized, "excluded": excluded}


def compare_builds(first: Mapping[str, Any], second: Mapping[str, Any]) -> tuple[bool, str]:
    """Two manifests of the same cell built twice: (reproducible?, what was compared / what differs)."""
    a, b = first["files"], second["files"]
    if sorted(a) != sorted(b):
        return False, f"different file lists: {sorted(set(a) ^ set(b))[:4]}"
    differ = [rel for rel in a if a[rel]["sha256"] != b[rel]["sha256"]]
    if not differ:
        return True, "byte-identical"
    ra, rb = first.get("reproducibility") or {}, second.get("reproducibility") or {}
    covered = set(ra.get("normalized", {})) | set(ra.get("excluded", {}))
    unexplained = [rel for rel in differ if rel not in covered]
    if unexplained:
        return False, f"{len(unexplained)} file(s) differ byte for byte: {', '.join(unexplained[:3])}"
    if ra.get("content_digest") != rb.get("content_digest"):
        return False, f"content digests differ ({', '.join(differ[:3])} differ beyond their known nondeterminism)"
    return True, (f"content digest equal; {len(differ)} file(s) differ only where the format embeds "
                  f"nondeterminism ({', '.join(sorted(differ)[:3])})")
