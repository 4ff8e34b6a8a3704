"""The job's configuration: `job.json` and its `train` table, validated into dataclasses.

Every check happens here, before any training starts; a bad value raises
`ConfigError`, which `main()` turns into exit status 2.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union


class ConfigError(ValueError):
    """The job's configuration is invalid; the message says what and where."""


def _path(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _reject_unknown(data: dict, cls: type, where: str) -> None:
    valid = [f.name for f in dataclasses.fields(cls) if f.init]
    for key in data:
        if key not in valid:
            hint = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
            msg = f"unknown key `{key}` in `{where}`"
            if hint:
                msg += f" (did you mean `{hint[0]}`?)"
            msg += "; valid keys: " + ", ".join(f"`{v}`" for v in valid)
            raise ConfigError(msg)


def _from_dict(cls: type, data: Any, where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"`{where}` must be a table, got {type(data).__name__}")
    _reject_unknown(data, cls, where)
    return cls(**data)


def _int(value: Any, name: str, minimum: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ConfigError(f"`{name}` must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"`{name}` must be >= {minimum}, got {value}")
    return value


def _float(value: Any, name: str, minimum: Optional[float] = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"`{name}` must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"`{name}` must be finite, got {value}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"`{name}` must be >= {minimum}, got {value}")
    return value


def _str(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"`{name}` must be a non-empty string, got {value!r}")
    return value


def _table(value: Any, name: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"`{name}` must be a table, got {value!r}")
    return dict(value)


_DURATION_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(value: Any, name: str = "max_time") -> float:
    """Seconds from `3600`, `"90s"`, `"1h30m"`, `"2d"` or Lightning's `"DD:HH:MM:SS"`."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and re.fullmatch(r"\d+:\d{1,2}:\d{1,2}:\d{1,2}", value):
        d, h, m, s = (int(p) for p in value.split(":"))
        seconds = float(d * 86400 + h * 3600 + m * 60 + s)
    elif isinstance(value, str) and re.fullmatch(r"(\d+(\.\d+)?[dhms])+", value.strip()):
        seconds = sum(
            float(n) * _DURATION_UNITS[u] for n, _, u in re.findall(r"(\d+(\.\d+)?)([dhms])", value)
        )
    else:
        raise ConfigError(
            f"`{name}` must be seconds or a duration like \"90s\", \"1h30m\", \"00:12:00:00\"; got {value!r}"
        )
    if seconds <= 0:
        raise ConfigError(f"`{name}` must be positive, got {value!r}")
    return seconds


@dataclass
class Target:
    """Stop as soon as `metric` reaches a value: `at_least` (higher is better) or `at_most`."""

    metric: str
    at_least: Optional[float] = None
    at_most: Optional[float] = None

    def __post_init__(self) -> None:
        self.metric = _str(self.metric, "target.metric")
        if (self.at_least is None) == (self.at_most is None):
            raise ConfigError("`target` needs exactly one of `at_least` or `at_most`")
        if self.at_least is not None:
            self.at_least = _float(self.at_least, "target.at_least")
        if self.at_most is not None:
            self.at_most = _float(self.at_most, "target.at_most")

    def reached(self, value: float) -> bool:
        if self.at_least is not None:
            return value >= self.at_least
        return value <= self.at_most


@dataclass
class Split:
    """Fractions of the samples for the train, validation and test splits; they sum to 1."""

    train: float = 0.7
    val: float = 0.15
    test: float = 0.15

    def __post_init__(self) -> None:
        self.train = _float(self.train, "split.train", 0.0)
        self.val = _float(self.val, "split.val", 0.0)
        self.test = _float(self.test, "split.test", 0.0)
        if self.train <= 0 or self.val <= 0:
            raise ConfigError("`split.train` and `split.val` must be > 0")
        if abs(self.train + self.val + self.test - 1.0) > 1e-6:
            raise ConfigError(
                f"`split` fractions must sum to 1, got {self.train} + {self.val} + {self.test}"
            )


@dataclass
class CrossValidation:
    """K-fold cross-validation: the non-test samples form `folds` folds; fold `fold`
    (0-based, `0 <= fold < folds`) is the validation split and the rest train."""

    folds: int
    fold: int = 0

    def __post_init__(self) -> None:
        self.folds = _int(self.folds, "cv.folds", 2)
        self.fold = _int(self.fold, "cv.fold", 0)
        if self.fold >= self.folds:
            raise ConfigError(f"`cv.fold` must be < `cv.folds` ({self.folds}), got {self.fold}")


EXPORTS = ("torchscript",)
"""What `train.export` may ask for."""

_PRECISIONS = {
    "64", "64-true", "32", "32-true", "16", "16-mixed", "16-true",
    "bf16", "bf16-mixed", "bf16-true", "transformer-engine",
}


@dataclass
class TrainConfig:
    """The `train` table of `job.json`: what to train, on what, and when to stop.

    Defaults give a CPU-friendly run of the surface-water UNet.
    """

    model: str = "unet"
    """Registry name (`unet`, `fcn`) or `module:Class` (e.g. from `/code`)."""
    model_args: dict = field(default_factory=dict)
    """Keyword arguments for the model's constructor, e.g. `{channels = 16}`."""
    data: str = "surface_water"
    """Registry name (`surface_water`) or `module:Class` of a LightningDataModule."""
    data_args: dict = field(default_factory=dict)
    """Keyword arguments for the datamodule's constructor."""
    max_epochs: int = 30
    min_epochs: int = 1
    """Early stopping and targets take effect only after this many epochs."""
    monitor: str = "val_loss"
    """Metric for early stopping and the best checkpoint."""
    mode: str = "min"
    """`min` or `max`: which direction of `monitor` is better."""
    patience: int = 5
    """Validations without an improvement of `monitor` before stopping; 0 disables early stopping."""
    min_delta: float = 0.0
    """Smallest change of `monitor` that counts as an improvement."""
    target: Optional[Target] = None
    """Stop once a logged metric reaches a value: `{metric, at_least | at_most}`."""
    max_time: Optional[Union[str, float]] = None
    """Soft time limit for fitting: seconds, `"1h30m"` or `"DD:HH:MM:SS"`; ends with `time_limit`."""
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    """`constant` or `cosine` (annealed to 0 over `max_epochs`)."""
    batch_size: int = 16
    num_workers: int = 0
    """DataLoader worker processes (need the job's `shm_size`)."""
    seed: int = 0
    precision: Union[str, int] = "32-true"
    init_from: Optional[str] = None
    """Checkpoint to take the initial weights from (not the optimizer or epoch); relative to the job dir."""
    split: Split = field(default_factory=Split)
    cv: Optional[CrossValidation] = None
    accelerator: str = "auto"
    """`auto` (GPU when visible), `cpu`, `gpu`, ..."""
    devices: Union[int, str] = "auto"
    """`auto` or a count; more than one device trains with DDP (on CPU too, with gloo)."""
    strategy: str = "auto"
    log_every_n_steps: int = 50
    """How often per-step values go to TensorBoard."""
    export: list = field(default_factory=list)
    """Exports of the best model written at the end of training: `["torchscript"]` (`export/model.pt`)."""

    def __post_init__(self) -> None:
        self.model = _str(self.model, "model")
        self.data = _str(self.data, "data")
        self.model_args = _table(self.model_args, "model_args")
        self.data_args = _table(self.data_args, "data_args")
        self.max_epochs = _int(self.max_epochs, "max_epochs", 1)
        self.min_epochs = _int(self.min_epochs, "min_epochs", 0)
        if self.min_epochs > self.max_epochs:
            raise ConfigError(
                f"`min_epochs` ({self.min_epochs}) must be <= `max_epochs` ({self.max_epochs})"
            )
        self.monitor = _str(self.monitor, "monitor")
        if self.mode not in ("min", "max"):
            raise ConfigError(f"`mode` must be \"min\" or \"max\", got {self.mode!r}")
        self.patience = _int(self.patience, "patience", 0)
        self.min_delta = _float(self.min_delta, "min_delta", 0.0)
        if isinstance(self.target, dict):
            self.target = _from_dict(Target, self.target, "target")
        elif self.target is not None and not isinstance(self.target, Target):
            raise ConfigError(f"`target` must be a table {{metric, at_least | at_most}}, got {self.target!r}")
        if self.max_time is not None:
            parse_duration(self.max_time)
        self.lr = _float(self.lr, "lr", 0.0)
        self.weight_decay = _float(self.weight_decay, "weight_decay", 0.0)
        if self.lr_schedule not in ("constant", "cosine"):
            raise ConfigError(f"`lr_schedule` must be \"constant\" or \"cosine\", got {self.lr_schedule!r}")
        self.batch_size = _int(self.batch_size, "batch_size", 1)
        self.num_workers = _int(self.num_workers, "num_workers", 0)
        self.seed = _int(self.seed, "seed", 0)
        if isinstance(self.precision, bool) or str(self.precision) not in _PRECISIONS:
            raise ConfigError(
                f"`precision` must be one of {sorted(_PRECISIONS)}, got {self.precision!r}"
            )
        self.precision = str(self.precision)
        if self.init_from is not None:
            self.init_from = _str(self.init_from, "init_from")
        if isinstance(self.split, (list, tuple)):
            if len(self.split) not in (2, 3):
                raise ConfigError(f"`split` as a list needs [train, val] or [train, val, test], got {self.split!r}")
            self.split = Split(*self.split) if len(self.split) == 3 else Split(*self.split, test=0.0)
        elif isinstance(self.split, dict):
            self.split = _from_dict(Split, self.split, "split")
        elif not isinstance(self.split, Split):
            raise ConfigError(f"`split` must be a table {{train, val, test}}, got {self.split!r}")
        if isinstance(self.cv, dict):
            self.cv = _from_dict(CrossValidation, self.cv, "cv")
        elif self.cv is not None and not isinstance(self.cv, CrossValidation):
            raise ConfigError(f"`cv` must be a table {{folds, fold}}, got {self.cv!r}")
        self.accelerator = _str(self.accelerator, "accelerator")
        if self.devices != "auto":
            self.devices = _int(self.devices, "devices", 1)
        self.strategy = _str(self.strategy, "strategy")
        self.log_every_n_steps = _int(self.log_every_n_steps, "log_every_n_steps", 1)
        if not isinstance(self.export, (list, tuple)):
            raise ConfigError(f"`export` must be a list such as [\"torchscript\"], got {self.export!r}")
        for kind in self.export:
            if kind not in EXPORTS:
                raise ConfigError(
                    f"`export` holds {kind!r}; it may hold " + ", ".join(f"\"{e}\"" for e in EXPORTS)
                )
        self.export = list(dict.fromkeys(self.export))

    @property
    def max_time_seconds(self) -> Optional[float]:
        return None if self.max_time is None else parse_duration(self.max_time)

    @classmethod
    def from_dict(cls, data: Any) -> "TrainConfig":
        return _from_dict(cls, data, "train")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Job:
    """One run of the trainer: the validated `train` table plus where to read and write.

    Only `train` of `job.json` is interpreted; other top-level keys belong to tb.
    """

    train: TrainConfig
    out_dir: Path
    downloads_dir: Path
    resume: Optional[Path] = None
    name: str = ""
    batch: str = ""
    attempt: int = 1
    warm_start: Optional[dict] = None
    """tb's `warm_start` of `job.json`: where `train.init_from` came from, under `[batch] warm_start`."""
    previous_best: Optional[str] = None
    """`TB_PREVIOUS_BEST`: the warm start's checkpoint, which tb made `train.init_from`."""

    @classmethod
    def load(
        cls,
        job_file: Optional[Path] = None,
        out_dir: Optional[Path] = None,
        env: Optional[dict] = None,
    ) -> "Job":
        env = dict(os.environ if env is None else env)
        out_dir = Path(out_dir or env.get("TB_OUT") or "/out")
        job_file = Path(job_file or out_dir / "job.json")
        try:
            doc = json.loads(job_file.read_text())
        except FileNotFoundError:
            raise ConfigError(f"job file `{job_file}` not found") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"job file `{job_file}` is not valid JSON: {e}") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"job file `{job_file}` must hold a JSON object")
        train = TrainConfig.from_dict(doc.get("train") or {})
        resume = env.get("TB_RESUME") or None
        attempt = env.get("TB_ATTEMPT") or doc.get("attempt") or 1
        try:
            attempt = int(attempt)
        except (TypeError, ValueError):
            attempt = 1
        return cls(
            train=train,
            out_dir=out_dir,
            downloads_dir=Path(env.get("TB_DOWNLOADS") or "/downloads"),
            resume=Path(resume) if resume else None,
            name=str(env.get("TB_JOB") or doc.get("name") or ""),
            batch=str(env.get("TB_BATCH") or doc.get("batch") or ""),
            attempt=attempt,
            warm_start=doc.get("warm_start") if isinstance(doc.get("warm_start"), dict) else None,
            previous_best=env.get("TB_PREVIOUS_BEST") or None,
        )
