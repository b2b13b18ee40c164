"""Progress outside a terminal: plain lines, each ending in a newline, never a carriage-return redraw."""
import io
import subprocess
import sys

import pytest
from tqdm import std

from l3d.runtime import progress


class FakeClock:
    """tqdm's clock, advanced by hand: the lines a bar prints depend on time, so the test sets the time."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(std, "time", fake)
    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    monkeypatch.delenv("L3D_PROGRESS", raising=False)
    return fake


def test_outside_a_terminal_a_bar_prints_a_plain_line_every_ten_seconds_and_one_at_the_end(clock):
    out = io.StringIO()   # not a TTY, as a log file or a pipe
    bar = progress.tqdm(total=100, desc="L3D", file=out)
    assert isinstance(bar, progress.LineProgress)
    for step in range(100):
        clock.now += 0.5                      # 50 s in all: updates at 0.5 s apart
        bar.set_postfix(error=f"{1 / (step + 1):.3f}", refresh=False)
        bar.update(1)
    bar.close()
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text          # no redraw, no cursor moves
    lines = text.splitlines()
    assert text.endswith("\n") and all(line.strip() for line in lines)
    # the start, one line per 10 s (at 10, 20, 30, 40 s: 20, 40, 60, 80 steps done) and the end (50 s)
    assert [line.split()[2] for line in lines] == ["0/100", "20/100", "40/100", "60/100", "80/100", "100/100"]
    assert lines[0].startswith("L3D:   0%") and lines[-1].startswith("L3D: 100%") and "error=0.010" in lines[-1]
    assert max(len(line) for line in lines) < 120


def test_tqdms_interval_variable_and_the_choice_variable(clock, monkeypatch):
    monkeypatch.setenv("TQDM_MININTERVAL", "1")
    out = io.StringIO()
    bar = progress.tqdm(range(10), desc="x", file=out)
    for _ in bar:
        clock.now += 0.6
    # an update every 0.6 s, a line when 1 s has passed since the last: every second update, and the end
    assert ([line.split()[2] for line in out.getvalue().splitlines()]
            == ["0/10", "2/10", "4/10", "6/10", "8/10", "10/10"])
    monkeypatch.setenv("L3D_PROGRESS", "bar")
    assert type(progress.tqdm(total=1, file=io.StringIO())) is std.tqdm
    monkeypatch.setenv("L3D_PROGRESS", "text")

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert isinstance(progress.tqdm(total=1, file=Terminal()), progress.LineProgress)   # forced, even in a terminal
    monkeypatch.setenv("L3D_PROGRESS", "")
    assert type(progress.tqdm(total=1, file=Terminal())) is std.tqdm                     # a terminal: tqdm's bar
    monkeypatch.setenv("L3D_PROGRESS", "fancy")
    with pytest.raises(ValueError, match=r"\$L3D_PROGRESS must be 'text' \(plain lines\), 'bar'"):
        progress.tqdm(total=1)


def test_disabled_and_left_out_bars_print_nothing_more(clock):
    out = io.StringIO()
    for _ in progress.tqdm(range(3), file=out, disable=True):
        clock.now += 20
    assert out.getvalue() == ""
    bar = progress.tqdm(total=3, file=out, leave=False)
    bar.update(3)
    bar.close()
    assert out.getvalue().splitlines() == [out.getvalue().splitlines()[0]]   # the start line only, nothing cleared


@pytest.mark.slow
def test_a_training_run_piped_to_a_file_logs_short_lines():
    code = ("import torch, l3d; m = torch.nn.Linear(3, 2); x = torch.randn(64, 3); "
            "l3d.decompose(m, x, '*', l3d.L3DConfig(n_subnetworks=2, epochs=3, batch_size=16))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"PATH": "", "OMP_NUM_THREADS": "1", "HOME": "/tmp"})
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("L3D:")]
    assert lines[0].startswith("L3D:   0%") and lines[-1].startswith("L3D: 100%") and len(lines) == 2
