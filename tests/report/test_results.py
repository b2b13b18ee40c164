"""A notebook's out_dir: relative paths start at the repository root, whatever the working directory; metrics.json
records the environment that made it."""
import subprocess
from pathlib import Path

import l3d
from l3d.report import results
from l3d.report.results import repository_root, resolve_out_dir

ROOT = Path(l3d.__file__).resolve().parent.parent


def test_relative_out_dir_starts_at_the_repository_root_from_any_working_directory(tmp_path, monkeypatch):
    assert repository_root() == ROOT and (ROOT / "pyproject.toml").is_file()
    for cwd in (ROOT, ROOT / "notebooks", tmp_path):
        monkeypatch.chdir(cwd)
        assert (resolve_out_dir("figures/01_toy_model_of_superposition")
                == ROOT / "figures" / "01_toy_model_of_superposition")


def test_absolute_and_home_paths_stay_as_given(tmp_path, monkeypatch):
    assert resolve_out_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_out_dir("~/runs") == tmp_path / "runs"


def test_installed_without_a_checkout_falls_back_to_the_working_directory(tmp_path, monkeypatch):
    site = tmp_path / "site-packages" / "l3d"          # pip install . puts the package where no pyproject.toml is
    site.mkdir(parents=True)
    monkeypatch.setattr(l3d, "__file__", str(site / "__init__.py"))
    monkeypatch.chdir(tmp_path)
    assert results.resolve_out_dir("runs/mine") == tmp_path / "runs" / "mine"


def test_every_metrics_json_records_the_environment_that_made_it(tmp_path):
    import json
    import platform

    import numpy
    import torch

    from l3d.report.results import write_metrics

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        path = write_metrics(tmp_path, {"error": 0.5, "settings": {"device": "auto"}})
    finally:
        torch.set_num_threads(previous)
    written = json.loads(path.read_text())
    env = written["environment"]
    assert written["error"] == 0.5 and written["settings"] == {"device": "auto"}
    assert ((env["torch"], env["numpy"], env["python"])
            == (torch.__version__, numpy.__version__, platform.python_version()))
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and env["threads"] == 1
    assert env["device"] == ("cuda" if torch.cuda.is_available() else "cpu") and env["cpu"]
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:                                     # a checkout: its commit is recorded
        assert env["git"]["commit"] == head.stdout.strip() and isinstance(env["git"]["modified"], bool)
    kept = write_metrics(tmp_path, {"environment": {"cpu": "recorded elsewhere"}}, "other.json")
    assert json.loads(kept.read_text())["environment"] == {"cpu": "recorded elsewhere"}


def test_installed_without_a_checkout_records_no_commit(tmp_path, monkeypatch):
    import json

    site = tmp_path / "site-packages" / "l3d"
    site.mkdir(parents=True)
    monkeypatch.setattr(l3d, "__file__", str(site / "__init__.py"))
    assert results.checkout() is None
    path = results.write_metrics(tmp_path, {"x": 1})
    assert json.loads(path.read_text())["environment"]["git"] is None
