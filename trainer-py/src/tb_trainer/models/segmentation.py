"""The LightningModule for segmentation: loss, metrics and optimizer around any `nn.Module`."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import BinaryJaccardIndex, MulticlassJaccardIndex


class SegmentationTask(L.LightningModule):
    """Trains `net` on `(image, mask)` batches.

    One output channel: binary masks (0/1), BCE loss, `*_iou` of the positive
    class. More channels: integer class masks, cross-entropy, mean IoU.
    Logs `train_loss`, `val_loss`, `val_iou`, `test_loss`, `test_iou`.
    """

    def __init__(
        self,
        net: nn.Module,
        num_classes: int = 1,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        lr_schedule: str = "constant",
        max_epochs: int = 1,
    ):
        super().__init__()
        self.net = net
        self.num_classes = num_classes
        self.lr = lr
        self.weight_decay = weight_decay
        self.lr_schedule = lr_schedule
        self.max_epochs = max_epochs
        make_iou = (lambda: BinaryJaccardIndex()) if num_classes == 1 else (
            lambda: MulticlassJaccardIndex(num_classes=num_classes)
        )
        self.val_iou = make_iou()
        self.test_iou = make_iou()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.num_classes == 1:
            y = y.float().view_as(logits)
            return F.binary_cross_entropy_with_logits(logits, y), y.long()
        y = y.long()
        if y.dim() == logits.dim():
            y = y.squeeze(1)
        return F.cross_entropy(logits, y), y

    def _preds(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.num_classes == 1 else logits.argmax(1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss, _ = self._loss(self(x), y)
        # Epoch mean only: a per-step log is overhead a plain loop does not pay.
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=x.shape[0], sync_dist=True)
        return loss

    def _eval_step(self, batch, stage: str, iou) -> None:
        x, y = batch
        logits = self(x)
        loss, target = self._loss(logits, y)
        iou.update(self._preds(logits), target)
        self.log(f"{stage}_loss", loss, on_epoch=True, batch_size=x.shape[0], sync_dist=True)
        self.log(f"{stage}_iou", iou, on_epoch=True)

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val", self.val_iou)

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test", self.test_iou)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        if self.lr_schedule == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.max_epochs))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        return opt
