"""Verify a vision-language artifact by generating from images: the same rules as a text decoder's
(`compiler.llm.verify`), with every prompt carrying an image, plus the image features on their own.

* Prompt tokens: the runtime's reading of each prompt (its text around the image, tokenized by the artifact's own
  tokenizer, and the image's run of tokens) must be transformers' token for token.
* Greedy: from each image and prompt, the artifact's greedy tokens must equal transformers' (ties as for text).
* Teacher-forced: the reference continuation is fed after the image; agreement and logit cosine.
* Features: each image's features as the decoder receives them (vision encoder + projector), cosine per image.

fp32 must agree on every greedy token; reduced precisions are judged by agreement and cosine against the
target's ``[verify.<precision>]`` thresholds. The vision part is judged at its own precision's cosine bar.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np

from calibration import compare_outputs
from compiler.llm.verify import NEW_TOKENS, PromptCase, compare_greedy, forced_agreement
from compiler.vlm.families import reference_features, reference_inputs
from targets.backend import Generation
from targets.numerics import OutputError
from targets.spec import Tolerance

#: the prompts each fixed image is verified with (the placeholder first, as chat templates put it)
IMAGE_PROMPTS = ("<image> Once upon a time", "<image> The robot saw")
#: and one prompt with every fixed image in turn, text between them
PAIR_PROMPT = "<image> and <image> are two pictures of"


@dataclass(frozen=True)
class ImageCase:
    prompt: str  # with one placeholder per image
    images: tuple[str, ...]  # their names
    pixels: tuple[np.ndarray, ...]  # HxWx3 uint8 each
    case: PromptCase  # ids: the prompt as transformers reads it (images expanded); the greedy reference after it
    features: tuple[np.ndarray, ...]  # each image's features as the decoder receives them


class VisionRunner(Protocol):
    """What a vision-language runtime does for chipfit (beside a text `DecoderRunner`)."""

    def prompt_ids(self, prompt: str, pixels: Sequence[np.ndarray]) -> list[int]:
        """The prompt as the runtime reads it: text tokens, and each image's run of placeholder ids."""
        ...

    def generate_images(self, prompt: str, pixels: Sequence[np.ndarray], new_tokens: int, stop: Sequence[int] = (),
                        on_token: Any = None) -> Generation:
        """Greedy tokens after the prompt and its images (`Generation.prefill_s` includes encoding them)."""
        ...

    def image_logits(self, prompt: str, pixels: Sequence[np.ndarray], forced: Sequence[int]) -> np.ndarray:
        """Next-token logits after the prompt and after each of ``forced`` in turn ([len(forced) + 1, vocab])."""
        ...

    def image_features(self, pixels: np.ndarray) -> np.ndarray:
        """One image's features as the decoder receives them ([image tokens, decoder width])."""
        ...


def reference_image_cases(model, images: Sequence[tuple[str, np.ndarray]], prompts: Sequence[str] = IMAGE_PROMPTS,
                          new_tokens: int = NEW_TOKENS) -> list[ImageCase]:
    """transformers' greedy continuation of each prompt with each image, and of `PAIR_PROMPT` with two of them."""
    import torch

    torch_model = model.torch_model()
    stop = tuple(model.eos_token_ids)
    features = {name: reference_features(model, pixels) for name, pixels in images}
    runs = [(prompt, ((name, pixels),)) for name, pixels in images for prompt in prompts]
    if len(images) >= 2:
        runs.append((PAIR_PROMPT, tuple(images[:2])))
    cases = []
    for prompt, chosen in runs:
        inputs, ids = reference_inputs(model, prompt, [pixels for _, pixels in chosen])
        with torch.no_grad():
            out = torch_model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False, output_logits=True,
                                       return_dict_in_generate=True, eos_token_id=list(stop) or None,
                                       pad_token_id=stop[0] if stop else None)
        tokens = tuple(int(t) for t in out.sequences[0, len(ids):])
        logits = torch.stack(out.logits)[:, 0].float().numpy()
        cases.append(ImageCase(prompt, tuple(name for name, _ in chosen), tuple(pixels for _, pixels in chosen),
                               PromptCase(prompt, tuple(ids), tokens, logits[:len(tokens)], stop),
                               tuple(features[name] for name, _ in chosen)))
    return cases


def verify_images(runner: VisionRunner, cases: Sequence[ImageCase], precision: str, tolerance: Tolerance,
                  encoder_tolerance: Tolerance) -> tuple[bool, list[str], list[OutputError], dict[str, Any]]:
    """Each case on the artifact: whether all pass, the reasons where not, the errors, and the record."""
    records, errors, reasons = [], [], []
    greedy_ok = prompts_ok = True
    agree = steps = 0
    seen: dict[str, OutputError] = {}
    for n, image_case in enumerate(cases):
        case = image_case.case
        ids = runner.prompt_ids(image_case.prompt, image_case.pixels)
        same_prompt = list(ids) == list(case.ids)
        prompts_ok &= same_prompt
        produced = runner.generate_images(image_case.prompt, image_case.pixels, len(case.tokens), case.stop).tokens
        record, ok = compare_greedy(case, produced)
        greedy_ok &= ok
        forced = runner.image_logits(image_case.prompt, image_case.pixels, case.tokens[:-1])
        agreed, considered = forced_agreement(case, forced)
        agree += agreed
        steps += considered
        (error,) = compare_outputs({f"image prompt {n} logits": case.logits.astype(np.float64)},
                                   {f"image prompt {n} logits": forced})
        errors.append(error)
        for name, pixels, reference in zip(image_case.images, image_case.pixels, image_case.features):
            if name not in seen:
                (seen[name],) = compare_outputs({f"{name} features": reference.astype(np.float64)},
                                                {f"{name} features": runner.image_features(pixels)})
        records.append({"prompt": image_case.prompt, "images": list(image_case.images),
                        "prompt_tokens_equal": same_prompt, "prompt_tokens": len(case.ids), **record})
    agreement = agree / steps if steps else 1.0
    cosine = min((e.cosine for e in errors), default=1.0)
    feature_cosine = min((e.cosine for e in seen.values()), default=1.0)
    need = tolerance.token_agreement(precision)
    exact = precision == "fp32"
    if not prompts_ok:
        reasons.append("the runtime reads an image prompt into other tokens than transformers' (see images.cases)")
    if exact and not greedy_ok:
        reasons.append("greedy tokens after an image differ from the reference (not at a tie)")
    if agreement < need:
        reasons.append(f"teacher-forced agreement after images {agreement:.3f} < {need} "
                       f"(verify.{precision}.min_token_agreement)")
    if cosine < tolerance.min_cosine:
        reasons.append(f"logit cosine after images {cosine:.6f} < {tolerance.min_cosine} "
                       f"(verify.{precision}.min_cosine)")
    if feature_cosine < encoder_tolerance.min_cosine:
        reasons.append(f"image feature cosine {feature_cosine:.6f} < {encoder_tolerance.min_cosine} "
                       "(the vision encoder's precision's min_cosine)")
    total = sum(len(c.case.tokens) for c in cases)
    summary = (f"{sum(r['matched'] for r in records)}/{total} greedy tokens equal after {len(cases)} image "
               f"prompt(s), teacher-forced agreement {agreement * 100:.1f}%, logit cos {cosine:.6f}, image feature "
               f"cos {feature_cosine:.6f}")
    record = {"summary": summary, "greedy_equal": greedy_ok, "prompt_tokens_equal": prompts_ok,
              "token_agreement": round(agreement, 4), "feature_cosine": round(feature_cosine, 6),
              "features": {name: {"cosine": round(e.cosine, 6), "max_abs_error": e.max_abs_error} for name, e in seen.items()},
              "cases": records}
    return not reasons, reasons, errors + list(seen.values()), record
