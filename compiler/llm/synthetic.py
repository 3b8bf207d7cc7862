"""Tiny Hugging Face model folders of each decoder family, made here (no download): for the conformance kit's
LLM battery, the tests and the benchmarks. Random weights (seeded), or trained for a few seconds on a small
corpus when a test needs predictions that mean something; the tokenizer is trained on the same corpus."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import torch

CORPUS = """\
Once upon a time there was a little robot who lived in a quiet town by the sea.
Every morning the robot walked to the harbour and counted the boats.
The quick brown fox jumps over the lazy dog, and the dog does not mind at all.
In the beginning the town had only one street, one bakery and one small school.
The baker made bread for everyone, and the children carried it home in baskets.
When the wind came from the north, the boats stayed in the harbour all day.
The robot liked the bakery best, because the bread smelled warm and sweet.
One day a storm came, and the robot helped the fishermen tie their boats.
After the storm the whole town thanked the robot with bread and music.
The children wrote a song about the robot, and they sang it every evening.
""".strip().splitlines()

SPECIALS = ["<s>", "</s>", "<pad>"]
#: the decoder families chipfit builds (see each backend's ``decoder_families``)
FAMILIES = ("llama", "qwen2", "qwen3", "phi3", "gemma2", "gemma3_text", "mistral", "minicpm3")


#: special tokens a family's tokenizer class in transformers adds when the vocabulary lacks them (transformers 5
#: maps a qwen2 folder to Qwen2Tokenizer, which appends <|endoftext|> past the model's vocabulary)
FAMILY_SPECIALS = {"qwen2": ["<|endoftext|>"]}


def tokenizer(vocab_size: int = 320, extra_specials: tuple[str, ...] = (), texts: Sequence[str] = ()):
    """A byte-level BPE tokenizer trained on ``texts`` (default: the story corpus)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS + list(extra_specials),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts) or CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def config(family: str, vocab_size: int = 320, **overrides):
    """A tiny configuration of ``family`` (2 layers, width 64, grouped-query attention)."""
    import transformers

    common = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, bos_token_id=0,
                  eos_token_id=1, pad_token_id=2, tie_word_embeddings=False)
    if family == "gemma2":
        common.update(head_dim=16, sliding_window=16, layer_types=["sliding_attention", "full_attention"],
                      query_pre_attn_scalar=16)
    if family == "gemma3_text":
        common.update(head_dim=16, sliding_window=16, layer_types=["sliding_attention", "full_attention"],
                      query_pre_attn_scalar=16)
    if family == "minicpm3":
        common.update(num_key_value_heads=4, q_lora_rank=32, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8,
                      v_head_dim=16, tie_word_embeddings=True)
    classes = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config, "qwen3": transformers.Qwen3Config,
               "phi3": transformers.Phi3Config, "gemma2": transformers.Gemma2Config,
               "gemma3_text": transformers.Gemma3TextConfig, "mistral": transformers.MistralConfig,
               "minicpm3": transformers.MiniCPM3Config}
    return classes[family](**{**common, **overrides})


def save(folder: Path, cfg, *, seed: int = 0, train_steps: int = 0, init_std: float = 0.1) -> Path:
    """A model folder: random weights (seeded; larger than the default init, so logits are not near ties) or,
    with ``train_steps``, trained on the corpus so that its predictions are peaked."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    torch.manual_seed(seed)
    cfg.initializer_range = init_std
    model = AutoModelForCausalLM.from_config(cfg)
    tok = tokenizer(cfg.vocab_size, tuple(FAMILY_SPECIALS.get(cfg.model_type, ())))
    if train_steps:
        _train(model, tok, train_steps)
    model.eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    GenerationConfig(bos_token_id=0, eos_token_id=1, pad_token_id=2).save_pretrained(folder)
    return folder


def _train(model, tok, steps: int) -> None:
    ids = torch.tensor(tok("\n".join(CORPUS))["input_ids"])
    window = 48
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - window - 1, (16,), generator=generator)
        batch = torch.stack([ids[s:s + window] for s in starts])
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


#: the language model `stdlib_model` trains: a Llama of a few layers, wide enough for int4 groups of 32..128
STDLIB_MODEL = dict(vocab_size=1024, hidden_size=128, intermediate_size=384, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
STDLIB_TRAINING = dict(steps=1500, window=128, batch=16, lr=4e-3, seed=0)


def stdlib_model(models_dir: Path | None = None) -> Path:
    """A small Llama that knows something: trained here on Python standard-library sources
    (`calibration.corpus.TRAINING`), with a tokenizer trained on the same text, so its perplexity on held-out
    sources (`calibration.corpus.HELD_OUT`) is far below uniform and a quantized copy's loss is measurable.

    Kept in ``models_dir`` (default: ``models/`` in chipfit's cache) by the digest of everything that
    determines it (texts, settings, library versions), so a machine trains it once (about 90 s on two
    cores); written atomically, so a killed run leaves no half model."""
    import tokenizers
    import transformers

    from calibration.corpus import TRAINING, stdlib_text
    from compiler.cache_dir import default_cache_dir

    text = stdlib_text(TRAINING)
    key = json.dumps({"text": hashlib.sha256(text.encode()).hexdigest(), "model": STDLIB_MODEL,
                      "training": STDLIB_TRAINING, "torch": torch.__version__, "transformers": transformers.__version__,
                      "tokenizers": tokenizers.__version__, "format": 1}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    root = models_dir or default_cache_dir() / "models"
    folder = root / f"stdlib-llama-{digest}"
    if (folder / "config.json").is_file():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=root))
    try:
        cfg = config("llama", **STDLIB_MODEL)
        torch.manual_seed(STDLIB_TRAINING["seed"])
        cfg.initializer_range = 0.02
        from transformers import AutoModelForCausalLM, GenerationConfig

        model = AutoModelForCausalLM.from_config(cfg)
        tok = tokenizer(cfg.vocab_size, texts=text.split("\n\n"))
        ids = torch.tensor(tok(text)["input_ids"])
        _fit(model, ids, **{k: v for k, v in STDLIB_TRAINING.items() if k != "seed"})
        model.eval()
        model.save_pretrained(staging)
        tok.save_pretrained(staging)
        GenerationConfig(bos_token_id=0, eos_token_id=1, pad_token_id=2).save_pretrained(staging)
        (staging / "chipfit-training.json").write_text(key + "\n")
        try:
            os.rename(staging, folder)
        except OSError:  # another process trained it first: theirs is the same model
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def _fit(model, ids: torch.Tensor, *, steps: int, window: int, batch: int, lr: float) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - window - 1, (batch,), generator=generator)
        rows = torch.stack([ids[s:s + window] for s in starts])
        loss = model(input_ids=rows, labels=rows).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()


#: the vision-language families `vision_language` makes (`compiler.vlm.families`)
VISION_FAMILIES = ("qwen2_5_vl", "gemma3")
#: a Qwen2.5-VL's special tokens, in the order its tokenizer holds them
QWEN_VL_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                    "<|image_pad|>", "<|video_pad|>")


def vision_language(folder: Path, family: str = "qwen2_5_vl", *, seed: int = 0, init_std: float = 0.1,
                    text: dict | None = None, vision: dict | None = None, max_pixels: int = 224 * 224) -> Path:
    """A tiny vision-language folder of ``family`` with random weights (seeded): the text decoder as `config`'s,
    a 4-block vision encoder 32 wide at the family's released patch, merge and window sizes (runtimes hard-code
    some of them), the tokenizer with the family's special tokens, and its image processor's settings (images of
    56x56 to 224x224 pixels: 4 to 64 image tokens); ``text`` / ``vision`` override the configurations' fields
    (a benchmark's real widths)."""
    from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    if family == "gemma3":
        return _gemma3_vision_language(folder, seed=seed, init_std=init_std, text=text, vision=vision)
    if family != "qwen2_5_vl":
        raise ValueError(f"no synthetic {family!r}: families made here are {', '.join(VISION_FAMILIES)}")
    tok = tokenizer(320, QWEN_VL_SPECIALS)
    ids = {s: tok.convert_tokens_to_ids(s) for s in QWEN_VL_SPECIALS}
    text_fields = dict(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, bos_token_id=0,
                       eos_token_id=1, pad_token_id=2,
                       rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]})
    vision_fields = dict(depth=4, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                         fullatt_block_indexes=[1, 3], window_size=112)
    text_fields.update(text or {})
    vision_fields.update(vision or {})
    cfg = Qwen2_5_VLConfig(text_config=text_fields, vision_config=vision_fields, image_token_id=ids["<|image_pad|>"],
                           video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                           vision_end_token_id=ids["<|vision_end|>"],
                           tie_word_embeddings=bool(text_fields.get("tie_word_embeddings", False)))
    for part in (cfg, cfg.text_config, cfg.vision_config):
        part.initializer_range = init_std
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=max_pixels).save_pretrained(folder)
    GenerationConfig(bos_token_id=0, eos_token_id=1, pad_token_id=2).save_pretrained(folder)
    return folder


GEMMA3_SPECIALS = ("<start_of_image>", "<end_of_image>", "<image_soft_token>")


def _gemma3_vision_language(folder: Path, *, seed: int, init_std: float, text: dict | None, vision: dict | None
                            ) -> Path:
    """A tiny Gemma 3 with its SigLIP tower: 6 text layers in Gemma 3's pattern (5 sliding, 1 global), a 4-block
    encoder 32 wide over 224x224 images (16x16 patches of 14 pooled to 4x4 = 16 soft tokens per image), the
    projector drawn at random (transformers leaves it zero, which would make every image look the same)."""
    import json

    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, GenerationConfig
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    tok = tokenizer(320, GEMMA3_SPECIALS)
    ids = {s: tok.convert_tokens_to_ids(s) for s in GEMMA3_SPECIALS}
    text_fields = dict(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=6,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
                       sliding_window=16, query_pre_attn_scalar=16,
                       layer_types=["sliding_attention"] * 5 + ["full_attention"], bos_token_id=0, eos_token_id=1,
                       pad_token_id=2, **(text or {}))
    vision_fields = dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                         num_attention_heads=2, image_size=224, patch_size=14, vision_use_head=False, **(vision or {}))
    cfg = Gemma3Config(text_config=text_fields, vision_config=vision_fields, mm_tokens_per_image=16,
                       boi_token_index=ids["<start_of_image>"], eoi_token_index=ids["<end_of_image>"],
                       image_token_index=ids["<image_soft_token>"], tie_word_embeddings=True)
    for part in (cfg, cfg.text_config, cfg.vision_config):
        part.initializer_range = init_std
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0.0, init_std)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    Gemma3ImageProcessorPil(size={"height": 224, "width": 224}).save_pretrained(folder)
    pre = json.loads((folder / "preprocessor_config.json").read_text())
    pre["image_seq_length"] = 16  # what Gemma3Processor and llama.cpp's converter read the soft-token count from
    (folder / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
    GenerationConfig(bos_token_id=0, eos_token_id=1, pad_token_id=2).save_pretrained(folder)
    return folder
