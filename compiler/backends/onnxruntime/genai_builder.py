"""Build an ONNX Runtime GenAI model folder with onnxruntime-genai's own model builder, in this process.

    python -m compiler.backends.onnxruntime.genai_builder REQUEST.json

Run by `compiler.backends.onnxruntime.genai` in a child process with a scratch working directory: the
builder appends its own folder to ``sys.path`` and imports top-level modules named ``builders`` and
``quantization``, which a file of that name in the working directory would shadow.

The builder reads the Hugging Face config through transformers; a few model families are written by
transformers 5 in a form the builder (0.18) does not read. Each is mended here, on the configuration
object the builder is handed, never in the user's files: `FAMILY_FIXES` is that list, one small function
per family.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable


def _phi3(config: Any) -> list[str]:
    """Phi-3: the builder picks its LongRoPE variant whenever the two position limits differ, and then needs
    LongRoPE settings; a config without them is a plain-RoPE model. A LongRoPE config rewritten by
    transformers 5 lost the ``type`` key the builder reads."""
    notes = []
    rope = dict(getattr(config, "rope_parameters", None) or {})
    longrope = rope.get("rope_type") == "longrope" or rope.get("type") == "longrope"
    original = getattr(config, "original_max_position_embeddings", None)
    if not longrope and original is not None and original != config.max_position_embeddings:
        config.original_max_position_embeddings = config.max_position_embeddings
        notes.append("phi3: no LongRoPE settings, so original_max_position_embeddings set to max_position_embeddings")
    if longrope and "type" not in rope:
        rope["type"] = "longrope"
        config.rope_parameters = rope
        notes.append("phi3: rope_parameters.type = longrope (transformers 5 writes only rope_type)")
    return notes


def _gemma3(config: Any) -> list[str]:
    """Gemma-3: transformers 5 nests the RoPE settings per layer type and drops ``rope_local_base_freq``; the
    builder reads the flat form."""
    rope = getattr(config, "rope_parameters", None)
    if isinstance(rope, dict) and "full_attention" in rope and "sliding_attention" in rope:
        if getattr(config, "rope_local_base_freq", None) is None:
            config.rope_local_base_freq = rope["sliding_attention"]["rope_theta"]
        config.rope_parameters = dict(rope["full_attention"])
        return ["gemma3: per-layer-type rope_parameters flattened, rope_local_base_freq from the sliding layers"]
    return []


def _mistral(config: Any) -> list[str]:
    """Mistral with a sliding window has no ``layer_types``; the builder would drop the window from the graph.
    A window no shorter than the model's positions windows nothing, and is dropped."""
    window = getattr(config, "sliding_window", None)
    if window and window >= config.max_position_embeddings:
        config.sliding_window = None
        return [f"mistral: sliding_window {window} >= max_position_embeddings: no window"]
    if window and not getattr(config, "layer_types", None):
        config.layer_types = ["sliding_attention"] * config.num_hidden_layers
        return ["mistral: layer_types set to sliding_attention on every layer (the config's sliding_window)"]
    return []


FAMILY_FIXES: dict[str, Callable[[Any], list[str]]] = {"phi3": _phi3, "gemma3_text": _gemma3, "mistral": _mistral}


def build(request: dict) -> dict:
    os.environ["HF_HUB_OFFLINE"] = "1"
    from onnxruntime_genai.models.builder import create_model, parse_extra_options

    extra = [f"{k}={v}" for k, v in request["extra_options"].items()]
    options = parse_extra_options(None, request["input"], request["output"], request["precision"],
                                  request["execution_provider"], request["cache_dir"], extra)
    config = options["hf_details"]["hf_config"]
    fix = FAMILY_FIXES.get(getattr(config, "model_type", ""))
    notes = fix(config) if fix else []
    create_model(None, request["input"], request["output"], request["precision"], request["execution_provider"],
                 request["cache_dir"], **options)
    return {"notes": notes}


def main(argv: list[str]) -> int:
    request = json.loads(Path(argv[0]).read_text())
    result = build(request)
    Path(request["result"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
