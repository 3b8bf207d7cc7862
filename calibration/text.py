"""A text file as language-model samples: one sample per non-empty line.

Lines are tokenized with the model's own tokenizer when one is given (a Hugging Face
``tokenizer.json``, read with the `tokenizers` library). Without one, the UTF-8 bytes of each
line are the token ids, which only suits byte-level models; chipfit says so in the sample origin.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from calibration.errors import CalibrationError

ID_NAMES = ("input_ids", "tokens", "ids")


def read_text(path: Path, signature, tokenizer: Path | None = None) -> tuple[list[dict[str, np.ndarray]], str]:
    inputs = {t.name: t for t in signature.inputs}
    ids_name = next((n for n in ID_NAMES if n in inputs), None)
    if ids_name is None:
        raise CalibrationError(
            f"{path}: text samples fit a model with an {'/'.join(ID_NAMES)} input; this one takes {list(inputs)}"
        )
    unsupported = [n for n in inputs if n not in (ids_name, "attention_mask")]
    if unsupported:
        raise CalibrationError(f"{path}: cannot make text samples for input(s) {unsupported}")
    encode, how = _encoder(tokenizer)
    ids_spec = inputs[ids_name]
    length = ids_spec.shape[-1] if isinstance(ids_spec.shape[-1], int) else None
    samples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        ids = encode(line)
        if not ids:
            raise CalibrationError(f"{path}:{number}: the line tokenizes to nothing")
        mask = [1] * len(ids)
        if length is not None:
            ids, mask = (ids + [0] * length)[:length], (mask + [0] * length)[:length]
        sample = {ids_name: np.asarray([ids], dtype=ids_spec.dtype)}
        if "attention_mask" in inputs:
            sample["attention_mask"] = np.asarray([mask], dtype=inputs["attention_mask"].dtype)
        samples.append(sample)
    if not samples:
        raise CalibrationError(f"{path}: no non-empty lines")
    return samples, how


def _encoder(tokenizer: Path | None):
    if tokenizer is None:
        return (lambda text: list(text.encode("utf-8"))), "UTF-8 bytes as token ids (no tokenizer given)"
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise CalibrationError("reading a tokenizer needs the `tokenizers` package: pip install tokenizers") from exc
    try:
        loaded = Tokenizer.from_file(str(tokenizer))
    except Exception as exc:
        raise CalibrationError(f"{tokenizer}: not a readable tokenizer.json ({exc})") from exc
    return (lambda text: loaded.encode(text).ids), f"tokenized with {tokenizer}"
