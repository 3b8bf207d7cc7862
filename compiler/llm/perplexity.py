"""Perplexity on held-out text: what a user of a quantized decoder feels, measured the same way for the float
reference and for every artifact (teacher-forced logits over fixed windows of the text).

The text is `calibration.corpus.HELD_OUT` (standard-library sources no calibration or training set contains),
tokenized by the model's own tokenizer and cut into `WINDOWS` windows of `WINDOW` tokens (fewer where the
artifact's context is shorter). Every window starts without history, so runners with a static cache and those
with a dynamic one score the same positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

WINDOW = 128
WINDOWS = 8


@dataclass(frozen=True)
class HeldOutText:
    origin: str  # what the text is, for the record
    windows: tuple[tuple[int, ...], ...]

    @property
    def scored_tokens(self) -> int:
        return sum(len(w) - 1 for w in self.windows)

    def fitted(self, context: int) -> "HeldOutText":
        """The windows cut to what an artifact of ``context`` tokens holds."""
        length = max(2, min(WINDOW, context - 1))
        return HeldOutText(self.origin, tuple(w[:length] for w in self.windows))


def held_out_text(encode: Callable[[str], Sequence[int]], text: str, origin: str, window: int = WINDOW,
                  count: int = WINDOWS) -> HeldOutText:
    ids = list(encode(text))
    windows = tuple(tuple(ids[i:i + window]) for i in range(0, len(ids) - window + 1, window))[:count]
    return HeldOutText(f"{origin}: {len(windows)} windows of {window} tokens", windows)


def perplexity(logits_of: Callable[[Sequence[int]], np.ndarray], text: HeldOutText) -> float:
    """exp(mean negative log-likelihood of each next token) over the windows."""
    nll, count = 0.0, 0
    for window in text.windows:
        logits = np.asarray(logits_of(window), dtype=np.float64)[:-1]
        shifted = logits - logits.max(-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
        nll -= float(log_probs[np.arange(len(window) - 1), np.asarray(window[1:])].sum())
        count += len(window) - 1
    return math.exp(nll / count) if count else float("nan")


def perplexity_record(reference: float, artifact: float, text: HeldOutText) -> dict[str, Any]:
    return {"text": text.origin, "tokens": text.scored_tokens, "reference": round(reference, 4),
            "artifact": round(artifact, 4), "ratio": round(artifact / reference, 5)}
