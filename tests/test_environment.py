"""pyproject.toml is the single source of dependencies; environment.yml only wraps it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_is_a_thin_wrapper_of_pyproject():
    env = (ROOT / "environment.yml").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    m = re.search(r'-e\s+"?\.\[([a-z,]+)\]"?', env)
    assert m, "environment.yml must install the project itself with pip -e .[extras]"
    assert set(m.group(1).split(",")) == set(project["optional-dependencies"]), "every extra, no other"
    names = {re.split(r"[<>=\[ ]", d)[0].lower() for d in project["dependencies"]}
    listed = {line.strip("- ").split("=")[0].lower() for line in env.splitlines() if line.startswith("  - ")}
    assert not (names & listed), "dependencies are listed in pyproject.toml only"


def test_torch_is_pinned_exactly():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.13.0" in deps
