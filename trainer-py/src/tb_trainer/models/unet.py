"""A small UNet with configurable width and depth."""

from __future__ import annotations

import torch
from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """UNet (Ronneberger et al. 2015), shrunk: `channels` filters at the top level,
    doubled at each of `depth` downsamplings. Input sides must divide by 2**depth.
    Outputs `num_classes` logits per pixel (1 for binary masks)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 1, channels: int = 16, depth: int = 3):
        super().__init__()
        if channels < 1 or depth < 1:
            raise ValueError("UNet needs channels >= 1 and depth >= 1")
        widths = [channels * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        cin = in_channels
        for w in widths[:-1]:
            self.down.append(_block(cin, w))
            cin = w
        self.bottom = _block(widths[-2], widths[-1])
        self.up = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for w_hi, w_lo in zip(reversed(widths[1:]), reversed(widths[:-1])):
            self.up.append(nn.ConvTranspose2d(w_hi, w_lo, 2, stride=2))
            self.up_blocks.append(_block(2 * w_lo, w_lo))
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        # Indexing rather than reversed(): TorchScript compiles this (train.export).
        for i, (up, block) in enumerate(zip(self.up, self.up_blocks)):
            x = block(torch.cat([up(x), skips[-1 - i]], dim=1))
        return self.head(x)
