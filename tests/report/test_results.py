"""A notebook's out_dir: relative paths start at the repository root, whatever the working directory."""
from pathlib import Path

import l3d
from l3d.report import results
from l3d.report.results import repository_root, resolve_out_dir

ROOT = Path(l3d.__file__).resolve().parent.parent


def test_relative_out_dir_starts_at_the_repository_root_from_any_working_directory(tmp_path, monkeypatch):
    assert repository_root() == ROOT and (ROOT / "pyproject.toml").is_file()
    for cwd in (ROOT, ROOT / "notebooks", tmp_path):
        monkeypatch.chdir(cwd)
        assert resolve_out_dir("figures/01_toy_model_of_superposition") == ROOT / "figures" / "01_toy_model_of_superposition"


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
