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


#: a calibration prompt shorter than this many tokens says little about a decoder's activations
MIN_PROMPT_TOKENS = 4


def read_prompts(path: Path, encode, unknown_id: int | None = None, limit: int = 128,
                 max_tokens: int = 128) -> list[list[int]]:
    """A decoder LM's calibration prompts: one per non-empty line of a UTF-8 text file, as token ids (at most
    ``max_tokens`` each, ``limit`` lines). Refused, naming the file and line: a file that is not UTF-8, one with no
    prompt of at least `MIN_PROMPT_TOKENS` tokens, a line that tokenizes to unknown ids only."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CalibrationError(f"{path}: cannot be read ({exc.strerror})") from exc
    prompts: list[list[int]] = []
    short = 0
    for number, line in enumerate(raw.splitlines(), 1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CalibrationError(f"{path}:{number}: not UTF-8 (byte {line[exc.start]:#04x} at column "
                                   f"{exc.start + 1}); save the prompts as UTF-8 text") from exc
        if not text.strip():
            continue
        ids = list(encode(text))
        if unknown_id is not None and ids and all(i == unknown_id for i in ids):
            raise CalibrationError(f"{path}:{number}: the line tokenizes to the unknown token only; the model's "
                                   "tokenizer does not cover its text")
        if len(ids) < MIN_PROMPT_TOKENS:
            short += 1
            continue
        prompts.append(ids[:max_tokens])
        if len(prompts) == limit:
            break
    if not prompts:
        raise CalibrationError(
            f"{path}: no calibration prompt" + (f" of at least {MIN_PROMPT_TOKENS} tokens ({short} shorter line(s))"
                                                if short else " (the file has no non-empty line)")
            + "; give one prompt per line, a sentence or more each")
    return prompts
