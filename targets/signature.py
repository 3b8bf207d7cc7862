"""Input/output signatures: names, shapes with symbolic dimensions, dtypes.

A dimension is an ``int`` or a ``str`` (a symbolic name such as ``"batch"``).
`parse_input_override` reads the CLI's ``--input name=1x3x224x224[:float32]``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterable, Mapping

import numpy as np

from targets.errors import UsageError
from targets.schema import from_json, to_json

Dim = int | str
DTYPES = ("float32", "float16", "float64", "int64", "int32", "int8", "uint8", "bool")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[Dim, ...]
    dtype: str

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    def shape_str(self) -> str:
        return "x".join(str(d) for d in self.shape) or "scalar"

    def to_dict(self) -> dict:
        return to_json(self)


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def is_static(self) -> bool:
        return all(t.is_static for t in self.inputs)

    def symbolic_dims(self) -> list[str]:
        seen: list[str] = []
        for t in self.inputs:
            for d in t.shape:
                if isinstance(d, str) and d not in seen:
                    seen.append(d)
        return seen

    def to_dict(self) -> dict:
        return to_json(self)

    @staticmethod
    def from_dict(data: Mapping, origin: str = "<signature>") -> "Signature":
        return from_json(Signature, data, "signature", origin)

    def concretized(self, sizes: Mapping[str, int] | None = None, default: int = 1) -> "Signature":
        """The same signature with every symbolic dim bound (to ``sizes[name]`` or ``default``)."""
        sizes = sizes or {}

        def bind(t: TensorSpec) -> TensorSpec:
            return replace(t, shape=tuple(sizes.get(d, default) if isinstance(d, str) else d for d in t.shape))

        return Signature(tuple(bind(t) for t in self.inputs), tuple(bind(t) for t in self.outputs))


def parse_input_override(text: str) -> TensorSpec:
    """``name=1x3x224x224[:float32]``; a dim may be a name (``Nx3x224x224``) to keep it symbolic."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise UsageError(f"--input {text!r}: expected NAME=DIMxDIM...[:DTYPE], e.g. image=1x3x224x224:float32")
    shape_text, _, dtype = rest.partition(":")
    dims: list[Dim] = []
    for part in shape_text.split("x"):
        part = part.strip()
        if not part:
            raise UsageError(f"--input {text!r}: empty dimension in {shape_text!r}")
        if part.isdigit():
            if int(part) <= 0:
                raise UsageError(f"--input {text!r}: dimension {part} must be positive")
            dims.append(int(part))
        elif part.isidentifier():
            dims.append(part)
        else:
            raise UsageError(f"--input {text!r}: dimension {part!r} is neither a positive integer nor a name")
    if dtype and dtype not in DTYPES:
        raise UsageError(f"--input {text!r}: unknown dtype {dtype!r}; known: {', '.join(DTYPES)}")
    return TensorSpec(name, tuple(dims), dtype)


def apply_overrides(signature: Signature, overrides: Iterable[TensorSpec], source: str) -> Signature:
    """Fix or override input shapes/dtypes; a mismatch with the model is a `UsageError`."""
    by_name = {t.name: t for t in signature.inputs}
    updated = dict(by_name)
    for o in overrides:
        if o.name not in by_name:
            raise UsageError(
                f"--input {o.name}: {source} has no input named {o.name!r}; its inputs are "
                + ", ".join(f"{t.name} ({t.shape_str()} {t.dtype})" for t in signature.inputs)
            )
        model_t = by_name[o.name]
        if len(o.shape) != len(model_t.shape):
            raise UsageError(
                f"--input {o.name}={'x'.join(map(str, o.shape))}: {source} expects rank {len(model_t.shape)} "
                f"({model_t.shape_str()}), got rank {len(o.shape)}"
            )
        for i, (want, have) in enumerate(zip(o.shape, model_t.shape)):
            if isinstance(have, int) and isinstance(want, int) and want != have:
                raise UsageError(
                    f"--input {o.name}: dimension {i} of {source}'s input is fixed at {have}, cannot be {want}"
                )
        dtype = o.dtype or model_t.dtype
        if o.dtype and o.dtype != model_t.dtype:
            raise UsageError(f"--input {o.name}: {source} takes {model_t.dtype}, not {o.dtype}")
        updated[o.name] = TensorSpec(o.name, o.shape, dtype)
    return Signature(tuple(updated[t.name] for t in signature.inputs), signature.outputs)


def dim_bindings(before: Signature, after: Signature) -> dict[str, Dim]:
    """Which symbolic dims of ``before`` are bound to a size (or renamed) in ``after``."""
    bound: dict[str, Dim] = {}
    for b, a in zip(before.inputs, after.inputs):
        for db, da in zip(b.shape, a.shape):
            if isinstance(db, str) and da != db:
                bound[db] = da
    return bound


def static_batch(signature: Signature) -> int | None:
    """The first input's leading dim when it is fixed, else None."""
    shape = signature.inputs[0].shape if signature.inputs else ()
    return shape[0] if shape and isinstance(shape[0], int) else None


def run_batched(
    fn: Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]],
    inputs: Mapping[str, np.ndarray],
    batch: int | None,
) -> dict[str, np.ndarray]:
    """Call ``fn`` on ``inputs`` in chunks of ``batch`` rows (all at once when ``batch`` is None)."""
    n = len(next(iter(inputs.values())))
    if batch is None or batch == n:
        return dict(fn(inputs))
    if n % batch:
        raise ValueError(f"{n} samples do not split into the static batch of {batch}")
    chunks = [fn({k: v[i : i + batch] for k, v in inputs.items()}) for i in range(0, n, batch)]
    return {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}


def seeded_inputs(signature: Signature, seed: int = 0, symbolic_size: int = 2,
                  integer_ranges: Mapping[str, tuple[int, int]] | None = None) -> dict[str, np.ndarray]:
    """Deterministic inputs for verification: normal floats, small non-negative integers (within
    ``integer_ranges[name]``, inclusive, where the model says which values an input takes).

    Symbolic dims get ``symbolic_size`` (2, not 1) so that a build that wrongly
    specialised the batch dimension fails verification instead of passing by luck.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for t in signature.inputs:
        shape = tuple(symbolic_size if isinstance(d, str) else d for d in t.shape)
        if t.dtype.startswith("float"):
            out[t.name] = rng.standard_normal(shape).astype(t.dtype)
        elif t.dtype == "bool":
            out[t.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            lo, hi = (integer_ranges or {}).get(t.name, (0, 7))
            out[t.name] = rng.integers(lo, hi + 1, shape).astype(t.dtype)
    return out
