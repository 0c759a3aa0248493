"""Package and command-line conventions: license, citation, changelog, one version, --version,
``python -m moesim``, the presets in ``run --help``, the ``config`` listing and ``--threads``."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest


import moesim
from moesim.cli import build_parser, cli
from moesim.config import Config, preset_names
from moesim.fields import field_docs, render

ROOT = Path(__file__).resolve().parents[1]


def test_license_is_the_apache_2_text_pyproject_declares():
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"] == "Apache-2.0"
    assert "[yyyy]" not in text  # the copyright line is filled in


def test_citation_cff_has_the_required_keys_and_cites_the_paper():
    """CFF 1.2.0's required keys (cff-version, message, title, authors), and the paper as the
    preferred citation (``cffconvert --validate`` 2.0.0 also accepts the file)."""
    yaml = pytest.importorskip("yaml")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    assert {"message", "title", "authors"} <= set(cff) and cff["authors"]
    paper = cff["preferred-citation"]
    assert paper["title"] == "Towards Understanding the Mixture-of-Experts Layer in Deep Learning"
    assert [a["family-names"] for a in paper["authors"]] == ["Chen", "Deng", "Wu", "Gu", "Li"]
    assert paper["year"] == 2022 and "2208.02813" in str(paper["identifiers"])
    assert cff["license"] == "Apache-2.0"


def test_changelog_has_an_unreleased_section_and_the_current_version():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in text and f"## [{moesim.__version__}]" in text


def test_the_version_is_written_once():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "moesim.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", moesim.__version__)


def test_version_option_matches_the_installed_metadata(capsys):
    with pytest.raises(SystemExit) as stop:
        cli(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"moesim {moesim.__version__}"
    assert importlib.metadata.version("moesim") == moesim.__version__


def test_python_dash_m_moesim_runs_the_command_line():
    proc = subprocess.run([sys.executable, "-m", "moesim", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.strip() == f"moesim {moesim.__version__}"
    proc = subprocess.run([sys.executable, "-m", "moesim", "run", "--preset", "nope"], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 2 and "preset" in proc.stderr and "Traceback" not in proc.stderr


def test_run_help_lists_every_preset_and_points_to_the_fields(capsys):
    with pytest.raises(SystemExit):
        cli(["run", "--help"])
    text = capsys.readouterr().out
    for name in preset_names():
        if not name.startswith("theory-"):
            assert re.search(rf"\b{re.escape(name)}\b", text), name
    assert "theory-d<d>" in text and "moesim config" in text and "--threads" in text


def test_config_lists_every_field_with_type_default_and_comment(capsys):
    docs = field_docs()
    assert [d.name for d in docs] == [f.name for f in dataclasses.fields(Config)]
    assert all(d.comment for d in docs), [d.name for d in docs if not d.comment]
    by_name = {d.name: d for d in docs}
    assert by_name["n_experts"].type == "int" and by_name["n_experts"].default == 8
    assert "M, experts" in by_name["n_experts"].comment
    assert '"unit"' in by_name["gate"].comment  # a comment continued on the next line is kept
    assert cli(["config"]) == 0
    out = capsys.readouterr().out
    for d in docs:
        assert re.search(rf"^{d.name}\s+{re.escape(d.type)}\s", out, re.M), d.name
    assert cli(["config", "--preset", "official-s2-quick", "--set", "n_experts=3"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^n_experts\s+int\s+3\*", out, re.M) and re.search(r"^sigma_p\s+float\s+2\.0\*", out, re.M)
    assert re.search(r"^patch_dim\s+int\s+50 ", out, re.M)  # unchanged: no mark


def test_config_rejects_a_bad_preset_with_one_line(capsys):
    assert cli(["config", "--preset", "official-s9"]) == 2
    assert "preset" in capsys.readouterr().err


def test_render_marks_exactly_the_changed_fields():
    changed = Config().replace(n_experts=3, gamma_range=(0.5, 2.0))
    types = {d.name: d.type for d in field_docs()}
    marked = set()
    for line in render(changed).splitlines():
        if line and not line.startswith("#"):
            name, rest = line.split(None, 1)
            value = rest.strip()[len(types[name]):].split()[0]
            marked |= {name} if value.endswith("*") else set()
    assert marked == {"n_experts", "gamma_range"}


@pytest.mark.parametrize("command", [["run"], ["verify"], ["reproduce", "table1"], ["sweep"],
                                     ["replay", "synthetic_demo_s1"]])
def test_every_training_command_takes_threads(command):
    sys_argv = sys.argv
    sys.argv = ["moesim", command[0]]  # build only the chosen subcommand's parser, as the CLI does
    try:
        args = build_parser().parse_args([*command, "--threads", "1"])
    finally:
        sys.argv = sys_argv
    assert args.threads == 1


class _Applied(Exception):
    pass


@pytest.mark.parametrize("command, trainer", [
    (["run"], "moesim.training.train"),
    (["verify", "--claims", "lemma5.1"], "moesim.claims.run_claims"),
    (["reproduce", "table1"], "moesim.reproduce.table1"),
])
def test_threads_are_applied_before_any_training(command, trainer, monkeypatch, tmp_path):
    """run, verify and reproduce hand --threads to ``apply_threads`` before they train (both replaced
    by stubs: the test stops at whichever comes first)."""
    import moesim.arguments

    def stop(*args, **kwargs):
        raise _Applied("threads")

    def trained(*args, **kwargs):
        raise AssertionError("training started before --threads was applied")

    monkeypatch.setattr(moesim.arguments, "apply_threads", stop)
    monkeypatch.setattr(trainer, trained)
    with pytest.raises(_Applied):
        cli([*command, "--threads", "1", "--no-progress", "--out", str(tmp_path)])


def test_threads_below_one_is_a_usage_error(capsys):
    assert cli(["run", "--threads", "0"]) == 2
    assert cli(["sweep", "--grid", "n_experts=2", "--threads", "0", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("--threads 0 is not allowed") == 2 and "Traceback" not in err


#: The internal specification the project was written from is not part of the repository; nothing
#: may cite it (the word is split so that this file does not cite it either).
_INTERNAL = "SP" + "EC"


def test_nothing_cites_a_document_outside_the_repository():
    """Code, tests, book, benchmarks and README cite the paper or the book's appendix *The paper and
    its official code* (book/official_code.md), never the internal specification; only the changelog
    may mention that it was replaced."""
    files = [ROOT / "README.md", ROOT / "_toc.yml", ROOT / "pyproject.toml"]
    for folder in ("moesim", "tests", "book", "benchmarks", ".ci"):
        files += [p for p in (ROOT / folder).rglob("*") if p.is_file() and p.suffix in (".py", ".md", ".yml", ".c", "")
                  and "__pycache__" not in p.parts and "_build" not in p.parts]
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in files
            for i, line in enumerate(p.read_text(errors="ignore").splitlines(), 1) if _INTERNAL in line]
    assert not hits, hits
    from moesim import claims

    for name in claims.names(None):
        c = claims.get(name)
        assert _INTERNAL not in c.source + c.reference + c.prediction + c.statement, name


def test_the_appendix_is_in_the_book():
    from moesim.bookrun import toc_files

    assert "book/official_code" in toc_files(ROOT)
    text = (ROOT / "book" / "official_code.md").read_text()
    for label in ("official-code-differences", "official-code-stopping", "official-code-data",
                  "official-code-protocol", "official-code-thresholds"):
        assert f"({label})=" in text, label
