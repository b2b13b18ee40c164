"""What the executed notebooks show comes out clean at its source: no torch warning from an intervention's JVP, paths
printed relative to the repository (issue 32, item 6)."""
import os
import subprocess
import sys
from pathlib import Path

from l3d.report.results import repository_root, shown_path


def test_the_first_output_derivative_of_a_process_warns_nothing():
    # torch loads its forward-mode decompositions through torch.jit.script on the first JVP of a process, which
    # warned "`torch.jit.script` is deprecated" into notebooks 01, 05 and 06 (their dashboard cell)
    code = ("import torch, l3d; torch.manual_seed(0); m = torch.nn.Linear(3, 2); "
            "d = l3d.Decomposition({'weight': (2, 3), 'bias': (2,)}, 2, rank=1, seed=0); "
            "print(l3d.output_derivative(m, d, 0, torch.randn(4, 3)).shape)")
    done = subprocess.run([sys.executable, "-W", "error::FutureWarning", "-c", code], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "torch.Size([4, 2])" and "Warning" not in done.stderr


def test_paths_inside_the_repository_print_relative_to_it(tmp_path):
    inside = repository_root() / "figures" / "01_toy_model_of_superposition" / "dashboard" / "index.html"
    assert shown_path(inside) == str(Path("figures/01_toy_model_of_superposition/dashboard/index.html"))
    assert shown_path(tmp_path / "x.html") == str(tmp_path / "x.html")   # elsewhere: as it is
