"""Small callbacks: the metrics.jsonl writer, the target stop, and the SIGTERM stop."""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Optional

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only

from .config import Target


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _floats(metrics: dict) -> dict:
    out = {}
    for key, value in metrics.items():
        try:
            v = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(v):
            out[key] = v
    return out


def read_metrics(path: Path) -> list[dict]:
    """The well-formed lines of a metrics.jsonl; a torn or malformed line is skipped."""
    lines = []
    if not path.exists():
        return lines
    for raw in path.read_text().splitlines():
        try:
            rec = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("epoch"), int):
            lines.append(rec)
    return lines


class MetricsWriter(Callback):
    """Appends one line per validated epoch to `metrics.jsonl` (rank 0 only).

    `epoch` is 1-based: the number of epochs completed when the line was
    written. It runs in `on_train_epoch_end`, after validation and before the
    checkpoint callbacks, so the line always exists when `last.ckpt` says the
    epoch is done. On start (fresh or resumed) lines beyond the epoch that
    training continues from are dropped, so no epoch is ever repeated.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.history: list[dict] = []
        self.start_epoch: Optional[int] = None

    @rank_zero_only
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        done = trainer.current_epoch  # epochs completed by the checkpoint we continue from
        self.start_epoch = done
        kept = [r for r in read_metrics(self.path) if r["epoch"] <= done]
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self.history = kept

    @rank_zero_only
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = _floats({k: v for k, v in trainer.callback_metrics.items() if not k.endswith("_step")})
        metrics = {k.removesuffix("_epoch"): v for k, v in metrics.items()}
        if trainer.optimizers:
            metrics["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        rec = {
            "time": utc_now(),
            "epoch": trainer.current_epoch + 1,
            "step": int(trainer.global_step),
            "metrics": metrics,
        }
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.history.append(rec)


class TargetStop(Callback):
    """Stops training once `target.metric` reaches `at_least` / `at_most`."""

    def __init__(self, target: Target):
        self.target = target
        self.reached_at: Optional[int] = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.target.metric)
        reached = value is not None and self.target.reached(float(value))
        # Every rank must take the same decision, or DDP hangs.
        reached = trainer.strategy.reduce_boolean_decision(bool(reached), all=False)
        if reached:
            self.reached_at = trainer.current_epoch + 1
            trainer.should_stop = True


class Interrupted(Exception):
    """Raised inside the training loop after a SIGTERM or SIGINT."""

    def __init__(self, signum: int):
        super().__init__(f"received signal {signal.Signals(signum).name}")
        self.signum = signum


class StopOnSignal(Callback):
    """Turns SIGTERM/SIGINT into `Interrupted` at the next batch boundary.

    The handler only records the signal; raising from the loop (not from the
    handler) means no checkpoint write is ever cut in half by us.
    """

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._event = threading.Event()

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.signum = signum
        self._event.set()

    @property
    def received(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Interrupted(self.signum)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.check()

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.check()

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.check()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.check()
