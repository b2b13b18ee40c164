"""The command line killed at random points, several times and during checkpoint writes, resumes to the same
bytes as an uninterrupted run and leaves no stray files; Ctrl-C exits 130 with one line and no traceback.

Each run is a fresh `python -m l3d` (a few seconds of imports each), hence marked slow; `make test`
runs it.
"""
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STEPS = 32   # 64 samples, batch 8, 4 epochs
ARGS = ["--setup-kwargs", '{"n_samples": 64, "toy_epochs": 2}', "--epochs", "4", "--batch-size", "8",
        "--n-subnetworks", "3", "--checkpoint-every", "1", "--device", "cpu", "--resume"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
pytestmark = pytest.mark.slow


def _default_sigint() -> None:
    """Ctrl-C acts in the child even when the tests run in a background job, which starts with SIGINT ignored
    (Python keeps an inherited SIG_IGN and would never raise KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(out: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "l3d", "--out", str(out), *args], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)


def steps_done(out: Path) -> list[int]:
    folder = out / "checkpoints"
    return sorted(int(p.name[5:]) for p in folder.iterdir() if re.fullmatch(r"step-\d{8}", p.name)) if folder.is_dir() else []


def writing(out: Path) -> bool:
    """A checkpoint is being written (or removed): a hidden .step-* folder exists."""
    folder = out / "checkpoints"
    return folder.is_dir() and any(name.startswith(".step-") for name in os.listdir(folder))


def wait_for(condition, process: subprocess.Popen, timeout: float = 300) -> bool:
    """Poll `condition` every millisecond until it holds (True) or the process ends (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.001)
    raise TimeoutError("the decomposition made no progress")


def test_kills_at_random_points_resume_to_the_same_bytes_and_leave_no_litter(tmp_path):
    baseline = start(tmp_path / "baseline", *ARGS)
    assert baseline.wait() == 0, baseline.stderr.read()
    out, rng = tmp_path / "killed", random.Random(0)
    kills, in_writes = 0, 0
    while kills < 6 or in_writes < 2:
        assert kills < 16, f"{kills} kills, only {in_writes} during a checkpoint write"
        process = start(out, *ARGS)
        before = max(steps_done(out), default=0)
        # let it make progress, then kill it while it writes a checkpoint (every other time) or at a random moment
        if not wait_for(lambda: max(steps_done(out), default=0) > before, process):
            break   # it finished before the kill
        if kills % 2 == 0:
            killed_in_time = wait_for(lambda: writing(out), process)
        else:
            time.sleep(rng.uniform(0, 0.3))
            killed_in_time = process.poll() is None
        process.send_signal(signal.SIGKILL)
        process.wait()
        if not killed_in_time or process.returncode != -signal.SIGKILL:
            break
        kills += 1
        in_writes += writing(out)   # the killed writer's folder is still there
        if max(steps_done(out), default=0) >= STEPS:
            break
    assert kills >= 6 and in_writes >= 2, f"{kills} kills, {in_writes} during a checkpoint write"
    final = start(out, *ARGS)
    assert final.wait() == 0, final.stderr.read()
    for name in ("decomposition/decomposition.safetensors", "decomposition/config.json", "decomposition/run.json"):
        assert (out / name).read_bytes() == (tmp_path / "baseline" / name).read_bytes(), name
    stray = [p for p in out.rglob("*") if p.name.startswith(".") or ".tmp" in p.name or ".damaged" in p.name]
    assert stray == []
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [f"step-{STEPS - 1:08d}", f"step-{STEPS:08d}"]
    for folder in (out / "checkpoints").iterdir():
        assert sorted(p.name for p in folder.iterdir()) == [
            "config.json", "decomposition.safetensors", "training.json", "training.safetensors"]


def test_ctrl_c_says_where_it_stopped_and_how_to_resume(tmp_path):
    process = start(tmp_path, "--setup-kwargs", '{"n_samples": 64, "toy_epochs": 2}', "--epochs", "100000",
                    "--batch-size", "8", "--checkpoint-every", "5", "--device", "cpu")
    assert wait_for(lambda: steps_done(tmp_path) != [], process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "Traceback" not in stderr
    last = stderr.rstrip("\n").split("\n")[-1]
    match = re.fullmatch(r"interrupted at step (\d+); rerun the same command with --resume", last)
    assert match and int(match[1]) >= max(steps_done(tmp_path)), stderr[-2000:]
