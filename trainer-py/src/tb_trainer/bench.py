"""`python -m tb_trainer.bench`: trainer throughput against a plain PyTorch loop.

Both train the same UNet on the same synthetic surface-water tensors, with the
same batch size, DataLoader (num_workers=0), optimizer and loss, on CPU. Both
get one warm-up epoch, then are timed over the same number of epochs, in
alternating rounds so that drift of the machine hits both alike. Only training
is timed (the trainer's validation is off, as the plain loop has none).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, TensorDataset

from .data.surface_water import synthesize
from .models.segmentation import SegmentationTask
from .models.unet import UNet


def _data(args) -> TensorDataset:
    x, y = synthesize(args.samples, args.size, seed=0)
    x = (x - x.mean(dim=(0, 2, 3), keepdim=True)) / x.std(dim=(0, 2, 3), keepdim=True)
    return TensorDataset(x.contiguous(), y)


def _loader(ds, args, seed: int) -> DataLoader:
    return DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=0,
                      generator=torch.Generator().manual_seed(seed))


def plain(ds, args) -> float:
    """Samples/s of a hand-written loop over `args.epochs` epochs after one warm-up epoch."""
    torch.manual_seed(0)
    model = UNet(in_channels=ds.tensors[0].shape[1], channels=args.channels)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = _loader(ds, args, 0)
    model.train()
    times = []
    for epoch in range(args.epochs + 1):
        t = time.perf_counter()
        for x, y in loader:
            loss = F.binary_cross_entropy_with_logits(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if epoch > 0:
            times.append(time.perf_counter() - t)
    return len(ds) * len(times) / sum(times)


class _EpochTimer(Callback):
    def __init__(self):
        self.times, self._t = [], 0.0

    def on_train_epoch_start(self, trainer, pl_module):
        self._t = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.times.append(time.perf_counter() - self._t)


def lightning(ds, args) -> float:
    """Samples/s of tb's trainer setup (SegmentationTask, Trainer as train.py makes it)."""
    torch.manual_seed(0)
    task = SegmentationTask(UNet(in_channels=ds.tensors[0].shape[1], channels=args.channels), lr=1e-3)
    timer = _EpochTimer()
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=args.epochs + 1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=0, callbacks=[timer], log_every_n_steps=50,
    )
    trainer.fit(task, train_dataloaders=_loader(ds, args, 0))
    times = timer.times[1:]
    return len(ds) * len(times) / sum(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tb_trainer.bench", description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    ds = _data(args)
    plain_runs, trainer_runs = [], []
    for _ in range(args.rounds):
        plain_runs.append(plain(ds, args))
        trainer_runs.append(lightning(ds, args))
    p_med, t_med = statistics.median(plain_runs), statistics.median(trainer_runs)
    res = {
        "threads": torch.get_num_threads(),
        "samples": args.samples, "size": args.size, "batch_size": args.batch_size, "channels": args.channels,
        "plain_samples_per_s": round(p_med, 2),
        "trainer_samples_per_s": round(t_med, 2),
        "ratio": round(t_med / p_med, 3),
        "plain_runs": [round(v, 2) for v in plain_runs],
        "trainer_runs": [round(v, 2) for v in trainer_runs],
    }
    if args.json:
        print(json.dumps(res))
    else:
        print(f"plain PyTorch loop : {res['plain_samples_per_s']:8.1f} samples/s  (runs {res['plain_runs']})")
        print(f"tb trainer         : {res['trainer_samples_per_s']:8.1f} samples/s  (runs {res['trainer_runs']})")
        print(f"ratio trainer/plain: {res['ratio']:.3f}   (UNet w{args.channels}, {args.samples} tiles "
              f"{args.size}x{args.size}, batch {args.batch_size}, {res['threads']} threads)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
