"""Output error of an artifact against the float reference."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from targets.numerics import OutputError


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def compare_outputs(reference: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray]) -> list[OutputError]:
    """Per-output error; outputs are matched by name, or by position when names differ."""
    ref_names = list(reference)
    act = dict(actual)
    if set(ref_names) != set(act):
        if len(act) != len(ref_names):
            raise ValueError(f"artifact returned {len(act)} outputs, the reference {len(ref_names)}")
        act = dict(zip(ref_names, act.values()))
    errors = []
    for name in ref_names:
        ref = np.asarray(reference[name], dtype=np.float64)
        got = np.asarray(act[name], dtype=np.float64)
        if ref.shape != got.shape:
            raise ValueError(f"output {name!r}: artifact shape {got.shape}, reference shape {ref.shape}")
        diff = got - ref
        signal = float(np.sum(ref**2))
        noise = float(np.sum(diff**2))
        sqnr = None if noise == 0.0 else (10.0 * np.log10(signal / noise) if signal > 0 else -300.0)
        errors.append(
            OutputError(
                output=name,
                max_abs_error=float(np.max(np.abs(diff))) if diff.size else 0.0,
                max_abs_reference=float(np.max(np.abs(ref))) if ref.size else 0.0,
                cosine=_cosine(ref.ravel(), got.ravel()),
                sqnr_db=sqnr,
            )
        )
    return errors
