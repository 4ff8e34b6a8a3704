"""`train(job) -> Result`: one training run, from a validated `Job` to `result.json`."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import time
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, Timer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from . import registry
from .callbacks import Interrupted, MetricsWriter, StopOnSignal, TargetStop, utc_now
from .config import ConfigError, Job, TrainConfig
from .models.segmentation import SegmentationTask

log = logging.getLogger("tb_trainer")

@dataclass
class Result:
    """What `result.json` holds. `epochs` and `best.epoch` count completed epochs (1-based)."""

    stop_reason: str
    epochs: int
    best: Optional[dict]
    final: dict
    test: Optional[dict]
    started_at: str
    finished_at: str
    duration_s: float
    resumed_from_epoch: Optional[int] = None
    signal: Optional[int] = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        doc = {"version": 1}
        doc.update({k: v for k, v in dataclasses.asdict(self).items() if k != "extra"})
        doc.update(self.extra)
        return doc

    def write(self, path: Path) -> None:
        write_json(path, self.to_json())


def write_json(path: Path, doc: dict) -> None:
    """Atomically: a temp file in the same directory, fsync, rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def cpu_quota() -> Optional[int]:
    """CPUs granted by the cgroup (`docker --cpus`), which torch does not see."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return None


class _CpuThreads(Callback):
    """One share of the CPUs per process, so CPU DDP does not oversubscribe the cores."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if "OMP_NUM_THREADS" in os.environ or not isinstance(trainer.accelerator, CPUAccelerator):
            return
        cpus = cpu_quota() or os.cpu_count() or 1
        per_process = max(1, cpus // max(1, trainer.num_devices))
        if per_process < torch.get_num_threads():
            torch.set_num_threads(per_process)


def cap_gpu_memory(env: Optional[dict] = None) -> Optional[float]:
    """A job given a share of a GPU (`gpus = 0.5` sets TB_GPU_SHARE=0.5) keeps to
    that share of the GPU's memory, so the jobs packed onto one GPU cannot run
    each other out of it. Returns the fraction applied, if any."""
    share = (os.environ if env is None else env).get("TB_GPU_SHARE")
    if not share or not torch.cuda.is_available():
        return None
    try:
        fraction = float(share)
    except ValueError:
        log.warning("TB_GPU_SHARE=%r is not a number; the GPU's memory is not capped", share)
        return None
    if not 0 < fraction < 1:
        return None
    for device in range(torch.cuda.device_count()):
        torch.cuda.set_per_process_memory_fraction(fraction, device)
    log.info("a %s share of the GPU: its memory is capped at that fraction", share)
    return fraction


def build_datamodule(cfg: TrainConfig, job: Job) -> L.LightningDataModule:
    cls = registry.resolve_datamodule(cfg.data)
    offered = {
        "batch_size": cfg.batch_size,
        "num_workers": cfg.num_workers,
        "split": cfg.split,
        "cv": cfg.cv,
        "downloads_dir": str(job.downloads_dir),
    }
    return registry.construct(cls, cfg.data_args, offered, "data")


def build_task(cfg: TrainConfig, dm: Any) -> L.LightningModule:
    cls = registry.resolve_model(cfg.model)
    num_classes = getattr(dm, "num_classes", None) or 1
    offered = {"in_channels": getattr(dm, "in_channels", None), "num_classes": num_classes}
    offered = {k: v for k, v in offered.items() if v is not None}
    if isinstance(cls, type) and issubclass(cls, L.LightningModule):
        offered.update(lr=cfg.lr, weight_decay=cfg.weight_decay, max_epochs=cfg.max_epochs)
        return registry.construct(cls, cfg.model_args, offered, "model")
    net = registry.construct(cls, cfg.model_args, offered, "model")
    return SegmentationTask(
        net,
        num_classes=num_classes,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        lr_schedule=cfg.lr_schedule,
        max_epochs=cfg.max_epochs,
    )


def load_initial_weights(task: L.LightningModule, path: Path, what: str = "`init_from`") -> None:
    """The weights of the checkpoint at `path` (a Lightning checkpoint or a
    bare `state_dict` of the network) into `task`; `what` names it in errors."""
    if not path.is_file():
        raise ConfigError(f"{what} checkpoint `{path}` not found")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else ckpt
    try:
        task.load_state_dict(state)
    except RuntimeError as first:
        net = getattr(task, "net", None)
        if net is None:
            raise ConfigError(f"{what} `{path}` does not fit the model: {first}") from None
        try:
            net.load_state_dict(state)  # a bare nn.Module state dict
        except RuntimeError:
            raise ConfigError(f"{what} `{path}` does not fit the model: {first}") from None


def _init_path(job: Job, path: str) -> Path:
    return Path(path) if os.path.isabs(path) else Path(job.out_dir) / path


def _is_warm_start(job: Job) -> bool:
    """`train.init_from` is tb's warm start (`[batch] warm_start`), not the job's own."""
    warm = job.warm_start or {}
    return warm.get("kind") == "warm" and job.previous_best is not None and job.train.init_from == job.previous_best


def _misfit(e: Exception) -> str:
    """The telling line of a checkpoint that does not fit (torch lists every mismatch)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    telling = next((line for line in lines if line.startswith(("size mismatch", "Missing key", "Unexpected key"))), None)
    text = telling or (lines[0] if lines else type(e).__name__)
    return text if len(text) <= 200 else text[:197] + "..."


def initial_weights(cfg: TrainConfig, job: Job, dm: Any, task: L.LightningModule) -> tuple[L.LightningModule, Optional[dict]]:
    """`task` with the weights of `train.init_from`. A warm-start checkpoint
    (tb's, from the previous batch) that does not fit the network — the data
    may now have other channels or classes — is no error: the job starts
    cold (from its own `init_from`, if warm start replaced one), says why in
    the log, and returns the note for `result.json`."""
    try:
        load_initial_weights(task, _init_path(job, cfg.init_from))
        return task, None
    except ConfigError as e:
        if not _is_warm_start(job):
            raise
        what = "did not fit the model" if "does not fit" in str(e) else "could not be loaded"
        why = f"the warm-start checkpoint {what}, so the trainer started cold ({_misfit(e)})"
    log.warning("%s", why)
    # A load that failed may have copied the tensors that did fit: new weights.
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    task = build_task(cfg, dm)
    own = (job.warm_start or {}).get("replaced_init_from")
    if own:
        load_initial_weights(task, _init_path(job, own))
    return task, {"kind": "cold", "why": why}


def quiet_warnings() -> None:
    """Lightning's chatter about num_workers and DDP samplers is noise for tb's logs."""
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*Using DistributedSampler.*")
    warnings.filterwarnings("ignore", ".*is smaller than the logging interval.*")
    warnings.filterwarnings("ignore", ".*treespec, LeafSpec.*")


def _best(history: list[dict], ckpt_cb: ModelCheckpoint, cfg: TrainConfig, ckpt_dir: Path, out: Path) -> Optional[dict]:
    """Best value of `monitor`, and the epoch that set it (first strict improvement, as ModelCheckpoint)."""
    best_value, best_epoch = None, None
    for rec in history:
        v = rec["metrics"].get(cfg.monitor)
        if v is None:
            continue
        if best_value is None or (v < best_value if cfg.mode == "min" else v > best_value):
            best_value, best_epoch = v, rec["epoch"]
    if best_value is None and ckpt_cb.best_model_score is not None:
        best_value = float(ckpt_cb.best_model_score)
    if best_value is None:
        return None
    best_path = ckpt_dir / "best.ckpt"
    return {
        "metric": cfg.monitor,
        "value": best_value,
        "epoch": best_epoch,
        "checkpoint": str(best_path.relative_to(out)) if best_path.exists() else None,
    }


def train(job: Job) -> Result:
    """Fit, pick the best checkpoint, test it; write metrics.jsonl and result.json."""
    cfg = job.train
    out = Path(job.out_dir)
    ckpt_dir = out / "checkpoints"
    started, t0 = utc_now(), time.monotonic()
    stopper = StopOnSignal()
    stopper.install()

    quiet_warnings()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    cap_gpu_memory()

    dm = build_datamodule(cfg, job)
    task = build_task(cfg, dm)
    notes: dict = {}
    if cfg.init_from:
        task, started_cold = initial_weights(cfg, job, dm, task)
        if started_cold:
            notes["warm_start"] = started_cold

    resume = job.resume
    if resume is not None and not resume.is_file():
        log.warning("TB_RESUME checkpoint %s does not exist; starting from scratch", resume)
        resume = None

    writer = MetricsWriter(out / "metrics.jsonl")
    ckpt_cb = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        monitor=cfg.monitor,
        mode=cfg.mode,
        save_top_k=1,
        save_last=False,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
        auto_insert_metric_name=False,
    )
    # A second, unmonitored checkpoint for last.ckpt: Lightning >= 2.6 writes
    # `save_last` only in epochs where the monitored checkpoint improved.
    last_cb = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="last",
        monitor=None,
        save_top_k=1,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
        auto_insert_metric_name=False,
    )
    callbacks: list[Callback] = [stopper, writer, _CpuThreads(), ckpt_cb, last_cb]
    early = None
    if cfg.patience > 0:
        early = EarlyStopping(
            monitor=cfg.monitor,
            mode=cfg.mode,
            patience=cfg.patience,
            min_delta=cfg.min_delta,
            check_on_train_epoch_end=True,
        )
        callbacks.append(early)
    target = TargetStop(cfg.target) if cfg.target else None
    if target:
        callbacks.append(target)
    timer = Timer(duration=timedelta(seconds=cfg.max_time_seconds), interval="step") if cfg.max_time else None
    if timer:
        callbacks.append(timer)

    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=cfg.strategy,
        precision=cfg.precision,
        max_epochs=cfg.max_epochs,
        min_epochs=cfg.min_epochs,
        callbacks=callbacks,
        logger=TensorBoardLogger(save_dir=str(out), name="tensorboard", version="", default_hp_metric=False),
        default_root_dir=str(out),
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=True,
        log_every_n_steps=cfg.log_every_n_steps,
        check_val_every_n_epoch=1,
    )
    if trainer.is_global_zero:
        out.mkdir(parents=True, exist_ok=True)
        (out / "result.json").unlink(missing_ok=True)  # a previous attempt's

    def finish(stop_reason: str, test: Optional[dict], signum: Optional[int] = None, extra: Optional[dict] = None) -> Result:
        extra = {**notes, **(extra or {})}
        history = writer.history
        result = Result(
            stop_reason=stop_reason,
            epochs=history[-1]["epoch"] if history else 0,
            best=_best(history, ckpt_cb, cfg, ckpt_dir, out),
            final=dict(history[-1]["metrics"]) if history else {},
            test=test,
            started_at=started,
            finished_at=utc_now(),
            duration_s=round(time.monotonic() - t0, 3),
            resumed_from_epoch=writer.start_epoch if resume else None,
            signal=signum,
            extra=extra,
        )
        if trainer.is_global_zero:
            result.write(out / "result.json")
        return result

    try:
        stopper.check()
        trainer.fit(task, datamodule=dm, ckpt_path=str(resume) if resume else None)
    except (Interrupted, SIGTERMException):
        return finish("interrupted", None, stopper.signum or signal.SIGTERM)

    if target is not None and target.reached_at is not None:
        stop_reason = "target_reached"
    elif early is not None and early.stopped_epoch > 0:
        stop_reason = "early_stopping"
    elif timer is not None and (timer.time_remaining("train") or 0) <= 0:
        stop_reason = "time_limit"
    else:
        stop_reason = "max_epochs"

    test = None
    best_path = ckpt_dir / "best.ckpt"
    has_test = getattr(dm, "has_test", lambda: True)()
    if has_test and hasattr(dm, "test_dataloader") and (best_path.exists() or not trainer.is_global_zero):
        try:
            rows = trainer.test(task, datamodule=dm, ckpt_path=str(best_path), verbose=False)
        except (Interrupted, SIGTERMException):
            return finish("interrupted", None, stopper.signum or signal.SIGTERM)
        test = {k: float(v) for row in rows for k, v in row.items()}
    extra = {}
    if cfg.export and trainer.is_global_zero and best_path.exists():
        from .export import export_all

        try:
            extra["export"] = export_all(cfg.export, task, dm, best_path, out)
        except Exception as e:  # the training succeeded; the export says why it did not
            log.warning("export failed: %s", e)
            extra["export"] = {kind: {"error": str(e)} for kind in cfg.export}
    return finish(stop_reason, test, extra=extra)
