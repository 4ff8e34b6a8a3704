"""`train.export`: the best model written in a form that serves without this package.

`torchscript` writes `export/model.pt` (`torch.jit.load` reads it, no Python
class needed). The network is scripted; a network that TorchScript cannot
compile (Python it does not know) is traced on one real input instead, and
`result.json` says so and why. Either way the exported model is run on that
input and must give the checkpoint's output, or the export is refused.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
from torch import nn

log = logging.getLogger("tb_trainer")

TORCHSCRIPT = Path("export") / "model.pt"


def export_all(kinds: list[str], task: L.LightningModule, dm: Any, best: Path, out: Path) -> dict:
    """Each export of `kinds` from the weights of `best`: `{kind: {path, method, …} | {error}}`.
    An export that fails is reported, never fatal: the training succeeded."""
    from .train import load_initial_weights

    # Training is over: the task itself takes the best weights, on the CPU.
    load_initial_weights(task, best, "best")
    task = task.cpu().eval()
    example = example_input(dm)
    done = {}
    for kind in kinds:
        if kind == "torchscript":
            done[kind] = torchscript(serving_module(task), example, out / TORCHSCRIPT, out)
    return done


def serving_module(task: L.LightningModule) -> nn.Module:
    """What a server runs: the plain network of a `SegmentationTask` (its
    forward is the network's), or a user's LightningModule itself."""
    net = getattr(task, "net", None)
    return net if isinstance(net, nn.Module) else task


def example_input(dm: Any) -> Optional[torch.Tensor]:
    """One input from the test split (else the validation split), for tracing and the check."""
    for name in ("test_dataloader", "val_dataloader"):
        try:
            batch = next(iter(getattr(dm, name)()))
        except Exception:  # a split that is empty or was never set up
            continue
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        if isinstance(x, torch.Tensor) and len(x) > 0:
            return x[:1].cpu()
    return None


def torchscript(module: nn.Module, example: Optional[torch.Tensor], path: Path, out: Path) -> dict:
    """Scripts `module` (tracing it on `example` if it cannot be scripted),
    checks the result against `module` on `example`, and saves it at `path`."""
    module = module.eval()
    doc: dict = {"path": str(path.relative_to(out))}
    # torch >= 2.10 warns that TorchScript is deprecated, once per submodule.
    warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit\..*deprecated.*")
    try:
        exported = torch.jit.script(module)
        doc["method"] = "script"
    except Exception as e:  # TorchScript raises many kinds for code it cannot compile
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if example is None:
            log.warning("torchscript export: the model cannot be scripted (%s) and there is no input to trace it on", why)
            return {"error": f"cannot be scripted ({why}), and no test or validation input to trace it on"}
        try:
            with torch.no_grad():
                exported = torch.jit.trace(module, example)
        except Exception as e2:
            log.warning("torchscript export failed: %s", e2)
            return {"error": f"cannot be scripted ({why}) nor traced ({e2})"}
        doc["method"] = "trace"
        doc["not_scripted"] = why
        log.warning("torchscript export: traced, since the model cannot be scripted: %s", why)
    if example is not None:
        with torch.no_grad():
            want, got = module(example), exported(example)
        if not (isinstance(want, torch.Tensor) and isinstance(got, torch.Tensor)) or not torch.allclose(
            want, got, rtol=1e-4, atol=1e-5
        ):
            log.warning("torchscript export refused: its output differs from the model's")
            return {"error": "the exported model's output differs from the model's on a test input"}
        doc["checked_on"] = list(example.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.jit.save(exported, str(tmp))
    os.replace(tmp, path)
    return doc
