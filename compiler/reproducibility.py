"""Content digests: what an artifact holds, without the bytes a toolchain varies from build to build.

TVM libraries and ONNX files come out byte-identical for the same inputs, so their content digest is
simply over their bytes. Formats that embed nondeterminism say so through their backend's
`normalizers()` (Core ML packages: generated UUIDs and map order; ONNX Runtime's ORT format: table
layout): each such file is hashed after normalising it, or left out, and the manifest records which
and why. `compare_builds` uses that record to tell an expected difference from a real one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Mapping

from targets.backend import Normalizer
from targets.files import sha256_file
from targets.manifest import FileRecord, Manifest, Reproducibility


def content_digest(root: Path, files: Mapping[str, FileRecord], normalizers: Mapping[str, Normalizer]) -> Reproducibility:
    """A digest over ``files`` (relative to ``root``) that two builds of the same inputs share."""
    h = hashlib.sha256()
    normalized: dict[str, str] = {}
    excluded: dict[str, str] = {}
    for rel in sorted(files):
        path = root / rel
        rule = normalizers.get(path.name)
        if rule is None:
            h.update(f"{rel}\0{sha256_file(path)}\n".encode())
            continue
        normalize, why = rule
        if normalize is None:
            excluded[rel] = why
            continue
        h.update(f"{rel}\0{hashlib.sha256(normalize(path)).hexdigest()}\n".encode())
        normalized[rel] = why
    return Reproducibility(h.hexdigest(), not normalized and not excluded, normalized, excluded)


def compare_builds(first: Manifest, second: Manifest) -> tuple[bool, str]:
    """Two manifests of the same cell built twice: (reproducible?, what was compared / what differs)."""
    a, b = first.files, second.files
    if sorted(a) != sorted(b):
        return False, f"different file lists: {sorted(set(a) ^ set(b))[:4]}"
    differ = [rel for rel in a if a[rel].sha256 != b[rel].sha256]
    if not differ:
        return True, "byte-identical"
    ra, rb = first.reproducibility, second.reproducibility
    covered = set(ra.normalized) | set(ra.excluded) if ra else set()
    unexplained = [rel for rel in differ if rel not in covered]
    if unexplained:
        return False, f"{len(unexplained)} file(s) differ byte for byte: {', '.join(unexplained[:3])}"
    if (ra.content_digest if ra else None) != (rb.content_digest if rb else None):
        return False, f"content digests differ ({', '.join(differ[:3])} differ beyond their known nondeterminism)"
    return True, (f"content digest equal; {len(differ)} file(s) differ only where the format embeds "
                  f"nondeterminism ({', '.join(sorted(differ)[:3])})")
