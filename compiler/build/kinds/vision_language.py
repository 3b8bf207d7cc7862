"""The vision-language kind: a Hugging Face VLM folder -> an artifact that generates from images, verified.

Everything a decoder build does (`DecoderKind`: planning against the target's memory, the backends that lower the
family, the weight-method race, the text verification and perplexity, the backend race), with what the vision part
adds: the backends are those declaring the family in ``vision_language_families``; the memory plan counts the
vision encoder's weights (at fp16, or fp32 for an fp32 build) and the context must hold the largest image's tokens
besides text; the input stage draws the fixed images (`compiler.vlm.images`) and has transformers generate from
each; each artifact is then verified from those images as well as from text (`compiler.vlm.verify`); and the
manifest's ``llm.vision`` records the parts, the vision precision, the runtime's image settings and the image-token
budget.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from compiler.build.cell import Cell
from compiler.build.context import BuildContext, BuildOptions, BuildRun
from compiler.build.kinds.decoder import DecoderInputs, DecoderKind, verify_decoder
from compiler.errors import RunError, UsageError
from compiler.vlm.families import fit_image
from compiler.vlm.images import fixed_images
from compiler.vlm.verify import reference_image_cases, verify_images
from targets.backend import Backend, GenerationPlan, Lowered
from targets.decoder import MemoryPlan
from targets.model import VisionLanguageModel
from targets.numerics import Numerics
from targets.request import BuildRequest
from targets.spec import TargetSpec
from targets.vision import VisionRecord

#: text tokens a context must hold beside one image of the largest size
TEXT_BESIDE_IMAGE = 64


class VisionLanguageKind(DecoderKind):
    name = "vision-language"
    what = "vision-language"

    def accepts(self, model: Any) -> bool:
        return isinstance(model, VisionLanguageModel)

    def family(self, model: VisionLanguageModel) -> str:
        return model.vision.family

    def families(self, backend: Backend) -> tuple[str, ...]:
        return tuple(backend.capabilities.vision_language_families)

    def extra_weight_bytes(self, model: VisionLanguageModel, precision: str) -> int:
        return model.vision.encoder_bytes("fp32" if precision == "fp32" else "fp16")

    def plan_target(self, model: VisionLanguageModel, request: BuildRequest, target: TargetSpec, precision: str,
                    options: BuildOptions) -> Mapping[str, Any]:
        planned = super().plan_target(model, request, target, precision, options)
        need = model.vision.max_image_tokens + TEXT_BESIDE_IMAGE
        if planned["context"] < need:
            asked = f"--context {request.llm.context}" if request.llm.context else f"the context {planned['context']}"
            raise UsageError(f"{asked}: on target {target.id}, {model.name} needs at least {need} tokens: an image "
                             f"takes up to {model.vision.max_image_tokens} (preprocessor_config.json: the most "
                             "pixels over the pixels one token covers) and a prompt "
                             f"{TEXT_BESIDE_IMAGE} more")
        return planned

    def prepare(self, model: VisionLanguageModel, cells: Sequence[Cell], options: BuildOptions, ctx: BuildContext
                ) -> DecoderInputs:
        inputs = super().prepare(model, cells, options, ctx)
        # sized as the family's processor sizes them, so no runtime resizes them by other rounding
        images = [(name, fit_image(pixels, model.vision)) for name, pixels in fixed_images()]
        ctx.progress(f"reference: transformers generating from {len(images)} images")
        return replace(inputs, images=tuple(reference_image_cases(model, images)))

    def verify_form(self, cell: Cell, lowered: Lowered, path: Path, form: str, inputs: DecoderInputs, run: BuildRun
                    ) -> tuple[Numerics, str]:
        def images(plan: GenerationPlan, numerics: Numerics) -> tuple[Numerics, str]:
            """The image prompts on the runtime the text prompts ran on."""
            if not inputs.images:
                return numerics, ""
            run.ctx.progress(f"{cell.target.id}: generating from {len(inputs.images)} image prompts to verify")
            vision_precision = lowered.decoder.vision_precision or "fp16"
            try:
                ok, reasons, errors, record = verify_images(plan.runner, inputs.images, cell.precision,
                                                            cell.target.tolerance(cell.precision),
                                                            cell.target.tolerance(vision_precision))
            except Exception as exc:  # the artifact was built; running it with images failed: kept for inspection
                error = RunError(f"running the artifact with images failed: {type(exc).__name__}: {exc}")
                return replace(numerics, status="failed", reason=str(error)), error.stage
            generation = dict(numerics.generation or {})
            generation["images"] = record
            generation["summary"] = f"{generation.get('summary', '')}; {record['summary']}".strip("; ")
            status = numerics.status if ok else "failed"
            checked = replace(numerics, status=status, reason="; ".join(r for r in (numerics.reason, *reasons) if r),
                              outputs=tuple(numerics.outputs) + tuple(errors), generation=generation,
                              inputs=f"{numerics.inputs}; {len(inputs.images)} image prompts over "
                                     f"{len({c.images for c in inputs.images})} fixed images")
            return checked, "MISMATCH" if status == "failed" else ""

        return verify_decoder(cell, lowered, path, form, inputs, run, images)

    def vision_record(self, model: VisionLanguageModel, form: Any, memory: MemoryPlan) -> VisionRecord:
        per_image = model.vision.max_image_tokens
        return VisionRecord(spec=model.vision, files=dict(form.parts), encoder_precision=form.vision_precision,
                            runtime_settings=dict(form.vision_settings), image_tokens_per_image=per_image,
                            images_per_context=memory.context // per_image if per_image else 0)
