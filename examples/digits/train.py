"""Train the bundled example network on scikit-learn's digits and write its files.

Run from the repository root (needs scikit-learn: ``pip install scikit-learn``):

    python examples/digits/train.py

Writes ``compiler/example/digits_cnn.npz`` (weights) and
``compiler/example/digits_samples.npz`` (64 held-out samples with labels).
Seeded, so a rerun gives the same weights on the same torch version.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from compiler.example.model import train

OUT = Path(__file__).resolve().parents[2] / "compiler" / "example"


def main() -> None:
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.25, random_state=0, stratify=labels
    )
    model = train(x_train, y_train, epochs=40)
    with torch.no_grad():
        acc = (model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean()
    print(f"held-out top-1: {acc:.4f} on {len(y_test)} digits")
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    np.savez(OUT / "digits_cnn.npz", **state)
    np.savez(OUT / "digits_samples.npz", image=x_test[:64], label=y_test[:64])


if __name__ == "__main__":
    main()
