import json
import os
import subprocess
import sys

import pytest

from tb_trainer.config import ConfigError, Job, TrainConfig, parse_duration
from tb_trainer import registry


def test_defaults_are_valid():
    cfg = TrainConfig.from_dict({})
    assert cfg.model == "unet" and cfg.data == "surface_water" and cfg.mode == "min"


def test_unknown_key_names_the_valid_keys_and_the_nearest():
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict({"patiance": 3})
    msg = str(e.value)
    assert "`patiance`" in msg and "did you mean `patience`" in msg
    for key in ("model", "model_args", "data", "data_args", "max_epochs", "min_epochs", "monitor", "mode",
                "patience", "min_delta", "target", "max_time", "lr", "batch_size", "seed", "precision",
                "init_from", "split", "cv"):
        assert f"`{key}`" in msg


@pytest.mark.parametrize(
    "train, fragment",
    [
        ({"target": {"metric": "val_iou", "at_lest": 0.9}}, "did you mean `at_least`"),
        ({"target": {"metric": "val_iou"}}, "exactly one of"),
        ({"target": {"metric": "val_iou", "at_least": 0.9, "at_most": 0.1}}, "exactly one of"),
        ({"mode": "maximum"}, "`mode`"),
        ({"max_epochs": 0}, "`max_epochs` must be >= 1"),
        ({"max_epochs": "ten"}, "`max_epochs` must be an integer"),
        ({"min_epochs": 5, "max_epochs": 3}, "`min_epochs`"),
        ({"lr": -1}, "`lr` must be >= 0"),
        ({"patience": True}, "`patience` must be an integer"),
        ({"split": {"train": 0.5, "val": 0.2, "test": 0.2}}, "sum to 1"),
        ({"split": {"train": 0.8, "vall": 0.2}}, "did you mean `val`"),
        ({"cv": {"folds": 5, "fold": 5}}, "`cv.fold` must be < `cv.folds`"),
        ({"cv": {"folds": 1}}, "`cv.folds` must be >= 2"),
        ({"max_time": "soon"}, "`max_time`"),
        ({"precision": "8-bit"}, "`precision`"),
        ({"model_args": [1, 2]}, "`model_args` must be a table"),
        ({"devices": 0}, "`devices` must be >= 1"),
    ],
)
def test_invalid_values_are_rejected(train, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace("[", r"\[")):
        TrainConfig.from_dict(train)


def test_valid_values_are_normalised():
    cfg = TrainConfig.from_dict({
        "target": {"metric": "val_iou", "at_least": 0.9}, "split": [0.6, 0.2, 0.2], "cv": {"folds": 5, "fold": 4},
        "max_time": "1h30m", "precision": 32, "devices": 2, "max_epochs": 3.0,
    })
    assert cfg.target.reached(0.95) and not cfg.target.reached(0.85)
    assert cfg.split.test == 0.2 and cfg.cv.fold == 4
    assert cfg.max_time_seconds == 5400 and cfg.precision == "32" and cfg.max_epochs == 3


@pytest.mark.parametrize("value, seconds", [(90, 90), ("90s", 90), ("2m", 120), ("1d2h", 93600), ("00:01:00:05", 3605)])
def test_durations(value, seconds):
    assert parse_duration(value) == seconds


def test_job_file_tolerates_extra_top_level_keys(tmp_path):
    (tmp_path / "job.json").write_text(json.dumps(
        {"version": 1, "name": "a", "something_new": {"x": 1}, "train": {"max_epochs": 4}}))
    job = Job.load(out_dir=tmp_path, env={"TB_RESUME": "/out/checkpoints/last.ckpt", "TB_ATTEMPT": "2"})
    assert job.train.max_epochs == 4 and job.name == "a" and job.attempt == 2
    assert str(job.resume) == "/out/checkpoints/last.ckpt"


def test_main_exits_2_on_a_typo_before_training(tmp_path):
    (tmp_path / "job.json").write_text(json.dumps({"train": {"patiance": 3}}))
    proc = subprocess.run([sys.executable, "-m", "tb_trainer"], env={**os.environ, "TB_OUT": str(tmp_path)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "unknown key `patiance`" in proc.stderr and "did you mean `patience`" in proc.stderr
    assert not (tmp_path / "metrics.jsonl").exists() and not (tmp_path / "result.json").exists()


def test_main_exits_2_on_a_missing_or_broken_job_file(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tb_trainer", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "not found" in proc.stderr
    (tmp_path / "job.json").write_text("{nope")
    proc = subprocess.run([sys.executable, "-m", "tb_trainer", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "not valid JSON" in proc.stderr


def test_registry_short_names_and_module_paths(tmp_path, monkeypatch):
    assert registry.resolve_model("unet").__name__ == "UNet"
    assert registry.resolve_model("fcn").__name__ == "DilatedFCN"
    assert registry.resolve_datamodule("surface_water").__name__ == "SurfaceWaterDataModule"
    with pytest.raises(ConfigError, match="unknown model `unett`"):
        registry.resolve_model("unett")
    (tmp_path / "userpkg.py").write_text("class Net:\n    def __init__(self, in_channels, width=3):\n"
                                         "        self.args = (in_channels, width)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cls = registry.resolve_model("userpkg:Net")
    # Offered arguments the class does not take are dropped; user arguments win.
    obj = registry.construct(cls, {"width": 5}, {"in_channels": 6, "num_classes": 1}, "model")
    assert obj.args == (6, 5)
    with pytest.raises(ConfigError, match="has no `Nope`"):
        registry.resolve_model("userpkg:Nope")
    with pytest.raises(ConfigError, match="cannot import module `not_a_module`"):
        registry.resolve_datamodule("not_a_module:X")
