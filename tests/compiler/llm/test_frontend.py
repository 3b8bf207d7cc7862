"""Hugging Face model folders: read without loading weights, refused clearly when they cannot be built."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from compiler.errors import UsageError
from compiler.frontend import load_model
from compiler.frontend.huggingface import load_hf_directory
from targets.decoder import plan_memory


def _chipfit(*args):
    return subprocess.run([sys.executable, "-m", "compiler.cli", *args], capture_output=True, text=True, timeout=600)


def test_a_model_folder_is_read_into_its_decoder_layout(family_dirs):
    model = load_model(family_dirs["gemma3_text"])
    spec = model.spec
    assert (spec.architecture, spec.layers, spec.kv_heads, spec.head_dim) == ("Gemma3ForCausalLM", 2, 2, 16)
    assert spec.sliding_window == 16 and spec.sliding_layers == (0,)
    latent = load_hf_directory(family_dirs["minicpm3"]).spec  # MiniCPM3 caches its latent, not per-head keys
    assert (latent.kv_heads, latent.head_dim, latent.value_head_dim) == (1, 16, 8)


def test_the_memory_plan_on_a_known_config(family_dirs):
    spec = load_hf_directory(family_dirs["llama"]).spec
    # 2 layers x 2 kv heads x (16 + 16) x 4 bytes per token; no window
    assert spec.kv_bytes(100, 4) == 2 * 2 * 32 * 4 * 100
    assert spec.kv_bytes_per_token(2) == 2 * 2 * 32 * 2
    plan = plan_memory(spec, 100, "fp32", capacity_bytes=2**30, chunk=32)
    assert plan.weight_bytes == 4 * spec.parameters  # untied: embedding counted at fp32 too
    assert plan.total_bytes == plan.weight_bytes + plan.kv_cache_bytes + plan.workspace_bytes and plan.fits
    # the largest context that fits a capacity that holds the weights and 10 tokens of cache, workspace included
    cap = plan_memory(spec, 10, "fp32", None, chunk=32).total_bytes
    assert plan_memory(spec, 100, "fp32", cap, chunk=32).max_context_that_fits == 10
    gemma = load_hf_directory(family_dirs["gemma2"]).spec  # the sliding layer holds at most its window
    assert gemma.kv_bytes(200, 4) == 2 * 16 * 2 * 4 * (16 + 200)
    assert gemma.kv_bytes(200, 4, windowed=False) == 2 * 16 * 2 * 4 * 400


def _copy(src, dst, drop=(), edit=None):
    shutil.copytree(src, dst)
    for name in drop:
        (dst / name).unlink()
    if edit:
        config = json.loads((dst / "config.json").read_text())
        edit(config)
        (dst / "config.json").write_text(json.dumps(config))
    return dst


@pytest.mark.parametrize("case, expected", [
    ("no_config", "no config.json"),
    ("pickled", "pytorch_model.bin: pickled files, which chipfit never unpickles"),
    ("unknown_arch", "model_type 'no-such-lm' is no causal language model"),
    ("remote_code", "ships its own Python code"),
    # read as a text decoder, its vision tower would be left out and the text-only artifact "verified"
    ("vision_tower", "model_type 'llava' (LlavaForConditionalGeneration) is a vision-language model with a vision "
                     "tower"),
    ("image_model", "model_type 'smolvlm' (SmolVLMForConditionalGeneration) is a vision-language model"),
    ("no_tokenizer", "no tokenizer.json"),
    ("wrong_tokenizer", "this tokenizer is not the model's"),
])
def test_bad_model_folders_are_refused_before_work(family_dirs, tmp_path, case, expected):
    src, bad = family_dirs["llama"], tmp_path / "bad"
    if case == "no_config":
        _copy(src, bad, drop=["config.json"])
    elif case == "pickled":
        _copy(src, bad, drop=["model.safetensors"])
        (bad / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    elif case == "unknown_arch":
        _copy(src, bad, edit=lambda c: c.update(model_type="no-such-lm", architectures=["NoSuchLM"]))
    elif case == "remote_code":
        _copy(src, bad, edit=lambda c: c.update(auto_map={"AutoModelForCausalLM": "modeling_x.XForCausalLM"}))
    elif case == "vision_tower":
        _copy(src, bad, edit=lambda c: c.update(model_type="llava", architectures=["LlavaForConditionalGeneration"],
                                                vision_config={"model_type": "siglip_vision_model"}))
    elif case == "image_model":
        _copy(src, bad, edit=lambda c: c.update(model_type="smolvlm", architectures=["SmolVLMForConditionalGeneration"]))
    elif case == "no_tokenizer":
        _copy(src, bad, drop=["tokenizer.json"])
    elif case == "wrong_tokenizer":
        _copy(src, bad, edit=lambda c: c.update(vocab_size=50))
    done = _chipfit("build", str(bad), "-t", "host", "-o", str(tmp_path / "out"))
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr
    assert not (tmp_path / "out").exists()


def test_an_architecture_no_backend_lowers_is_named_with_the_supported_list(family_dirs, tmp_path):
    bad = _copy(family_dirs["llama"], tmp_path / "gpt2ish",
                edit=lambda c: c.update(model_type="gpt2", architectures=["GPT2LMHeadModel"], n_layer=2, n_head=4,
                                        n_embd=64))
    done = _chipfit("build", str(bad), "-t", "host", "-o", str(tmp_path / "out"))
    assert done.returncode == 2 and "is lowered by no backend" in done.stderr and "llama" in done.stderr


def test_context_and_memory_limits_are_refused_with_the_figures(family_dirs, tmp_path):
    done = _chipfit("build", str(family_dirs["llama"]), "-t", "host", "--context", "100000", "-o", str(tmp_path / "o"))
    assert done.returncode == 2 and "handles at most 256 positions" in done.stderr
    spec = tmp_path / "tiny-board.toml"
    from importlib import resources

    text = resources.files("targets").joinpath("specs", "x86-64-avx2.toml").read_text()
    spec.write_text(text.replace('id = "x86-64-avx2"', 'id = "tiny-board"')
                    .replace('memory_gb = "unknown"', "memory_gb = 0.0001")
                    .replace("[hardware.sources]", '[hardware.sources]\nmemory_gb = "a board made for this test"'))
    release = tmp_path / "release.toml"
    release.write_text(f'targets = ["{spec}"]\n[[model]]\npath = "{family_dirs["llama"]}"\n')
    done = _chipfit("release", str(release), "-o", str(tmp_path / "dist"), "--no-profile", "--no-cache")
    assert done.returncode == 2 and "cannot hold" in done.stderr and "GiB" in done.stderr, done.stderr
