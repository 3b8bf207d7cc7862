"""Hugging Face folders of encoder, vision and speech models made here from a config (random weights), with the
processor files a user's folder has: for tests, benchmarks and trying the optimum front end offline.

``bert`` (sequence classification, a WordPiece tokenizer trained on the standard library's sources), ``vit``
(image classification, a ViT image processor), ``wav2vec2`` (CTC speech recognition, a feature extractor) and
``clip`` (a dual encoder: the same tokenizer and a CLIP image processor).
Widths default to tiny; ``benchmarks/speed.py`` asks for BERT-base and ViT-base widths.
"""

from __future__ import annotations

from pathlib import Path

KINDS = ("bert", "vit", "wav2vec2", "clip")


def _wordpiece(vocab_size: int):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    from calibration.corpus import stdlib_text

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    text = stdlib_text(("textwrap", "string", "shlex"))
    tokenizer.train_from_iterator(text.splitlines(), trainers.WordPieceTrainer(vocab_size=vocab_size,
                                                                               special_tokens=special))
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return tokenizer


def hf_folder(folder: Path, kind: str = "bert", hidden: int = 32, layers: int = 2, heads: int = 2,
              seed: int = 0) -> Path:
    """A ``save_pretrained`` folder of ``kind`` (see `KINDS`) with random weights and its processor files."""
    import torch
    from transformers import PreTrainedTokenizerFast

    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: one of {', '.join(KINDS)}")
    torch.manual_seed(seed)
    folder = Path(folder)
    common = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                  intermediate_size=4 * hidden)
    if kind == "bert":
        from transformers import BertConfig, BertForSequenceClassification

        tokenizer = _wordpiece(500)
        config = BertConfig(vocab_size=tokenizer.get_vocab_size(), max_position_embeddings=128, num_labels=3,
                            **common)
        BertForSequenceClassification(config).eval().save_pretrained(folder)
        PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                sep_token="[SEP]", mask_token="[MASK]").save_pretrained(folder)
    elif kind == "vit":
        from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

        size = 224 if hidden >= 256 else 32
        config = ViTConfig(image_size=size, patch_size=16 if size == 224 else 8, num_labels=5, **common)
        ViTForImageClassification(config).eval().save_pretrained(folder)
        ViTImageProcessor(size={"height": size, "width": size}).save_pretrained(folder)
    elif kind == "clip":
        from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

        tokenizer = _wordpiece(500)
        text = dict(vocab_size=tokenizer.get_vocab_size(), max_position_embeddings=32, pad_token_id=0,
                    eos_token_id=tokenizer.token_to_id("[SEP]"), bos_token_id=tokenizer.token_to_id("[CLS]"), **common)
        vision = dict(image_size=32, patch_size=8, **common)
        CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval().save_pretrained(folder)
        PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]", bos_token="[CLS]",
                                eos_token="[SEP]").save_pretrained(folder)
        CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    else:
        from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

        config = Wav2Vec2Config(vocab_size=32, conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3),
                                num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, pad_token_id=0,
                                **common)
        Wav2Vec2ForCTC(config).eval().save_pretrained(folder)
        Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=False).save_pretrained(folder)
    return folder
