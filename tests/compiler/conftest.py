"""Model folders of each decoder family, made once per session (random weights, tokenizer trained here)."""

from __future__ import annotations

import pytest

from compiler.llm.synthetic import FAMILIES, config, save


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {family: save(root / family, config(family)) for family in FAMILIES}


@pytest.fixture(scope="session")
def trained_dir(tmp_path_factory):
    """A tiny Llama trained on the corpus for a few seconds: its next-token predictions are peaked, so the
    agreement of a quantized artifact with it means something."""
    return save(tmp_path_factory.mktemp("trained") / "tiny-story", config("llama", hidden_size=128, intermediate_size=256),
                train_steps=200)
