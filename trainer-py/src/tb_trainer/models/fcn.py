"""A fully convolutional network without downsampling: dilated convolutions."""

from __future__ import annotations

import torch
from torch import nn


class DilatedFCN(nn.Module):
    """Context-aggregation network (Yu & Koltun 2016), small: `depth` 3x3 conv
    layers of `channels` filters with dilations 1, 2, 4, ... (capped at 8),
    then a 1x1 head. Full resolution throughout, so no size constraints; its
    receptive field grows with depth rather than by pooling as in the UNet."""

    def __init__(self, in_channels: int = 3, num_classes: int = 1, channels: int = 32, depth: int = 5):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for i in range(depth):
            d = min(2**i, 8)
            layers += [
                nn.Conv2d(cin, channels, 3, padding=d, dilation=d, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            ]
            cin = channels
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))
