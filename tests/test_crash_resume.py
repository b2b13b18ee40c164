"""The command line killed at chosen points of its work, several times and while it writes checkpoints and the final
decomposition, resumes to the same bytes as an uninterrupted run and leaves no stray files; a second run on the same
--out is refused while the first holds it; Ctrl-C exits 130 with one line and no traceback.

When to kill is decided by what the run has done, never by the clock: each run is a fresh `python -c CHILD`, which
patches l3d to stop at one chosen point (after step N, or inside the write of checkpoint N or of the final
decomposition), writes a marker file there and waits on its stdin. The test waits for the marker, then sends the
signal. Each run is a fresh Python (a few seconds of imports), hence marked slow; `make test` runs it.
"""
import os
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

# The child: l3d's command line, stopped where $PAUSE says ("step:N", "checkpoint:N" or "save"), with a marker file.
CHILD = r'''
import os, pathlib, sys
import l3d.checkpoint, l3d.cli, l3d.decomposition_files

kind, _, at = os.environ.get("PAUSE", "").partition(":")
marker = pathlib.Path(os.environ.get("MARKER", os.devnull))

def pause():
    marker.write_text(kind)
    sys.stdin.read()   # until the test's signal ends this process (or the test ends: end of file)
    os._exit(3)

def pausing_writer(module, here):
    real = module.write_file
    def write_file(target, write):
        def written(path):
            write(path)
            if here(pathlib.Path(target)):   # the file is written, not yet renamed into place
                pause()
        return real(target, written)
    module.write_file = write_file

if kind == "step":   # after step N's callback (mid-epoch: after checkpoint N; at an epoch's end: before it)
    real = l3d.cli.decompose
    def decompose(*args, callback, **kw):
        def on_step(step, parts):
            callback(step, parts)
            if step == int(at):
                pause()
        return real(*args, callback=on_step, **kw)
    l3d.cli.decompose = decompose
elif kind == "checkpoint":   # inside checkpoint N's hidden temporary folder, its training state half written
    pausing_writer(l3d.checkpoint,
                   lambda t: t.name == "training.safetensors" and t.parent.name.startswith(f".step-{int(at):08d}."))
elif kind == "save":   # writing the final decomposition into --out/decomposition
    pausing_writer(l3d.decomposition_files,
                   lambda t: t.name == "decomposition.safetensors" and t.parent.name == "decomposition")
l3d.cli.main()
'''

# (where to stop, signal): 8 interruptions, 3 inside checkpoint writes and 1 inside the final save
PLAN = [("step:3", signal.SIGKILL), ("checkpoint:6", signal.SIGKILL), ("step:8", signal.SIGTERM),
        ("checkpoint:13", signal.SIGKILL), ("step:16", signal.SIGKILL), ("checkpoint:24", signal.SIGKILL),
        ("step:29", signal.SIGKILL), ("save", signal.SIGKILL)]


def _default_sigint() -> None:
    """Ctrl-C acts in the child even when the tests run in a background job, which starts with SIGINT ignored
    (Python keeps an inherited SIG_IGN and would never raise KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(out: Path, *args: str, pause: str = "", marker: Path | None = None) -> subprocess.Popen:
    env = {**ENV, "PAUSE": pause, "MARKER": str(marker or os.devnull)}
    return subprocess.Popen([sys.executable, "-c", CHILD, "--out", str(out), *args], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)


def finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=timeout)
    return process.returncode, stderr


def wait_for_marker(marker: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    """Until the child has written `marker` (it reached its pause); a failure if it ends first. The timeout only
    guards against a hang: the test never depends on how long anything takes."""
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if process.poll() is not None:
            code, stderr = finish(process)
            pytest.fail(f"the run ended (status {code}) before its pause at {marker.name}: {stderr[-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no pause at {marker.name} within {timeout} s")
        time.sleep(0.01)


def steps_done(out: Path) -> list[int]:
    folder = out / "checkpoints"
    return (sorted(int(p.name[5:]) for p in folder.iterdir() if re.fullmatch(r"step-\d{8}", p.name))
            if folder.is_dir() else [])


def stray(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.name.startswith(".") or ".tmp" in p.name or ".damaged" in p.name]


def test_kills_at_chosen_points_resume_to_the_same_bytes_and_leave_no_litter(tmp_path):
    code, stderr = finish(start(tmp_path / "baseline", *ARGS))
    assert code == 0, stderr
    out = tmp_path / "killed"
    for i, (pause, sig) in enumerate(PLAN):
        marker = tmp_path / f"marker-{i}"
        process = start(out, *ARGS, pause=pause, marker=marker)
        wait_for_marker(marker, process)
        process.send_signal(sig)
        assert finish(process)[0] == -sig
        kind, _, at = pause.partition(":")
        if kind == "step":
            # mid-epoch, checkpoint N was written before the callback; at an epoch's end it comes after
            assert max(steps_done(out)) == int(at) - (int(at) % 8 == 0)
        elif kind == "checkpoint":   # killed inside the write: its hidden folder is there, the checkpoint is not
            assert [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith(f".step-{int(at):08d}.")]
            assert max(steps_done(out)) == int(at) - 1
        else:                        # killed inside the final save: write_file's temporary folder is there
            assert max(steps_done(out)) == STEPS
            assert [p.name for p in (out / "decomposition").iterdir()
                    if p.name.startswith(".decomposition.safetensors.l3d-")]
    code, stderr = finish(start(out, *ARGS))
    assert code == 0, stderr
    for name in ("decomposition/decomposition.safetensors", "decomposition/config.json", "decomposition/run.json"):
        assert (out / name).read_bytes() == (tmp_path / "baseline" / name).read_bytes(), name
    assert stray(out) == []
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [f"step-{STEPS - 1:08d}", f"step-{STEPS:08d}"]
    for folder in (out / "checkpoints").iterdir():
        assert sorted(p.name for p in folder.iterdir()) == [
            "config.json", "decomposition.safetensors", "training.json", "training.safetensors"]


def test_a_second_run_on_the_same_out_is_refused_while_the_first_runs(tmp_path):
    out, marker = tmp_path / "run", tmp_path / "marker"
    first = start(out, *ARGS, pause="checkpoint:4", marker=marker)
    wait_for_marker(marker, first)   # the first run holds --out, in the middle of writing checkpoint 4
    code, stderr = finish(start(out, *ARGS))
    assert code == 2 and "Traceback" not in stderr, stderr
    assert re.fullmatch(r"python -m l3d: error: another process is using --out '.*' \(it holds the folder's lock\): "
                        r"wait for it to finish, or stop it, or choose another --out", stderr.strip()), stderr
    assert [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith(".step-00000004.")]   # left alone
    first.kill()
    assert finish(first)[0] == -signal.SIGKILL
    code, stderr = finish(start(out, *ARGS))   # once the first is gone, the same command goes on
    assert code == 0, stderr
    assert stray(out) == [] and steps_done(out) == [STEPS - 1, STEPS]


def test_ctrl_c_says_where_it_stopped_and_how_to_resume(tmp_path):
    marker = tmp_path / "marker"
    process = start(tmp_path / "run", "--setup-kwargs", '{"n_samples": 64, "toy_epochs": 2}', "--epochs", "100000",
                    "--batch-size", "8", "--checkpoint-every", "5", "--device", "cpu", pause="step:12", marker=marker)
    wait_for_marker(marker, process)
    process.send_signal(signal.SIGINT)
    code, stderr = finish(process, timeout=120)
    assert code == 130
    assert "Traceback" not in stderr
    assert stderr.rstrip("\n").split("\n")[-1] == "interrupted at step 12; rerun the same command with --resume"
    assert steps_done(tmp_path / "run") == [5, 10]
