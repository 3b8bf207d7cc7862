"""Model folders of each decoder family, made once per session (random weights, tokenizer trained here)."""

from __future__ import annotations

import pytest

from compiler.llm.synthetic import FAMILIES, config, save, stdlib_model
from tests.conftest import TEST_MODELS


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


@pytest.fixture(scope="session")
def stdlib_lm():
    """A small Llama trained on standard-library sources (`stdlib_model`): its held-out perplexity is far below
    uniform, so what int4 costs it, and what calibration wins back, can be measured."""
    return stdlib_model(TEST_MODELS)


#: verification prompts in the stdlib model's own domain (a user verifies on theirs: ``--samples``); on the
#: default English prompts its greedy agreement swings by a few points between int4 variants
CODE_PROMPTS = ('def __init__(self, name, value=None):', '    """Return the number of items in the queue."""',
                "import os", "from collections import", "class Error(Exception):", "    def __repr__(self):")


@pytest.fixture(scope="session")
def code_prompts(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "code.txt"
    path.write_text("\n".join(CODE_PROMPTS) + "\n")
    return str(path)
