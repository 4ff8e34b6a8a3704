"""`python -m tb_trainer --evaluate CKPT`: a checkpoint scored on the job's test split.

The model and the data are built from the job's `train` table exactly as for
training, the checkpoint's weights are loaded, and `trainer.test` runs on the
test split on one device. `evaluation.json` in the output directory gets the
test metrics and the monitor's test counterpart (`val_loss` → `test_loss`);
a score that is not a finite number is written as `null` (strict JSON).
tb runs this on the candidate of a deploy and on the deployed model alike, so
the two scores come from one piece of code on one set of tiles.
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Any, Optional

import lightning as L

from .callbacks import utc_now
from .config import ConfigError, Job
from .train import (
    _CpuThreads,
    build_datamodule,
    build_task,
    cap_gpu_memory,
    load_initial_weights,
    quiet_warnings,
    write_json,
)

EVALUATION = "evaluation.json"


def test_counterpart(monitor: str) -> str:
    """The test split's name for a validation metric: `val_loss` → `test_loss`,
    `val/iou` → `test/iou` (also `valid_`, `validation_`); any other name is its own."""
    return re.sub(r"^(val|valid|validation)(?=[_/])", "test", monitor)


def _finite(value: float) -> Optional[float]:
    """`value`, or None for NaN and infinities, which JSON has no number for."""
    return value if math.isfinite(value) else None


def _test_samples(dm: Any) -> Optional[int]:
    try:
        return len(dm.test_dataloader().dataset)
    except Exception:  # a user's datamodule need not expose its dataset
        return None


def evaluate(job: Job, checkpoint: Path) -> dict:
    """Scores `checkpoint` on the test split; writes and returns `evaluation.json`."""
    cfg = job.train
    out = Path(job.out_dir)
    started, t0 = utc_now(), time.monotonic()
    quiet_warnings()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    cap_gpu_memory()
    dm = build_datamodule(cfg, job)
    task = build_task(cfg, dm)
    load_initial_weights(task, checkpoint, "--evaluate")
    dm.prepare_data()
    dm.setup("test")
    if not getattr(dm, "has_test", lambda: True)():
        raise ConfigError("the data has no test split (`split.test` is 0): there is nothing to evaluate on")
    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=1,
        precision=cfg.precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(out),
        callbacks=[_CpuThreads()],
    )
    rows = trainer.test(task, datamodule=dm, verbose=False)
    test = {k: float(v) for row in rows for k, v in row.items()}
    metric = test_counterpart(cfg.monitor)
    if metric not in test:
        raise ConfigError(
            f"the test split logged {', '.join(sorted(test)) or 'nothing'}, not `{metric}` "
            f"(the test counterpart of the monitor `{cfg.monitor}`)"
        )
    doc = {
        "version": 1,
        "checkpoint": str(checkpoint),
        "monitor": cfg.monitor,
        "mode": cfg.mode,
        "metric": metric,
        "value": _finite(test[metric]),
        "test": {k: _finite(v) for k, v in test.items()},
        "samples": _test_samples(dm),
        "started_at": started,
        "finished_at": utc_now(),
        "duration_s": round(time.monotonic() - t0, 3),
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / EVALUATION, doc)
    return doc
