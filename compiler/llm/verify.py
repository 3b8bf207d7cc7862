"""Verify a decoder LM artifact by generating text: greedy tokens and teacher-forced logits against transformers.

* Greedy: from each fixed prompt, the artifact's greedy tokens must equal the reference's token for token.
  A step whose reference top-2 logit margin is below `TIE_MARGIN` is a tie: either token is right, the
  continuations may part there, and the comparison of that prompt stops at it (reported).
* Teacher-forced: the reference continuation is fed to the artifact; at every step its next-token choice is
  compared with the reference's (agreement) and its logits with the reference's (cosine, max |error|).

fp32 must agree on every greedy token (up to ties) and every teacher-forced step; reduced precisions are
judged by agreement and logit cosine against the target's ``[verify.<precision>]`` thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from calibration import compare_outputs
from compiler.llm.perplexity import HeldOutText, perplexity, perplexity_record
from targets.backend import GenerationPlan
from targets.numerics import Numerics, OutputError
from targets.spec import Tolerance

#: reference top-2 logit margin below which a greedy step counts as a tie
TIE_MARGIN = 1e-3
DEFAULT_PROMPTS = ("Once upon a time", "The quick brown fox", "In the beginning")
NEW_TOKENS = 16


@dataclass(frozen=True)
class PromptCase:
    text: str
    ids: tuple[int, ...]
    tokens: tuple[int, ...]  # the reference's greedy continuation (ends early at an end-of-sequence token)
    logits: np.ndarray  # [len(tokens), vocab]: the reference logits each token was chosen from
    stop: tuple[int, ...] = ()  # end-of-sequence tokens

    @property
    def ties(self) -> tuple[int, ...]:
        top2 = np.sort(self.logits, axis=-1)[:, -2:]
        return tuple(int(i) for i in np.nonzero(top2[:, 1] - top2[:, 0] < TIE_MARGIN)[0])


def reference_cases(model, prompts: Sequence[str], new_tokens: int = NEW_TOKENS) -> list[PromptCase]:
    cases = []
    for text in prompts:
        ids = tuple(model.encode(text))
        if not ids:
            continue
        tokens, logits = model.reference_greedy(ids, new_tokens, stop=model.eos_token_ids)
        cases.append(PromptCase(text, ids, tuple(tokens), logits, tuple(model.eos_token_ids)))
    return cases


@dataclass(frozen=True)
class ReferencePerplexity:
    """The float reference's perplexity on held-out text, measured once per model."""

    text: HeldOutText
    value: float

    @classmethod
    def of(cls, model, text: HeldOutText) -> "ReferencePerplexity":
        return cls(text, perplexity(model.reference_logits, text))


def compare_greedy(case: PromptCase, produced: Sequence[int]) -> tuple[dict, bool]:
    """The artifact's greedy tokens against the reference's, up to the first tie: the record of one prompt, and
    whether it passes (equal, or parted only at a tie)."""
    first_tie = next(iter(case.ties), None)
    compared = len(case.tokens) if first_tie is None else first_tie + 1
    mismatch = next((i for i in range(min(compared, len(produced))) if produced[i] != case.tokens[i]), None)
    if len(produced) < compared:
        mismatch = len(produced) if mismatch is None else mismatch
    matched = compared if mismatch is None else mismatch
    tie_ok = mismatch is not None and mismatch == first_tie
    return ({"tokens": len(case.tokens), "matched": matched, "ties": list(case.ties), "reference": list(case.tokens),
             "artifact": list(produced), "first_mismatch": mismatch, "mismatch_at_tie": tie_ok},
            mismatch is None or tie_ok)


def forced_agreement(case: PromptCase, forced: np.ndarray) -> tuple[int, int]:
    """Teacher-forced steps where the artifact's choice is the reference's, and the steps counted (ties left out)."""
    choices = forced.argmax(-1)
    considered = [i for i in range(len(case.tokens)) if i not in case.ties]
    return int(sum(choices[i] == case.tokens[i] for i in considered)), len(considered)


def verify_generation(plan: GenerationPlan, cases: Sequence[PromptCase], precision: str,
                      tolerance: Tolerance, reference: ReferencePerplexity | None = None) -> Numerics:
    """Greedy and teacher-forced comparison with the reference; with ``reference``, the artifact's perplexity on
    the same held-out text too (reported beside the reference's; the precision stage chooses variants by it)."""
    runner = plan.runner
    prompts = []
    errors: list[OutputError] = []
    greedy_ok = True
    agree = steps = 0
    for n, case in enumerate(cases):
        produced = runner.generate(case.ids, len(case.tokens), stop=case.stop).tokens
        record, ok = compare_greedy(case, produced)
        greedy_ok &= ok
        forced = runner.logits(case.ids + case.tokens[:-1])[len(case.ids) - 1:]
        agreed, considered = forced_agreement(case, forced)
        agree += agreed
        steps += considered
        (error,) = compare_outputs({f"prompt {n} logits": case.logits.astype(np.float64)},
                                   {f"prompt {n} logits": forced})
        errors.append(error)
        prompts.append({"prompt": case.text, **record})
    agreement = agree / steps if steps else 1.0
    scored = None
    if reference is not None:
        scored = perplexity_record(reference.value, perplexity(runner.logits, reference.text), reference.text)
    cosine = min((e.cosine for e in errors), default=1.0)
    need = tolerance.token_agreement(precision)
    exact = precision == "fp32"
    ok = agreement >= need and cosine >= tolerance.min_cosine and (greedy_ok or not exact)
    total = sum(len(c.tokens) for c in cases)
    tied = sum(1 for p in prompts if p["ties"])
    summary = (f"{sum(p['matched'] for p in prompts)}/{total} greedy tokens equal"
               + (f" (compared up to a tie in {tied} prompt(s))" if tied else "")
               + f", teacher-forced agreement {agreement * 100:.1f}%, logit cos {cosine:.6f}"
               + (f", perplexity {scored['artifact']:.3f} (float {scored['reference']:.3f})" if scored else ""))
    reasons = []
    if exact and not greedy_ok:
        reasons.append("greedy tokens differ from the reference (not at a tie)")
    if agreement < need:
        reasons.append(f"teacher-forced agreement {agreement:.3f} < {need} (verify.{precision}.min_token_agreement)")
    if cosine < tolerance.min_cosine:
        reasons.append(f"logit cosine {cosine:.6f} < {tolerance.min_cosine} (verify.{precision}.min_cosine)")
    return Numerics(
        status="verified" if ok else "failed", precision=precision,
        reason="; ".join(reasons),
        runner=runner.description + (f" [{plan.note}]" if plan.note else ""), proxy=plan.proxy,
        execution=plan.execution,
        inputs=f"{len(cases)} prompts, up to {max((len(c.tokens) for c in cases), default=0)} greedy tokens each",
        tolerance=tolerance, outputs=tuple(errors),
        generation={"summary": summary, "greedy_equal": greedy_ok, "token_agreement": round(agreement, 4),
                    "required_agreement": need, "tie_margin": TIE_MARGIN, "prompts": prompts,
                    **({"perplexity": scored} if scored else {})},
    )
