"""End-to-end runs of `python -m tb_trainer` on tiny data, as tb runs it."""

import json
import os
import signal
import subprocess
import sys
import time

from conftest import make_job, read_lines, read_result, run_trainer, trainer_env

RESULT_KEYS = {"stop_reason", "epochs", "best", "final", "test"}


def _check_line(line: dict) -> None:
    assert set(line) == {"time", "epoch", "step", "metrics"}
    assert line["time"].endswith("Z") and len(line["time"]) == 20
    assert isinstance(line["epoch"], int) and isinstance(line["step"], int)
    assert {"train_loss", "val_loss", "val_iou"} <= set(line["metrics"])
    assert all(isinstance(v, float) for v in line["metrics"].values())


def test_outputs_follow_the_contract(job_dir):
    make_job(job_dir, max_epochs=2)
    proc = run_trainer(job_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = read_lines(job_dir)
    assert [l["epoch"] for l in lines] == [1, 2]
    for line in lines:
        _check_line(line)
    assert lines[1]["step"] > lines[0]["step"] > 0
    result = read_result(job_dir)
    assert RESULT_KEYS <= set(result) and result["version"] == 1
    assert result["stop_reason"] == "max_epochs" and result["epochs"] == 2
    best = result["best"]
    assert best["metric"] == "val_loss" and best["checkpoint"] == "checkpoints/best.ckpt"
    assert best["epoch"] in (1, 2)
    assert best["value"] == min(l["metrics"]["val_loss"] for l in lines)
    assert result["final"] == lines[-1]["metrics"]
    assert {"test_loss", "test_iou"} <= set(result["test"])
    assert (job_dir / "checkpoints" / "best.ckpt").is_file()
    assert (job_dir / "checkpoints" / "last.ckpt").is_file()
    assert any(p.name.startswith("events.out.tfevents") for p in (job_dir / "tensorboard").iterdir())
    assert not list(job_dir.glob("*.tmp")) and not list(job_dir.glob(".*.tmp"))


def test_plateau_ends_with_early_stopping(job_dir):
    # lr = 0: the weights never change; only BatchNorm statistics drift, well within min_delta.
    make_job(job_dir, lr=0.0, max_epochs=10, patience=2, min_delta=0.01)
    proc = run_trainer(job_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = read_result(job_dir)
    assert result["stop_reason"] == "early_stopping"
    assert result["epochs"] == 3 < 10
    assert len(read_lines(job_dir)) == 3


def test_target_ends_with_target_reached(job_dir):
    make_job(job_dir, max_epochs=10, target={"metric": "val_loss", "at_most": 100.0}, min_epochs=2)
    proc = run_trainer(job_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = read_result(job_dir)
    assert result["stop_reason"] == "target_reached"
    assert result["epochs"] == 2  # min_epochs holds the stop back until then


def test_sigterm_then_resume_continues_at_the_next_epoch(job_dir):
    make_job(job_dir, max_epochs=200, data_args={"samples": 64, "size": 32})
    proc = subprocess.Popen([sys.executable, "-m", "tb_trainer"], env=trainer_env(job_dir),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = job_dir / "metrics.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    result = read_result(job_dir)
    assert result["stop_reason"] == "interrupted" and result["test"] is None
    assert (job_dir / "checkpoints" / "last.ckpt").is_file()
    done = result["epochs"]
    assert done >= 2 and [l["epoch"] for l in read_lines(job_dir)] == list(range(1, done + 1))

    make_job(job_dir, max_epochs=done + 2, data_args={"samples": 64, "size": 32})
    proc = run_trainer(job_dir, TB_RESUME=str(job_dir / "checkpoints" / "last.ckpt"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    epochs = [l["epoch"] for l in read_lines(job_dir)]
    assert epochs == list(range(1, done + 3)), epochs  # appended, nothing repeated
    result = read_result(job_dir)
    assert result["stop_reason"] == "max_epochs" and result["epochs"] == done + 2
    assert result["resumed_from_epoch"] == done


def test_ddp_on_two_cpu_processes(job_dir):
    make_job(job_dir, max_epochs=2, devices=2, strategy="ddp", data_args={"samples": 64, "size": 32})
    proc = run_trainer(job_dir, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "GLOBAL_RANK: 1" in proc.stderr and "MEMBER: 2/2" in proc.stderr
    assert [l["epoch"] for l in read_lines(job_dir)] == [1, 2]  # rank 0 only writes
    result = read_result(job_dir)
    assert result["stop_reason"] == "max_epochs" and result["test"] is not None


def test_user_datamodule_and_init_from(tmp_path, job_dir):
    code = tmp_path / "code"
    (code / "userdata").mkdir(parents=True)
    (code / "userdata" / "__init__.py").write_text(
        "import torch, lightning as L\n"
        "from torch.utils.data import DataLoader, TensorDataset\n"
        "class Squares(L.LightningDataModule):\n"
        "    in_channels, num_classes = 2, 1\n"
        "    def __init__(self, n=32, batch_size=8):\n"
        "        super().__init__(); self.n, self.batch_size = n, batch_size\n"
        "    def setup(self, stage=None):\n"
        "        g = torch.Generator().manual_seed(0)\n"
        "        y = torch.zeros(self.n, 1, 16, 16); y[:, :, 4:12, 4:12] = 1\n"
        "        x = torch.cat([y, y], 1) + 0.1 * torch.randn(self.n, 2, 16, 16, generator=g)\n"
        "        self.ds = TensorDataset(x, y)\n"
        "    def train_dataloader(self): return DataLoader(self.ds, batch_size=self.batch_size)\n"
        "    def val_dataloader(self): return DataLoader(self.ds, batch_size=self.batch_size)\n"
        "    def test_dataloader(self): return DataLoader(self.ds, batch_size=self.batch_size)\n"
    )
    first = make_job(tmp_path / "first", data="userdata:Squares", data_args={"n": 16}, max_epochs=1)
    proc = run_trainer(first, PYTHONPATH=f"{code}:{os.environ.get('PYTHONPATH', '')}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    make_job(job_dir, data="userdata:Squares", data_args={"n": 16}, max_epochs=1,
             init_from=str(first / "checkpoints" / "best.ckpt"))
    proc = run_trainer(job_dir, PYTHONPATH=f"{code}:{os.environ.get('PYTHONPATH', '')}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_result(job_dir)["epochs"] == 1


def test_max_time_ends_with_time_limit(job_dir):
    make_job(job_dir, max_epochs=500, max_time=2, data_args={"samples": 64, "size": 32})
    proc = run_trainer(job_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = read_result(job_dir)
    assert result["stop_reason"] == "time_limit" and 1 <= result["epochs"] < 500
    assert [l["epoch"] for l in read_lines(job_dir)] == list(range(1, result["epochs"] + 1))


def test_missing_resume_checkpoint_starts_fresh_and_resets_history(job_dir):
    make_job(job_dir, max_epochs=1)
    (job_dir / "metrics.jsonl").write_text('{"epoch": 1, "step": 9, "metrics": {}}\n{"epoch": 2, "st')
    (job_dir / "result.json").write_text("{}")
    proc = run_trainer(job_dir, TB_RESUME=str(job_dir / "checkpoints" / "last.ckpt"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "does not exist; starting from scratch" in proc.stderr
    lines = read_lines(job_dir)
    assert [l["epoch"] for l in lines] == [1] and "val_loss" in lines[0]["metrics"]
    assert read_result(job_dir)["resumed_from_epoch"] is None


def test_a_gpu_share_caps_the_gpu_memory(monkeypatch):
    # No GPU here: CUDA is faked, and what the cap asks torch is recorded.
    import torch
    from tb_trainer.train import cap_gpu_memory

    asked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, d: asked.append((f, d)))
    assert cap_gpu_memory({"TB_GPU_SHARE": "0.5"}) == 0.5
    assert asked == [(0.5, 0)]
    assert cap_gpu_memory({}) is None
    assert cap_gpu_memory({"TB_GPU_SHARE": "1"}) is None
    assert cap_gpu_memory({"TB_GPU_SHARE": "half"}) is None
    assert asked == [(0.5, 0)]


def test_a_warm_start_that_does_not_fit_starts_cold_and_says_why(tmp_path, job_dir):
    # The previous batch trained on all six bands; this one keeps three: the
    # network's first layer has another shape, and the checkpoint cannot load.
    first = make_job(tmp_path / "first", max_epochs=1)
    assert run_trainer(first).returncode == 0
    best = str(first / "checkpoints" / "best.ckpt")
    three = {"samples": 48, "size": 32, "bands": [2, 1, 0]}
    warm = {"kind": "warm", "batch": "b1", "job_dir": str(first), "checkpoint": "checkpoints/best.ckpt"}

    make_job(job_dir, max_epochs=1, data_args=three, init_from=best)
    doc = json.loads((job_dir / "job.json").read_text())
    doc["warm_start"] = warm
    (job_dir / "job.json").write_text(json.dumps(doc))
    proc = run_trainer(job_dir, TB_PREVIOUS_BEST=best)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "the warm-start checkpoint did not fit the model, so the trainer started cold" in proc.stderr
    note = read_result(job_dir)["warm_start"]
    assert note["kind"] == "cold" and "size mismatch" in note["why"], note

    # Cold as a job without init_from is: none of the checkpoint's tensors that did fit were kept.
    cold = make_job(tmp_path / "cold", max_epochs=1, data_args=three)
    assert run_trainer(cold).returncode == 0
    assert read_lines(job_dir)[0]["metrics"]["val_loss"] == read_lines(cold)[0]["metrics"]["val_loss"]
    assert "warm_start" not in read_result(cold)

    # The job's own init_from that does not fit stays an error.
    own = make_job(tmp_path / "own", max_epochs=1, data_args=three, init_from=best)
    proc = run_trainer(own, TB_PREVIOUS_BEST=best)
    assert proc.returncode == 2 and "does not fit the model" in proc.stderr, proc.stderr[-2000:]
