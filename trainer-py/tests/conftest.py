"""Helpers: write a job dir and run the real trainer (`python -m tb_trainer`) on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Tiny, fast defaults: 32x32 tiles, a narrow UNet, a few batches per epoch.
TINY = {
    "model": "unet",
    "model_args": {"channels": 4, "depth": 2},
    "data": "surface_water",
    "data_args": {"samples": 48, "size": 32},
    "batch_size": 16,
    "max_epochs": 2,
    "patience": 0,
    "accelerator": "cpu",
}


def make_job(out: Path, **train) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    cfg = dict(TINY)
    cfg.update(train)
    doc = {"version": 1, "batch": "test", "name": out.name, "attempt": 1, "image": "tb-trainer:dev",
           "command": None, "gpus": 0, "env": {}, "swept": {}, "train": cfg}
    (out / "job.json").write_text(json.dumps(doc))
    return out


def trainer_env(out: Path, downloads: Path | None = None, **extra) -> dict:
    env = dict(os.environ)
    env.update(TB_OUT=str(out), TB_DOWNLOADS=str(downloads or out.parent / "downloads"),
               TB_BATCH="test", TB_JOB=out.name, TB_ATTEMPT="1", OMP_NUM_THREADS="1")
    env.pop("TB_RESUME", None)
    env.update(extra)
    return env


def run_trainer(out: Path, timeout: float = 240, **extra_env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tb_trainer"], env=trainer_env(out, **extra_env),
                          capture_output=True, text=True, timeout=timeout)


def read_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def read_result(out: Path) -> dict:
    return json.loads((out / "result.json").read_text())


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    return tmp_path / "job"
