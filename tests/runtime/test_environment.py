"""What made a result: the CPU, torch's kernels and threads, versions, the commit."""
import subprocess

import torch

from l3d.runtime.environment import cpu_model, environment, git_commit


def test_cpu_model_is_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C\n")
    assert cpu_model(info) == "Intel(R) Xeon(R) Platinum 8481C"
    assert cpu_model(tmp_path / "none")                         # elsewhere: platform's word, never empty


def test_environment_records_kernels_threads_variables_and_device(monkeypatch):
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    monkeypatch.delenv("MKL_CBWR", raising=False)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1073741824")      # the Makefile's: timings depend on it
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        env = environment("cpu")
    finally:
        torch.set_num_threads(previous)
    assert env["threads"] == 2 and env["device"] == "cpu" and env["torch"] == torch.__version__
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["variables"]["ATEN_CPU_CAPABILITY"] == "avx2" and "MKL_CBWR" not in env["variables"]
    assert env["variables"]["MALLOC_TRIM_THRESHOLD_"] == "1073741824"
    assert env["git"] is None and environment()["device"] is None
    if not torch.cuda.is_available():
        assert environment("cuda")["device"] == "cuda" and env["gpus"] == []   # what was asked, recorded


def test_git_commit_and_whether_the_package_differs_from_it(tmp_path):
    assert git_commit(tmp_path) is None                         # not a checkout
    run = lambda *a: subprocess.run(["git", "-C", str(tmp_path), *a], check=True, capture_output=True,  # noqa: E731
                                    env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                                         "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"})
    run("init", "-q")
    (tmp_path / "l3d").mkdir()
    (tmp_path / "l3d" / "a.py").write_text("x = 1\n")
    run("add", "l3d")
    run("commit", "-q", "-m", "one")
    head = run("rev-parse", "HEAD").stdout.decode().strip()
    assert git_commit(tmp_path) == {"commit": head, "modified": False}
    (tmp_path / "figures.json").write_text("{}")               # outside l3d/ and notebooks/: not a modification
    assert git_commit(tmp_path)["modified"] is False
    (tmp_path / "l3d" / "a.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == {"commit": head, "modified": True}
