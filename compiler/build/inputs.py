"""The build's input stage: what every cell of one build is verified and calibrated on, read once.

For a graph: calibration samples (``--calibration``, or the model's bundled ones where a cell needs them),
verification inputs (``--samples``, else calibration or bundled samples, else seeded random inputs), the
evaluation set quantized graphs are judged on (``--eval``, else labelled bundled samples, else the
verification inputs) and the float reference's outputs on them. For a decoder LM: the prompts it is
verified on (``--samples``: a .txt file, one per line, else fixed ones), the prompts its weights are calibrated
on (``--calibration``: a .txt file, one per line, else the standard library's sources, `calibration.corpus`) and
the held-out text its perplexity is measured on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from calibration import CalibrationSet
from calibration.errors import CalibrationError
from calibration.corpus import CALIBRATION, DEFAULT_SET, HELD_OUT, stdlib_text
from calibration.readers import from_arrays, load_labels, load_samples, random_samples
from calibration.text import read_prompts
from compiler.errors import BuildError, UsageError
from compiler.llm.perplexity import WINDOW, HeldOutText, held_out_text
from compiler.llm.verify import DEFAULT_PROMPTS
from compiler.precision import EvalSet
from targets.model import DecoderModel, TracedModel
from targets.request import BuildRequest
from targets.signature import run_batched, seeded_inputs, static_batch

VERIFY_SAMPLES = 16
#: below this, reference outputs are noise-sized: an absolute tolerance passes anything against them
NEAR_ZERO = 1e-6


def shared_request(requests: Sequence[BuildRequest]) -> BuildRequest:
    """The request whose data settings the whole build uses (every cell of one build shares them)."""
    first = requests[0]
    for request in requests[1:]:
        if (request.data, request.model) != (first.data, first.model):
            raise ValueError("one build takes one model and one set of samples; build the others separately")
    return first


def _tokenizer(request: BuildRequest) -> Path | None:
    return Path(request.data.tokenizer) if request.data.tokenizer else None


def _bundled(model: TracedModel) -> str:
    if model.export is not None:  # not the user's data: chipfit's few made-up inputs, through the model's processor
        return (f"chipfit's reference {model.export.modality} inputs for {model.source} (made by its processor; pass "
                "--calibration for samples like the model's real data)")
    return f"bundled samples of {model.source}"


def calibration_set(model: TracedModel, request: BuildRequest, needed: Sequence[str]) -> CalibrationSet | None:
    """The calibration samples; ``needed``: the targets whose cells quantize from them (none: read only if given)."""
    calibration = request.data.calibration
    try:
        if calibration == "random":
            return random_samples(model.signature.concretized())
        if calibration:
            return load_samples(calibration, model.signature, limit=256, tokenizer=_tokenizer(request),
                                preprocess=model.preprocess)
        if needed and model.samples:
            arrays = {t.name: model.samples[t.name] for t in model.signature.inputs}
            return from_arrays(arrays, model.signature, _bundled(model))
    except CalibrationError as exc:
        raise UsageError(f"--calibration: {exc}") from exc
    if needed:
        raise UsageError(
            f"target(s) {', '.join(sorted(set(needed)))} build int8, which needs calibration samples: pass --calibration "
            "PATH (a .npz keyed by input name, or a folder of .npy/.npz files), or --calibration random to accept "
            "ranges computed from random data"
        )
    return None


def verification_inputs(model: TracedModel, request: BuildRequest, calibration: CalibrationSet | None
                        ) -> tuple[dict[str, np.ndarray], str]:
    if request.data.samples:
        try:
            samples = load_samples(request.data.samples, model.signature, limit=VERIFY_SAMPLES,
                                   tokenizer=_tokenizer(request), preprocess=model.preprocess)
        except CalibrationError as exc:
            raise UsageError(f"--samples: {exc}") from exc
        return samples.batched(), f"{len(samples)} samples from {request.data.samples}"
    if calibration is not None and not calibration.is_random:
        chosen = calibration.batched(limit=VERIFY_SAMPLES)
        return chosen, f"{len(next(iter(chosen.values())))} calibration samples from {calibration.origin}"
    if model.samples:
        arrays = {t.name: model.samples[t.name][:VERIFY_SAMPLES] for t in model.signature.inputs}
        return arrays, f"{VERIFY_SAMPLES} bundled samples of {model.source}"
    return seeded_inputs(model.signature, seed=0), "seeded random inputs (seed 0; symbolic dims = 2)"


def verification_labels(model: TracedModel, label: str) -> np.ndarray | None:
    """The bundled samples' labels, where the verification inputs are those samples."""
    if model.samples and "label" in model.samples and label.startswith(f"{VERIFY_SAMPLES} bundled"):
        return np.asarray(model.samples["label"][:VERIFY_SAMPLES])
    return None


def evaluation_set(model: TracedModel, request: BuildRequest, calibration: CalibrationSet | None,
                   verification: tuple[dict[str, np.ndarray], str]) -> EvalSet:
    """What quantized graphs are judged on: --eval, else the bundled labelled samples, else verification inputs."""
    if request.data.eval:
        try:
            samples = load_samples(request.data.eval, model.signature, tokenizer=_tokenizer(request),
                                   preprocess=model.preprocess)
            labels = load_labels(request.data.eval, len(samples))
        except CalibrationError as exc:
            raise UsageError(f"--eval: {exc}") from exc
        return EvalSet(samples.batched(), labels, f"{len(samples)} samples from {request.data.eval}"
                       + ("" if labels is not None else " (no labels: agreement with float only)"))
    if model.samples and "label" in model.samples:
        arrays = {t.name: model.samples[t.name] for t in model.signature.inputs}
        return EvalSet(arrays, np.asarray(model.samples["label"]),
                       f"{len(model.samples['label'])} labelled samples of {model.source}")
    if calibration is not None and not calibration.is_random:
        arrays = calibration.batched(limit=64)
        return EvalSet(arrays, None, f"{len(next(iter(arrays.values())))} calibration samples (no labels)")
    return EvalSet(verification[0], None, verification[1] + " (no labels)")


def reference_outputs(model: TracedModel, inputs: Mapping[str, np.ndarray], label: str) -> dict[str, np.ndarray]:
    try:
        return run_batched(model.reference, inputs, static_batch(model.signature))
    except Exception as exc:
        raise BuildError(
            f"the float reference of {model.source} could not run on {label}: {type(exc).__name__}: {exc}"
        ) from exc


def reference_warnings(reference: Mapping[str, np.ndarray], label: str) -> tuple[str, ...]:
    largest = max((float(np.max(np.abs(v))) if np.asarray(v).size else 0.0 for v in reference.values()), default=0.0)
    if largest >= NEAR_ZERO:
        return ()
    return (f"the float reference's outputs on {label} are near zero (largest |value| {largest:.3g}): the tolerance "
            "check cannot tell a good artifact from a bad one on them; give --samples with inputs the model was made "
            "for (real images, token ids) so verification means something",)


def prompts(request: BuildRequest) -> list[str]:
    """A decoder LM's verification prompts: one per line of ``--samples`` (a .txt file), else the fixed ones."""
    if request.data.samples:
        path = Path(request.data.samples)
        if path.suffix != ".txt" or not path.is_file():
            raise UsageError(f"--samples {path}: a decoder LM is verified on prompts: give a .txt file, one per line")
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not lines:
            raise UsageError(f"--samples {path}: no prompts in it")
        return lines[:8]
    return list(DEFAULT_PROMPTS)


#: calibration windows cut from the default text set when the user gives no prompts
DEFAULT_CALIBRATION_SAMPLES = 32


def decoder_calibration(model: DecoderModel, request: BuildRequest) -> tuple[tuple[tuple[int, ...], ...], str]:
    """The token ids a decoder's weights are calibrated on, and where they came from."""
    given = request.data.calibration
    if given:
        path = Path(given)
        if given == "random" or path.suffix != ".txt" or not path.is_file():
            raise UsageError(f"--calibration {given}: a decoder LM's weights are calibrated on text: give a UTF-8 "
                             ".txt file with one prompt per line")
        tokenizer = model.tokenizer()
        try:
            prompts = read_prompts(path, model.encode, getattr(tokenizer, "unk_token_id", None))
        except CalibrationError as exc:
            raise UsageError(f"--calibration: {exc}") from exc
        return tuple(tuple(p) for p in prompts), f"{path} ({len(prompts)} prompts)"
    ids = model.encode(stdlib_text(CALIBRATION))
    windows = tuple(tuple(ids[i:i + WINDOW]) for i in range(0, len(ids) - WINDOW + 1, WINDOW))
    step = max(1, len(windows) // DEFAULT_CALIBRATION_SAMPLES)
    chosen = windows[::step][:DEFAULT_CALIBRATION_SAMPLES]
    return chosen, (f"{DEFAULT_SET} ({len(chosen)} windows of {WINDOW} tokens from the sources of "
                    f"{', '.join(CALIBRATION)})")


def held_out(model: DecoderModel, context: int) -> HeldOutText:
    """The held-out text a decoder's perplexity is measured on, in windows the smallest context holds."""
    return held_out_text(model.encode, stdlib_text(HELD_OUT), f"{DEFAULT_SET} held-out ({', '.join(HELD_OUT)})",
                         window=max(2, min(WINDOW, context - 1)))
