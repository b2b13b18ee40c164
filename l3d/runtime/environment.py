"""The machine and software a result was made with, recorded beside it.

A trained model or a decomposition is the output of a chaotic computation: the same code and seed on another
CPU (other SIMD kernels, another thread count, another torch) sums in another order, and training amplifies
the last-bit differences into another model. `environment()` says what made a result, so two results can be
told apart by their machine before anyone looks for a bug; every metrics.json records it
(`l3d.report.results.write_metrics`), and so does every shipped model (`l3d.experiments.weights`).
"""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch

from .device import resolve_device

# Variables that change which kernels or how many threads torch uses, or how freed memory is kept (the Makefile's,
# which change timings only); recorded when set.
KERNEL_VARIABLES = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "DNNL_MAX_CPU_ISA", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                    "L3D_THREADS", "CUBLAS_WORKSPACE_CONFIG", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def cpu_model(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> str:
    """The CPU's model name ("model name" in /proc/cpuinfo on Linux; platform.processor() elsewhere)."""
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(folder: str | os.PathLike) -> dict | None:
    """The commit checked out in `folder` and whether the package or the notebooks differ from it
    ({"commit": hex, "modified": bool}); None when `folder` is no git checkout or git is missing."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=20)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None
        modified = git("diff", "--quiet", "HEAD", "--", "l3d", "notebooks").returncode != 0
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head.stdout.strip(), "modified": modified}


def _resolved(device: str | torch.device) -> str:
    try:
        return str(resolve_device(device))
    except ValueError:   # "cuda" asked for where there is none: record what was asked
        return str(device)


def environment(device: str | torch.device | None = None, repository: str | os.PathLike | None = None) -> dict:
    """What made a result: python, platform, CPU model, torch's CPU capability (the SIMD kernels it dispatches
    to), torch's thread count now, torch and numpy versions, `device` (as resolved: "auto" is the GPU when there
    is one) with the GPUs present, the kernel and thread variables that are set, and the git commit of
    `repository` (None: none recorded)."""
    import numpy

    gpus = ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available()
            else [])
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "device": None if device is None else _resolved(device),
        "gpus": gpus,
        "variables": {k: os.environ[k] for k in KERNEL_VARIABLES if k in os.environ},
        "git": None if repository is None else git_commit(repository),
    }
