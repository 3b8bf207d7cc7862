"""Which bytes of a Core ML package vary between builds of the same inputs, and how to hash around them.

``Manifest.json`` names the package's items by freshly generated UUIDs, and ``model.mlmodel``
serializes protobuf maps (the metadata) in hash order. The content digest reads the first with the
UUIDs replaced by the items' paths and re-serializes the second deterministically.
"""

from __future__ import annotations

import json
from pathlib import Path


def package_manifest(path: Path) -> bytes:
    data = json.loads(path.read_text())
    entries = data.get("itemInfoEntries", {})
    by_path = {uid: entry.get("path", uid) for uid, entry in entries.items()}
    data["itemInfoEntries"] = {by_path[uid]: entry for uid, entry in entries.items()}
    data["rootModelIdentifier"] = by_path.get(data.get("rootModelIdentifier"), data.get("rootModelIdentifier"))
    return json.dumps(data, sort_keys=True).encode()


def model_spec(path: Path) -> bytes:
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    spec.ParseFromString(path.read_bytes())
    return spec.SerializeToString(deterministic=True)


NORMALIZERS = {
    "Manifest.json": (package_manifest, "Core ML package manifest: generated item UUIDs replaced by item paths"),
    "model.mlmodel": (model_spec, "Core ML model spec: re-serialized deterministically (metadata map order)"),
}
