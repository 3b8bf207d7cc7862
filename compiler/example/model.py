"""The bundled example: a small conv net that classifies 8x8 handwritten digits.

Its weights were trained on scikit-learn's bundled digits data set by
``examples/digits/train.py`` and ship beside this file as ``digits_cnn.npz``
(plain arrays, loaded with ``allow_pickle=False``), together with 64 held-out
samples and their labels in ``digits_samples.npz``. It has Conv + BatchNorm +
ReLU blocks, pooling and a classifier, so fusion and quantization have real
work to do, and it builds for every built-in target in seconds.
"""

from __future__ import annotations

from importlib import resources

import io

import numpy as np
import torch
from torch import nn

NAME = "example"
INPUT_NAME = "image"
INPUT_SHAPE = (1, 1, 8, 8)


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.pool = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(32, 32, 3, padding=1)
        self.classifier = nn.Linear(32, 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(image)))
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))
        x = torch.relu(self.conv3(x))
        return self.classifier(x.mean(dim=(2, 3)))


def train(images: np.ndarray, labels: np.ndarray, epochs: int, seed: int = 0) -> DigitsCNN:
    """A fresh DigitsCNN trained with Adam on (N x 1 x 8 x 8 float32, N int64); seeded, in eval mode."""
    torch.manual_seed(seed)
    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            batch = order[i : i + 64]
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def _data_file(name: str) -> np.lib.npyio.NpzFile:
    return np.load(io.BytesIO(resources.files(__package__).joinpath(name).read_bytes()), allow_pickle=False)


def load_example() -> DigitsCNN:
    """The trained example network, in eval mode."""
    model = DigitsCNN()
    with _data_file("digits_cnn.npz") as weights:
        state = {k: torch.from_numpy(weights[k]) for k in weights.files}
    model.load_state_dict(state)
    return model.eval()


def example_samples() -> tuple[np.ndarray, np.ndarray]:
    """Held-out digits (N x 1 x 8 x 8 float32, scaled to [0, 1]) and their labels."""
    with _data_file("digits_samples.npz") as data:
        return data["image"], data["label"]
