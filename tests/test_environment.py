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


def test_torch_is_a_range_and_the_tested_version_a_constraint():
    """The package asks for a torch range (it must not replace a user's torch); the installs the project
    controls pin the tested version through constraints.txt, because the range alone resolves to a
    multi-GB CUDA build on the project's machines (benchmarks/results/calibration/torch_requirement.md)."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_req = [d.replace(" ", "") for d in deps if re.match(r"torch\b", d)]
    assert torch_req == ["torch>=2.13,<3"]
    pins = [line for line in (ROOT / "constraints.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert pins == ["torch==2.13.0"]
    for script in (".ci/run", ".ci/book"):
        installs = [line for line in (ROOT / script).read_text().splitlines() if "pip install" in line and "-e" in line]
        assert installs and all("-c constraints.txt" in line for line in installs), script
    assert "-c constraints.txt" in (ROOT / "README.md").read_text()
