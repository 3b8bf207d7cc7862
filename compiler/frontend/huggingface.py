"""Hugging Face model directories: a decoder LM's folder, as `save_pretrained` writes it, to a `DecoderModel`.

Everything is checked before any weight is loaded: ``config.json`` names a causal LM class that this
transformers has (its own Python code, an ``auto_map``, runs only with ``--trust-remote-code``); weights are
safetensors (a pickled ``pytorch_model.bin`` is refused, never unpickled); a ``tokenizer.json`` is present
and fits the vocabulary. The decoder's layout (`targets.decoder.DecoderSpec`) is read from the config and
the safetensors headers, so the memory plan needs no weights in memory.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Mapping

from compiler.errors import UsageError
from compiler.vlm.families import FAMILIES as VISION_FAMILIES, read_vision
from targets.model import DecoderModel, VisionLanguageModel
from targets.vision import VisionSpec
from targets.decoder import DecoderSpec
from targets.files import digest_path

PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth", "tf_model.h5")
#: an image processor's settings, copied beside a vision-language artifact's files
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "chat_template.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "generation_config.json", "chat_template.jinja")


def is_model_directory(path: Path) -> bool:
    return path.is_dir()


def read_config(folder: Path) -> dict[str, Any]:
    file = folder / "config.json"
    if not file.is_file():
        raise UsageError(f"{folder}: no config.json; a Hugging Face model folder is what `save_pretrained` writes "
                         "(config.json, *.safetensors, tokenizer.json, tokenizer_config.json)")
    try:
        return json.loads(file.read_text())
    except ValueError as exc:
        raise UsageError(f"{file}: not valid JSON ({exc})") from None


def safetensors_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.safetensors"))
    if files:
        return files
    pickled = [name for name in PICKLED_WEIGHTS if (folder / name).exists()] + [p.name for p in folder.glob("pytorch_model-*.bin")]
    if pickled:
        raise UsageError(
            f"{folder}: weights only as {', '.join(pickled)}: pickled files, which chipfit never unpickles (they can "
            "run arbitrary code). Convert them once, in an environment you trust: `python -c \"from transformers "
            "import AutoModelForCausalLM as M; M.from_pretrained('DIR').save_pretrained('DIR', "
            "safe_serialization=True)\"` writes model.safetensors")
    raise UsageError(f"{folder}: no *.safetensors weights")


def _tensor_shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape from the safetensors headers (8-byte length + JSON), no weights read."""
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        with file.open("rb") as f:
            head = f.read(8)
            if len(head) != 8:
                raise UsageError(f"{file}: not a safetensors file (truncated)")
            (length,) = struct.unpack("<Q", head)
            if length > 100_000_000:
                raise UsageError(f"{file}: not a safetensors file (header of {length} bytes)")
            try:
                header = json.loads(f.read(length))
            except ValueError as exc:
                raise UsageError(f"{file}: not a safetensors file ({exc})") from None
        for name, meta in header.items():
            if name != "__metadata__":
                shapes[name] = tuple(meta["shape"])
    return shapes


def _count(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _architecture(config: Mapping[str, Any], folder: Path, trust_remote_code: bool) -> str:
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)

    archs = config.get("architectures") or []
    model_type = config.get("model_type", "")
    if "auto_map" in config and not trust_remote_code:
        raise UsageError(
            f"{folder}/config.json: the model ships its own Python code (auto_map: "
            f"{', '.join(config['auto_map'].values()) if isinstance(config['auto_map'], dict) else config['auto_map']}),"
            " which runs only if you pass --trust-remote-code (recorded in the manifest); read that code first")
    known = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type)
    if is_vision_language(config):
        return archs[0] if archs else MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES[model_type]
    if "vision_config" in config or (known is None and model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES):
        # Read as a text decoder, its vision tower would be left out and the artifact "verified" on text alone.
        tower = "a vision tower (config.json vision_config)" if "vision_config" in config else "image inputs"
        raise UsageError(f"{folder}/config.json: model_type {model_type!r} ({', '.join(archs) or 'no architectures'}) "
                         f"is a vision-language model with {tower}; chipfit builds the vision-language families "
                         f"{', '.join(sorted(VISION_FAMILIES))} and not this one yet. To build its text decoder "
                         "alone, save that part as its own folder (its text_config and language-model weights)")
    if known is None and not trust_remote_code:
        raise UsageError(f"{folder}/config.json: model_type {model_type!r} is no causal language model this transformers "
                         f"knows; decoder LMs it knows include {', '.join(sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)[:40])}...")
    return archs[0] if archs else known


def is_decoder_config(config: Mapping[str, Any]) -> bool:
    """A folder this module reads (a decoder LM, or a vision-language model it builds or refuses by name); other
    folders (encoders, vision and speech models, CLIP-style dual encoders) are exported by `compiler.frontend.optimum`."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
                                                        MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES)

    model_type = config.get("model_type", "")
    archs = config.get("architectures") or []
    if "auto_map" in config or model_type not in CONFIG_MAPPING_NAMES:
        return True  # refused here: its own code without --trust-remote-code, or a type this transformers lacks
    if model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        return model_type not in MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return False
    # BERT-style types also list a causal-LM class (BertLMHeadModel): a decoder only where the folder's class is one
    return (not archs or archs[0] == MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type]
            or str(archs[0]).endswith("ForCausalLM") or bool(config.get("is_decoder")))


def is_vision_language(config: Mapping[str, Any]) -> bool:
    """A folder of a vision-language family chipfit builds (its vision part read by `compiler.vlm.families`)."""
    return "vision_config" in config and config.get("model_type") in VISION_FAMILIES


def _text_shapes(config: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """The decoder's tensors of a checkpoint: a vision-language model's vision part is counted on its own."""
    if not is_vision_language(config):
        return dict(shapes)
    prefixes = VISION_FAMILIES[config["model_type"]].vision_prefixes
    return {name: shape for name, shape in shapes.items() if not name.startswith(prefixes)}


def _tokenizer(folder: Path, vocab_size: int) -> Path:
    file = folder / "tokenizer.json"
    if not file.is_file():
        raise UsageError(f"{folder}: no tokenizer.json; save the tokenizer beside the model "
                         "(`AutoTokenizer.from_pretrained(...).save_pretrained(DIR)`): runtimes such as ONNX Runtime "
                         "GenAI read it, and chipfit verifies generated text with it")
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(file))
    except Exception as exc:
        raise UsageError(f"{file}: not a tokenizers file ({exc})") from None
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    if size > vocab_size:
        raise UsageError(f"{file}: the tokenizer has {size} tokens but the model's vocabulary is {vocab_size} "
                         "(config.json vocab_size): this tokenizer is not the model's")
    return file


def _layer_types(config: Mapping[str, Any], layers: int) -> tuple[int, ...]:
    window = config.get("sliding_window")
    types = config.get("layer_types")
    if types:
        return tuple(i for i, t in enumerate(types) if t == "sliding_attention")
    if window and (config.get("use_sliding_window", True) or config.get("model_type") == "mistral"):
        return tuple(range(layers))
    return ()


def decoder_spec(config: Mapping[str, Any], architecture: str, shapes: Mapping[str, tuple[int, ...]]) -> DecoderSpec:
    text = config.get("text_config") or config
    layers = int(text["num_hidden_layers"])
    heads = int(text["num_attention_heads"])
    hidden = int(text["hidden_size"])
    kv_heads = int(text.get("num_key_value_heads") or heads)
    if "kv_lora_rank" in text:  # latent attention (MiniCPM3, DeepSeek-V2 style): the cache holds the compressed
        # latent (one "head" of kv_lora_rank) and the shared rotary key (qk_rope_head_dim) per token
        kv_heads, head_dim, value_dim = 1, int(text["kv_lora_rank"]), int(text.get("qk_rope_head_dim", 0))
    else:
        head_dim = int(text.get("head_dim") or hidden // heads)
        value_dim = head_dim
    sliding = _layer_types(text, layers)
    if text.get("sliding_window") and int(text["sliding_window"]) >= int(text.get("max_position_embeddings") or 0):
        sliding = ()  # a window no shorter than every sequence the model takes windows nothing
    embedding = next((n for n in shapes if n.endswith("embed_tokens.weight")), None)
    parameters = sum(_count(s) for s in shapes.values())
    return DecoderSpec(
        architecture=architecture, model_type=str(text.get("model_type") or config.get("model_type")),
        layers=layers, hidden_size=hidden, intermediate_size=int(text.get("intermediate_size") or 4 * hidden),
        heads=heads, kv_heads=kv_heads, head_dim=head_dim, value_head_dim=value_dim,
        vocab_size=int(text["vocab_size"]), max_positions=int(text.get("max_position_embeddings") or 2048),
        sliding_window=int(text["sliding_window"]) if sliding and text.get("sliding_window") else None,
        sliding_layers=sliding, tied_embeddings=bool(text.get("tie_word_embeddings", config.get("tie_word_embeddings"))),
        parameters=parameters, embedding_parameters=_count(shapes[embedding]) if embedding else 0,
        rope=dict(text.get("rope_parameters") or text.get("rope_scaling") or {"rope_theta": text.get("rope_theta")}),
    )


def load_hf_directory(folder: Path, trust_remote_code: bool = False, name: str | None = None,
                      digest: bool = True) -> DecoderModel:
    """The folder as a `DecoderModel`; ``digest=False`` skips hashing its files (planning needs only the layout)."""
    folder = folder.resolve()
    config = read_config(folder)
    architecture = _architecture(config, folder, trust_remote_code)
    files = safetensors_files(folder)
    shapes = _tensor_shapes(files)
    spec = decoder_spec(config, architecture, _text_shapes(config, shapes))
    tokenizer = _tokenizer(folder, spec.vocab_size)
    generation = {}
    if (folder / "generation_config.json").is_file():
        try:
            generation = json.loads((folder / "generation_config.json").read_text())
        except ValueError as exc:
            raise UsageError(f"{folder / 'generation_config.json'}: not valid JSON ({exc})") from None
    fields = dict(name=name or folder.name, source=str(folder), source_digest=digest_path(folder) if digest else "",
                  spec=spec, directory=folder, tokenizer_file=tokenizer, trust_remote_code=trust_remote_code,
                  config=config, generation=generation)
    if is_vision_language(config):
        processor = tuple(n for n in PROCESSOR_FILES if (folder / n).is_file())
        return VisionLanguageModel(**fields, vision=read_vision(folder, config, shapes), processor_files=processor)
    return DecoderModel(**fields)


def _shapes_from_config(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """A decoder's weight shapes from its config alone (attention, gated MLP, norms, embedding, lm_head), as the
    families chipfit builds lay them out: what `chipfit plan` counts when the folder holds no weights."""
    text = config.get("text_config") or config
    hidden, layers = int(text["hidden_size"]), int(text["num_hidden_layers"])
    heads = int(text["num_attention_heads"])
    kv_heads = int(text.get("num_key_value_heads") or heads)
    head_dim = int(text.get("head_dim") or hidden // heads)
    inner = int(text.get("intermediate_size") or 4 * hidden)
    vocab = int(text["vocab_size"])
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "self_attn.q_proj.weight": (heads * head_dim, hidden),
            p + "self_attn.k_proj.weight": (kv_heads * head_dim, hidden),
            p + "self_attn.v_proj.weight": (kv_heads * head_dim, hidden),
            p + "self_attn.o_proj.weight": (hidden, heads * head_dim),
            p + "mlp.gate_proj.weight": (inner, hidden), p + "mlp.up_proj.weight": (inner, hidden),
            p + "mlp.down_proj.weight": (hidden, inner),
            p + "input_layernorm.weight": (hidden,), p + "post_attention_layernorm.weight": (hidden,)})
    if not text.get("tie_word_embeddings", config.get("tie_word_embeddings")):
        shapes["lm_head.weight"] = (vocab, hidden)
    return shapes


def read_layout(path: Path, trust_remote_code: bool = False) -> tuple[DecoderSpec, str, str]:
    """A decoder's layout from a model folder or a ``config.json`` alone, no weight read and nothing loaded:
    (spec, model name, where the parameter count comes from). The same refusals as `load_hf_directory` for the
    config; a folder's pickled weights are refused, and with no weights at all the shapes come from the config."""
    path = path.resolve()
    folder = path.parent if path.is_file() else path
    if path.is_file() and path.name != "config.json":
        raise UsageError(f"{path}: give a model folder or its config.json")
    config = read_config(folder)
    architecture = _architecture(config, folder, trust_remote_code)
    files = sorted(folder.glob("*.safetensors"))
    if files or path.is_dir() and any((folder / n).exists() for n in PICKLED_WEIGHTS):
        shapes, basis = _tensor_shapes(safetensors_files(folder)), "safetensors headers"
    else:
        shapes, basis = _shapes_from_config(config), "config.json (shapes of a standard decoder layer)"
    name = folder.name if path.is_dir() or path.name == "config.json" else path.stem
    return decoder_spec(config, architecture, _text_shapes(config, shapes)), name, basis


def read_vision_layout(path: Path) -> VisionSpec | None:
    """A vision-language folder's vision part (`read_layout` gives its decoder's), from its config, processor
    settings and safetensors headers; None for a text decoder. A config.json alone cannot say the encoder's size."""
    path = path.resolve()
    folder = path.parent if path.is_file() else path
    config = read_config(folder)
    if not is_vision_language(config):
        return None
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise UsageError(f"{folder}: a vision-language model's vision encoder is sized from its weights' headers; "
                         "give the folder with its *.safetensors (no weight is read)")
    return read_vision(folder, config, _tensor_shapes(files))
