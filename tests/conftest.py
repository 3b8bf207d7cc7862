"""Shared fixtures: small real models traced once per session."""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

os.environ.setdefault("TQDM_DISABLE", "1")
# chipfit's cache (kept tuning records, remembered speed decisions, the release cache's default) is per test
# session: a developer's own ~/.cache/chipfit must not change what the tests see, nor the tests write into it
# Isolated backends' environments (`chipfit toolchain install`, run by .ci/setup) are installed machine state like
# .venv, not cache: the tests use the machine's, found where they were installed before the cache moves.
if "CHIPFIT_TOOLCHAINS_DIR" not in os.environ:
    from compiler.isolated.environment import toolchains_dir

    os.environ["CHIPFIT_TOOLCHAINS_DIR"] = str(toolchains_dir())
os.environ["CHIPFIT_CACHE_DIR"] = tempfile.mkdtemp(prefix="chipfit-test-cache-")
#: models the tests train (`compiler.llm.synthetic.stdlib_model`), kept by content across sessions so a machine
#: trains each once; apart from chipfit's own cache
TEST_MODELS = Path(os.environ.get("CHIPFIT_TEST_MODELS_DIR")
                   or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "chipfit-test-models")
logging.getLogger("torch.onnx").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", module="torch")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


class TinyConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))


class TransformerBlock(nn.Module):
    """A pre-norm transformer encoder block: attention, LayerNorm, GELU MLP."""

    def __init__(self, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.norm1(tokens)
        tokens = tokens + self.attn(h, h, h, need_weights=False)[0]
        return tokens + self.mlp(self.norm2(tokens))


def seeded(module: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for p in module.parameters():
        nn.init.normal_(p, std=0.2)
    return module.eval()


@pytest.fixture(scope="session")
def conv_traced():
    from compiler.frontend import trace_module

    return trace_module(seeded(TinyConvNet()), (torch.zeros(2, 3, 16, 16),), name="tinyconv", dynamic_batch=True)


@pytest.fixture(scope="session")
def conv_pt2(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pt2") / "tinyconv.pt2"
    program = torch.export.export(
        seeded(TinyConvNet()), (torch.zeros(2, 3, 16, 16),), dynamic_shapes={"x": {0: torch.export.Dim("batch")}}
    )
    torch.export.save(program, path)
    return path


@pytest.fixture(scope="session")
def conv_onnx(conv_traced, tmp_path_factory) -> Path:
    import onnx

    path = tmp_path_factory.mktemp("onnx") / "tinyconv.onnx"
    onnx.save(conv_traced.onnx_model, path)
    return path


@pytest.fixture(scope="session")
def block_traced():
    from compiler.frontend import trace_module

    return trace_module(seeded(TransformerBlock()), (torch.zeros(1, 8, 32),), name="block")


@pytest.fixture(scope="session")
def example_traced():
    from compiler.frontend import load_model

    return load_model("example")


@pytest.fixture(scope="session")
def registry():
    from targets import target_registry

    return target_registry()


@pytest.fixture(scope="session")
def hf_bert():
    """A 2-layer BERT built from a config with random weights (no download), traced with input_ids."""
    transformers = pytest.importorskip("transformers")
    from compiler.frontend import trace_module

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=64)
    return trace_module(transformers.BertModel(config).eval(), {"input_ids": torch.randint(0, 100, (1, 16))}, name="bert")
