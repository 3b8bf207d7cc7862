"""Benchmark models built in code (no downloads): a ResNet-18-sized conv net and a small transformer."""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.down is None else self.down(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + identity)


class ResNet18(nn.Module):
    """ResNet-18's layer layout (11.7 M parameters), random weights."""

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(512, classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layers(self.stem(image)).mean(dim=(2, 3)))


class TinyTransformer(nn.Module):
    """Four pre-norm encoder blocks, width 256, 4 heads, over 64 tokens."""

    def __init__(self, dim: int = 256, depth: int = 4, heads: int = 4) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
            for _ in range(depth)
        )
        self.head = nn.Linear(dim, 256)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            tokens = block(tokens)
        return self.head(tokens)


def randomized(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights with batch-norm statistics that keep activations in a realistic range."""
    torch.manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.0)
            nn.init.normal_(m.bias, 0.0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
            m.running_mean.normal_(0.0, 0.1)
    return module.eval()


class DigitsNet(nn.Module):
    """Two 3x3 convolutions around a ReLU, global average pooling, a linear classifier; for 8x8 digits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv2(torch.relu(self.conv1(image)))).mean(dim=(2, 3)))


def trained_digits(rescale_decades: float = 0.0, seed: int = 0):
    """(net, train images, test images, test labels): DigitsNet trained on scikit-learn's digits. With
    ``rescale_decades`` > 0, conv1's output channels are then scaled by factors spread over that many decades
    (and conv2's inputs by the inverse): exactly the same function, the per-channel range spread that batch-norm
    folding leaves in MobileNets (Nagel et al. 2019)."""
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    train, test = order[:1400], order[1400:]
    torch.manual_seed(seed)
    net = DigitsNet()
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train])
    for _ in range(60):
        for i in range(0, len(xt), 128):
            opt.zero_grad()
            nn.functional.cross_entropy(net(xt[i:i + 128]), yt[i:i + 128]).backward()
            opt.step()
    net.eval()
    if rescale_decades:
        factors = torch.from_numpy(np.logspace(-rescale_decades / 2, rescale_decades / 2, 8).astype(np.float32))
        factors = factors[rng.permutation(8)]
        with torch.no_grad():
            net.conv1.weight *= factors[:, None, None, None]
            net.conv1.bias *= factors
            net.conv2.weight /= factors[None, :, None, None]
    return net, x[train], x[test], y[test]
