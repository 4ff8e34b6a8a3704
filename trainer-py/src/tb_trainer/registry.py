"""Short names for the built-in models and datamodules, and `module:Class` loading.

A name with a colon is imported: `my_pkg.data:LakesDataModule` finds `my_pkg`
on `sys.path`, which includes `/code` when tb mounts a job's `code` there.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from typing import Any, Callable

from .config import ConfigError

# Lazy "module:attr" strings keep `import tb_trainer` free of torch for config checks.
MODELS: dict[str, str] = {
    "unet": "tb_trainer.models.unet:UNet",
    "fcn": "tb_trainer.models.fcn:DilatedFCN",
}
DATAMODULES: dict[str, str] = {
    "surface_water": "tb_trainer.data.surface_water:SurfaceWaterDataModule",
}


def _import(path: str, kind: str) -> Any:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{kind} `{path}` must be a registered name or `module:Class`")
    # /code is tb's mount point for the user's project; make it importable even
    # when PYTHONPATH was not set (running the image by hand).
    code = os.environ.get("TB_CODE", "/code")
    if os.path.isdir(code) and code not in sys.path:
        sys.path.append(code)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"cannot import module `{module_name}` for {kind} `{path}`: {e}") from e
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"module `{module_name}` has no `{attr}` (for {kind} `{path}`)") from None
    return obj


def resolve(name: str, table: dict[str, str], kind: str) -> Any:
    """The class for a registry name or a `module:Class` path."""
    if name in table:
        return _import(table[name], kind)
    if ":" in name:
        return _import(name, kind)
    raise ConfigError(
        f"unknown {kind} `{name}`; registered: "
        + ", ".join(f"`{n}`" for n in sorted(table))
        + " (or give `module:Class`)"
    )


def resolve_model(name: str) -> Any:
    return resolve(name, MODELS, "model")


def resolve_datamodule(name: str) -> Any:
    return resolve(name, DATAMODULES, "data")


def construct(cls: Callable, user_args: dict, offered: dict, what: str) -> Any:
    """`cls(**user_args, **offered)`, passing each offered argument only if `cls` accepts it.

    tb offers things like `batch_size` or `in_channels`; a user's class that does
    not take them is still constructible. Explicit `user_args` win.
    """
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        params = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in offered.items() if takes_any or k in params}
    kwargs.update(user_args)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"cannot construct {what} `{getattr(cls, '__qualname__', cls)}`: {e}") from e
