"""An example of a user's own code for tb: a datamodule and a model, loaded by
`module:Class` from /code (tb mounts the batch file's `code` folder there and
puts it on PYTHONPATH). See ../custom_datamodule.toml.

The data: RGB tiles with round ponds on a textured field. A real project would
read its files here instead, e.g. from a folder given as a `mounts` entry.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, random_split


class PondsDataModule(L.LightningDataModule):
    """Binary segmentation of ponds in RGB tiles.

    The tb trainer reads `in_channels` and `num_classes` to build the model,
    and passes `batch_size`, `num_workers` (and `split`, `cv`, `downloads_dir`
    if the constructor takes them) from the job's `train` table; everything
    else comes from `data_args`.
    """

    in_channels = 3
    num_classes = 1

    def __init__(self, samples: int = 256, size: int = 32, seed: int = 0, batch_size: int = 16, num_workers: int = 0):
        super().__init__()
        self.samples, self.size, self.seed = samples, size, seed
        self.batch_size, self.num_workers = batch_size, num_workers

    def setup(self, stage: str | None = None) -> None:
        g = torch.Generator().manual_seed(self.seed)
        n, s = self.samples, self.size
        yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
        cy, cx = torch.rand(n, 2, 1, 1, generator=g).unbind(1)
        r = 2 + torch.rand(n, 1, 1, generator=g) * s / 5
        masks = (((yy - cy * s) ** 2 + (xx - cx * s) ** 2) < r**2).float().unsqueeze(1)
        field = torch.tensor([0.35, 0.45, 0.25]).view(1, 3, 1, 1)
        pond = torch.tensor([0.10, 0.20, 0.30]).view(1, 3, 1, 1)
        images = field * (1 - masks) + pond * masks + 0.08 * torch.randn(n, 3, s, s, generator=g)
        self.train_set, self.val_set, self.test_set = random_split(
            TensorDataset(images, masks), [0.7, 0.15, 0.15], generator=torch.Generator().manual_seed(self.seed)
        )

    def _loader(self, ds, shuffle: bool = False) -> DataLoader:
        return DataLoader(ds, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set)


class TinySegNet(nn.Module):
    """A plain nn.Module: tb wraps it in its segmentation LightningModule
    (loss, val_loss/val_iou, optimizer), passing `in_channels` and `num_classes`."""

    def __init__(self, in_channels: int = 3, num_classes: int = 1, width: int = 16):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=2, dilation=2), nn.ReLU(),
            nn.Conv2d(width, num_classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
