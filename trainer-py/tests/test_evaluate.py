"""`python -m tb_trainer --evaluate CKPT`, and `train.export = ["torchscript"]`."""

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import make_job, read_lines, read_result, run_trainer, trainer_env


def evaluate(job_dir, ckpt, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tb_trainer", "--evaluate", str(ckpt)], env=trainer_env(job_dir),
                          capture_output=True, text=True, timeout=timeout)


def read_evaluation(job_dir) -> dict:
    return json.loads((job_dir / "evaluation.json").read_text())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny UNet trained for a few epochs, and one that never learned (lr 0, one epoch)."""
    root = tmp_path_factory.mktemp("trained")
    strong = make_job(root / "strong", max_epochs=4, lr=3e-3)
    weak = make_job(root / "weak", max_epochs=1, lr=0.0)
    for job in (strong, weak):
        proc = run_trainer(job)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return strong, weak


def test_evaluate_scores_the_checkpoint_as_training_tested_it(trained, tmp_path):
    strong, _ = trained
    out = make_job(tmp_path / "eval", max_epochs=4, lr=3e-3)
    proc = evaluate(out, strong / "checkpoints" / "best.ckpt")
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = read_evaluation(out)
    assert doc["version"] == 1
    assert (doc["monitor"], doc["mode"], doc["metric"]) == ("val_loss", "min", "test_loss")
    assert doc["value"] == doc["test"]["test_loss"] and {"test_loss", "test_iou"} <= set(doc["test"])
    assert doc["samples"] == round(0.15 * 48)
    # The same weights on the same tiles: what training's own test of best.ckpt said.
    tested = read_result(strong)["test"]
    assert doc["test"]["test_loss"] == pytest.approx(tested["test_loss"], rel=1e-5)
    # Nothing of a training run is written.
    assert not (out / "metrics.jsonl").exists() and not (out / "result.json").exists()
    assert not (out / "checkpoints").exists()


def test_a_model_that_never_learned_scores_worse(trained, tmp_path):
    strong, weak = trained
    scores = {}
    for name, job in (("strong", strong), ("weak", weak)):
        out = make_job(tmp_path / name, max_epochs=4)
        proc = evaluate(out, job / "checkpoints" / "best.ckpt")
        assert proc.returncode == 0, proc.stderr[-3000:]
        scores[name] = read_evaluation(out)["value"]
    assert scores["strong"] < scores["weak"], scores


def test_a_maximised_monitor_maps_to_its_test_counterpart(trained, tmp_path):
    strong, _ = trained
    out = make_job(tmp_path / "iou", monitor="val_iou", mode="max")
    proc = evaluate(out, strong / "checkpoints" / "best.ckpt")
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = read_evaluation(out)
    assert (doc["metric"], doc["mode"]) == ("test_iou", "max")
    assert doc["value"] == doc["test"]["test_iou"]


def test_the_test_counterpart_of_a_monitor():
    from tb_trainer.evaluate import test_counterpart

    assert test_counterpart("val_loss") == "test_loss"
    assert test_counterpart("val/iou") == "test/iou"
    assert test_counterpart("valid_acc") == "test_acc"
    assert test_counterpart("validation_f1") == "test_f1"
    assert test_counterpart("value_x") == "value_x"  # not a validation metric: its own name
    assert test_counterpart("test_loss") == "test_loss"


def test_evaluate_refuses_what_it_cannot_score(trained, tmp_path):
    strong, _ = trained
    missing = make_job(tmp_path / "missing")
    proc = evaluate(missing, tmp_path / "nope.ckpt")
    assert proc.returncode == 2 and "not found" in proc.stderr, proc.stderr[-2000:]

    wider = make_job(tmp_path / "wider", model_args={"channels": 8, "depth": 2})
    proc = evaluate(wider, strong / "checkpoints" / "best.ckpt")
    assert proc.returncode == 2 and "does not fit the model" in proc.stderr, proc.stderr[-2000:]

    no_test = make_job(tmp_path / "no_test", split={"train": 0.8, "val": 0.2, "test": 0.0})
    proc = evaluate(no_test, strong / "checkpoints" / "best.ckpt")
    assert proc.returncode == 2 and "no test split" in proc.stderr, proc.stderr[-2000:]

    other = make_job(tmp_path / "other", monitor="train_loss")
    proc = evaluate(other, strong / "checkpoints" / "best.ckpt")
    assert proc.returncode == 2 and "not `train_loss`" in proc.stderr, proc.stderr[-2000:]
    assert not (other / "evaluation.json").exists()


@pytest.mark.parametrize("model,model_args", [("unet", {"channels": 4, "depth": 2}), ("fcn", {"channels": 4, "depth": 3})])
def test_torchscript_export_serves_the_best_checkpoint(job_dir, model, model_args):
    make_job(job_dir, model=model, model_args=model_args, max_epochs=2, export=["torchscript"])
    proc = run_trainer(job_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    export = read_result(job_dir)["export"]["torchscript"]
    assert export["path"] == "export/model.pt", export
    assert export["method"] == "script", export  # the built-in networks compile as they are
    scripted = torch.jit.load(str(job_dir / "export" / "model.pt"))

    # The exported model is the best checkpoint's network, run without tb_trainer's classes.
    from tb_trainer.registry import resolve_model

    net = resolve_model(model)(in_channels=6, num_classes=1, **model_args)
    state = torch.load(job_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})
    net.eval()
    x = torch.randn(2, 6, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.allclose(scripted(x), net(x), rtol=1e-4, atol=1e-5)
    assert len(read_lines(job_dir)) == 2


def test_export_is_validated(job_dir):
    make_job(job_dir, export=["onnx"])
    proc = run_trainer(job_dir)
    assert proc.returncode == 2 and "`export` holds 'onnx'" in proc.stderr, proc.stderr[-2000:]


UNSCRIPTABLE = """
import torch
from torch import nn

class Reversed(nn.Module):
    # reversed() over a list of tensors is Python TorchScript does not compile.
    def __init__(self, in_channels=6, num_classes=1):
        super().__init__()
        self.a = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.b = nn.Conv2d(4, num_classes, 1)

    def forward(self, x):
        feats = [self.a(x)]
        for f in reversed(feats):
            x = f
        return self.b(torch.relu(x))
"""


def test_a_model_that_cannot_be_scripted_is_traced_and_says_why(tmp_path, job_dir):
    code = tmp_path / "code"
    code.mkdir()
    (code / "unscriptable.py").write_text(UNSCRIPTABLE)
    make_job(job_dir, model="unscriptable:Reversed", model_args={}, max_epochs=1, export=["torchscript"])
    proc = run_trainer(job_dir, PYTHONPATH=f"{code}:{os.environ.get('PYTHONPATH', '')}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    export = read_result(job_dir)["export"]["torchscript"]
    assert export["method"] == "trace" and export["not_scripted"], export
    assert export["checked_on"] == [1, 6, 32, 32]
    assert "traced, since the model cannot be scripted" in proc.stderr
    traced = torch.jit.load(str(job_dir / "export" / "model.pt"))
    assert traced(torch.zeros(1, 6, 32, 32)).shape == (1, 1, 32, 32)


def test_evaluate_caps_a_gpu_share_and_writes_no_number_as_null(trained, tmp_path, monkeypatch):
    import lightning as L

    import tb_trainer.evaluate as ev
    from tb_trainer.config import Job

    strong, _ = trained
    out = make_job(tmp_path / "nan")
    capped = []
    monkeypatch.setattr(ev, "cap_gpu_memory", lambda *a: capped.append(a))
    # A model that diverged: its test loss is NaN, a metric infinite.
    monkeypatch.setattr(L.Trainer, "test", lambda *a, **k: [{"test_loss": float("nan"), "test_iou": float("inf")}])
    job = Job.load(out / "job.json", out, env=trainer_env(out))
    doc = ev.evaluate(job, strong / "checkpoints" / "best.ckpt")
    assert capped == [()], "a GPU share is capped as in training (TB_GPU_SHARE)"

    def no_constants(name):
        raise AssertionError(f"evaluation.json holds {name}, which is not JSON")

    written = json.loads((out / "evaluation.json").read_text(), parse_constant=no_constants)
    assert (written["metric"], written["value"]) == ("test_loss", None)
    assert written["test"] == {"test_loss": None, "test_iou": None}
    assert doc["value"] is None
