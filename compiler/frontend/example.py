"""The bundled example as a `TracedModel`, with its held-out digits as samples."""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Iterable

import torch

from compiler.example import model as example
from compiler.frontend.pytorch import BATCH, from_program
from targets.signature import TensorSpec
from targets.model import TracedModel


def trace_example(overrides: Iterable[TensorSpec] = ()) -> TracedModel:
    module = example.load_example()
    batch = torch.export.Dim(BATCH, min=1, max=4096)
    # Example batch 2: torch.export specialises a dimension whose example size is 1.
    program = torch.export.export(
        module, (torch.zeros(2, *example.INPUT_SHAPE[1:]),), dynamic_shapes={example.INPUT_NAME: {0: batch}}
    )
    digest = hashlib.sha256()
    package = resources.files(example.__package__)
    for name in ("model.py", "digits_cnn.npz"):
        digest.update(package.joinpath(name).read_bytes())
    images, labels = example.example_samples()
    return from_program(
        program,
        name=example.NAME,
        source="example",
        digest=digest.hexdigest(),
        overrides=overrides,
        samples={example.INPUT_NAME: images, "label": labels},
    )
