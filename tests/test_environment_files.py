"""The environment is part of the result: requirements.lock pins every package `make env` installs, it satisfies
pyproject.toml's ranges, environment.yml installs from it, and the running environment is the locked one."""
import platform
import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)( ; platform_system == \"Linux\")?$")


def lock() -> dict[str, str]:
    lines = [line for line in (ROOT / "requirements.lock").read_text().splitlines()
             if line and not line.startswith("#")]
    bad = [line for line in lines if not PIN.match(line)]
    assert not bad, f"lines of requirements.lock that pin no exact version: {bad}"
    return {canonicalize_name(PIN.match(line)[1]): PIN.match(line)[2] for line in lines}


def test_the_lock_pins_every_dependency_of_make_env_within_pyprojects_ranges():
    pinned = lock()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + [r for extra in ("experiments", "notebooks", "test")
                                        for r in project["optional-dependencies"][extra]]
    for text in wanted:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} (pyproject.toml) is not in requirements.lock: run `make lock`"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (text, pinned[name])
    assert pinned["torch"] == "2.14.1" and pinned["torchvision"] == "0.29.1"
    assert "pip" not in pinned and "l3d" not in pinned and "setuptools" in pinned


def test_environment_yml_installs_the_lock_with_the_lock_s_python():
    text = (ROOT / "environment.yml").read_text()
    assert "- -r requirements.lock" in text and "- -e ." in text
    made_with = re.search(r"Python (\d+\.\d+)", (ROOT / "requirements.lock").read_text())[1]
    assert f"- python={made_with}" in text


def test_this_environment_is_the_locked_one():
    """make env installs requirements.lock; a package at another version here means the numbers may differ."""
    differ = {}
    for name, version in lock().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None                          # a Linux-only CUDA library is absent elsewhere
            if platform.system() != "Linux" and name.startswith(("nvidia-", "cuda-", "triton")):
                continue
        if installed != version:
            differ[name] = (version, installed)
    assert not differ, f"installed versions differ from requirements.lock (locked, installed): {differ}; run `make env`"
