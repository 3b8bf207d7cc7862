"""Sample readers: a `.npz` of batched arrays keyed by input name, or a folder of `.npy`/`.npz` files.

Every sample is checked against the model's input signature before any work;
a wrong shape or dtype is an error naming the sample file and the input.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

from calibration.errors import CalibrationError


@dataclass(frozen=True)
class CalibrationSet:
    """Samples, one dict (input name -> array with batch dim 1 or the model's batch) per sample."""

    samples: tuple[Mapping[str, np.ndarray], ...] = field(repr=False)
    origin: str  # folder/file path, "bundled example samples" or "random (seed N)"
    digest: str
    is_random: bool = False

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Mapping[str, np.ndarray]]:
        return iter(self.samples)

    def batched(self, limit: int | None = None) -> dict[str, np.ndarray]:
        """All samples concatenated along the batch dimension (for verification runs)."""
        chosen = self.samples[:limit] if limit else self.samples
        return {name: np.concatenate([s[name] for s in chosen]) for name in chosen[0]}


def _digest(arrays: Sequence[Mapping[str, np.ndarray]]) -> str:
    h = hashlib.sha256()
    for sample in arrays:
        for name in sorted(sample):
            h.update(name.encode())
            h.update(str(sample[name].dtype).encode())
            h.update(str(sample[name].shape).encode())
            h.update(np.ascontiguousarray(sample[name]).tobytes())
    return h.hexdigest()


def _check(array: np.ndarray, name: str, shape: Sequence[int | str], dtype: str, where: str) -> None:
    if array.dtype.name != dtype:
        raise CalibrationError(f"{where}: input {name!r} is {array.dtype.name}, the model takes {dtype}")
    if array.ndim != len(shape):
        raise CalibrationError(
            f"{where}: input {name!r} has shape {tuple(array.shape)}, the model takes rank {len(shape)} "
            f"({'x'.join(map(str, shape))})"
        )
    for i, (have, want) in enumerate(zip(array.shape, shape)):
        if i == 0 and isinstance(want, int):
            continue  # batched arrays are split into samples of the model's batch below
        if isinstance(want, int) and have != want:
            raise CalibrationError(
                f"{where}: input {name!r} dimension {i} is {have}, the model takes {want} "
                f"(shape {'x'.join(map(str, shape))})"
            )


def _split(arrays: Mapping[str, np.ndarray], inputs, where: str) -> list[dict[str, np.ndarray]]:
    """Split arrays with a leading sample axis into per-sample dicts of the model's batch size."""
    counts = {len(a) for a in arrays.values()}
    if len(counts) != 1:
        raise CalibrationError(f"{where}: inputs hold different numbers of samples: {sorted(counts)}")
    n = counts.pop()
    first = inputs[0].shape[0] if inputs[0].shape else 1
    step = first if isinstance(first, int) else 1
    if n % step:
        raise CalibrationError(f"{where}: {n} samples do not divide into the model's batch of {step}")
    return [{k: v[i : i + step] for k, v in arrays.items()} for i in range(0, n, step)]


def load_samples(
    path: str | Path, signature, limit: int | None = None, seed: int = 0, tokenizer: Path | None = None,
    preprocess: Callable[[Path], tuple[Mapping[str, np.ndarray], str]] | None = None,
) -> CalibrationSet:
    """Read samples for ``signature`` (a `targets.signature.Signature`-like object with ``inputs``).

    ``path`` is a `.npz` with one array per input name (leading axis = samples); a folder of
    `.npz` files (same layout) and/or `.npy` files (single-input models); a folder of PNG/JPEG
    images (see `calibration.images`); or a `.txt` file for language models, one sample per line
    (see `calibration.text`). With ``limit``, a seeded random subset of that many samples is kept.

    ``preprocess`` (a model's own processor, e.g. an exported Hugging Face model's) turns any path that is not
    arrays (.npy/.npz) into batched inputs instead of chipfit's readers; they are checked the same way.
    """
    path = Path(path)
    inputs = list(signature.inputs)
    names = [t.name for t in inputs]
    if not path.exists():
        raise CalibrationError(
            f"{path}: calibration/sample data not found (give a .npz file, a folder of .npy/.npz or images, "
            "or a .txt file for language models)"
        )
    arrays_given = path.suffix in (".npy", ".npz") or path.is_dir() and any(
        p.suffix in (".npy", ".npz") for p in path.iterdir())
    if preprocess is not None and not arrays_given:
        batched, origin = preprocess(path)
        return _finish(list(from_arrays(batched, signature, origin).samples), origin, limit, seed)
    if path.is_file() and path.suffix == ".txt":
        from calibration.text import read_text

        samples, how = read_text(path, signature, tokenizer)
        return _finish(samples, f"{path} ({how})", limit, seed)
    if path.is_dir():
        from calibration.images import image_files, read_images

        if image_files(path):
            if len(inputs) != 1:
                raise CalibrationError(f"{path}: an image folder fits single-input models; this one takes {names}")
            images = [{names[0]: array} for array in read_images(path, inputs[0])]
            return _finish(images, str(path), limit, seed)
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.suffix in (".npy", ".npz"))
    if not files:
        raise CalibrationError(f"{path}: holds no .npy, .npz or image samples")
    samples: list[dict[str, np.ndarray]] = []
    for file in files:
        try:
            if file.suffix == ".npy":
                if len(names) != 1:
                    raise CalibrationError(
                        f"{file}: a .npy sample fits only single-input models; this model takes {names}: use .npz"
                    )
                array = np.load(file, allow_pickle=False)
                arrays = {names[0]: array if array.ndim == len(inputs[0].shape) else array[None]}
            elif file.suffix == ".npz":
                with np.load(file, allow_pickle=False) as data:
                    missing = [n for n in names if n not in data.files]
                    if missing:
                        raise CalibrationError(f"{file}: no array for input(s) {missing}; it holds {data.files}")
                    arrays = {n: data[n] for n in names}
            else:
                raise CalibrationError(f"{file}: not a .npy or .npz file")
        except (ValueError, OSError, EOFError) as exc:
            if isinstance(exc, CalibrationError):
                raise
            raise CalibrationError(f"{file}: cannot read sample ({exc})") from exc
        for t in inputs:
            _check(arrays[t.name], t.name, t.shape, t.dtype, str(file))
        samples.extend(_split(arrays, inputs, str(file)))
    return _finish(samples, str(path), limit, seed)


def _finish(samples: list[dict[str, np.ndarray]], origin: str, limit: int | None, seed: int) -> CalibrationSet:
    if limit and len(samples) > limit:
        keep = sorted(np.random.default_rng(seed).choice(len(samples), limit, replace=False))
        samples = [samples[i] for i in keep]
    return CalibrationSet(tuple(samples), origin=origin, digest=_digest(samples))


LABEL_KEYS = ("label", "labels")


def load_labels(path: str | Path, count: int) -> "np.ndarray | None":
    """Labels stored beside the inputs (a ``label`` array in each .npz), or None if there are none."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.suffix == ".npz")
    labels = []
    for file in files:
        if file.suffix != ".npz":
            return None
        with np.load(file, allow_pickle=False) as data:
            key = next((k for k in LABEL_KEYS if k in data.files), None)
            if key is None:
                return None
            labels.append(np.asarray(data[key]).reshape(-1))
    if not labels:
        return None
    joined = np.concatenate(labels)
    if len(joined) != count:
        raise CalibrationError(f"{path}: {len(joined)} labels for {count} samples")
    return joined


def from_arrays(arrays: Mapping[str, np.ndarray], signature, origin: str) -> CalibrationSet:
    """Samples from in-memory arrays keyed by input name (leading axis = samples)."""
    inputs = list(signature.inputs)
    for t in inputs:
        if t.name not in arrays:
            raise CalibrationError(f"{origin}: no array for input {t.name!r}")
        _check(arrays[t.name], t.name, t.shape, t.dtype, origin)
    samples = _split({t.name: arrays[t.name] for t in inputs}, inputs, origin)
    return CalibrationSet(tuple(samples), origin=origin, digest=_digest(samples))


def random_samples(signature, count: int = 16, seed: int = 0) -> CalibrationSet:
    """Seeded random samples, for when the user explicitly asks for ``--calibration random``."""
    from targets.signature import seeded_inputs

    samples = [seeded_inputs(signature, seed=seed + i, symbolic_size=1) for i in range(count)]
    return CalibrationSet(tuple(samples), origin=f"random (seed {seed})", digest=_digest(samples), is_random=True)
