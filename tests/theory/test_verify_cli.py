"""``moesim verify``: table, files, exit codes and input errors."""

from __future__ import annotations

import json

import pytest

from moesim import claims
from moesim.claims.base import Check, Claim
from moesim.cli import cli


def test_list_names_every_claim(capsys):
    assert cli(["verify", "--list"]) == 0
    out = capsys.readouterr().out
    for name in claims.names():
        assert name in out


@pytest.mark.parametrize("argv, message", [
    (["--claims", "thm9.9"], "--claims"),
    (["--set", "no_such_field=1"], "no_such_field"),
    (["--set", "lr_router=-1"], "lr_router"),
    (["--seeds", "x"], "--seeds"),
    (["--device", "cuda:7"], "device"),
    (["--threads", "0"], "--threads"),
    (["--claims", ""], "--claims"),
    (["--mutants", "no-such-mutant"], "--mutants"),
    (["--mutants", "frozen-router", "--set", "lr_router=0"], "--mutants"),
    (["--theory-dim", "3", "--regime", "theory"], "--theory-dim"),
])
def test_bad_input_exits_2_naming_the_parameter(argv, message, capsys, tmp_path):
    assert cli(["verify", "--no-progress", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_quick_and_full_are_exclusive(capsys):
    with pytest.raises(SystemExit) as exc:
        cli(["verify", "--quick", "--full"])
    assert exc.value.code == 2


def test_writes_markdown_and_json(tmp_path, capsys):
    """A cheap real claim (Lemma 5.1) end to end: exit 0, an aligned plain-text table printed (no
    Markdown pipes or escapes on the terminal), the Markdown table written as .md, and .json."""
    assert cli(["verify", "--claims", "lemma5.1", "--no-progress", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    head = next(line for line in out.splitlines() if line.startswith("claim "))
    assert head.split() == ["claim", "prediction", "measured", "verdict"] and "\\|" not in out and "|---" not in out
    rows = out.splitlines()[out.splitlines().index(head) + 2:]
    assert rows[0].startswith("lemma5.1 ") and rows[0].rstrip().endswith("pass")
    md = (tmp_path / "verify.md").read_text()
    assert "| claim | prediction | measured | verdict |" in md and "lemma5.1" in md
    data = json.loads((tmp_path / "verify.json").read_text())
    assert data["passed"] is True and data["scale"] == "quick" and data["n"] == 4000
    (claim,) = data["claims"]
    assert claim["name"] == "lemma5.1" and claim["verdict"] == "PASS"
    assert all(c["passed"] for c in claim["checks"])


def test_failing_claim_exits_1(tmp_path, capsys, monkeypatch):
    """A claim whose check fails makes the command exit 1 and shows FAIL in the table."""
    failing = Claim("lemma5.1", "test", "s", "p", "src",
                    lambda ctx: [Check("always false", "0 != 1", False), Check("fine", "ok", True)])
    monkeypatch.setitem(claims.base.REGISTRY, "lemma5.1", failing)
    assert cli(["verify", "--claims", "lemma5.1", "--no-progress", "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "**" not in out and "0/1 claims pass" in out
    assert "**FAIL**" in (tmp_path / "verify.md").read_text()
    assert json.loads((tmp_path / "verify.json").read_text())["claims"][0]["verdict"] == "FAIL"


def test_regime_choice_is_checked(capsys):
    with pytest.raises(SystemExit) as exc:
        cli(["verify", "--regime", "nowhere"])
    assert exc.value.code == 2


def test_mutation_matrix_command_end_to_end(tmp_path, capsys, monkeypatch):
    """--mutants on a cheap claim: the matrix is printed and written; a claim that declares no mutant
    leaves every mutant undeclared, so the matrix is incomplete (exit 1)."""
    assert cli(["verify", "--mutants", "shuffled-labels", "--claims", "lemma5.1", "--no-progress",
                "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "INCOMPLETE" in out and "|" not in out  # aligned plain text on the terminal
    assert [line.split() for line in out.splitlines() if line.startswith("claim")] == [
        ["claim", "unbroken", "shuffled-labels"]]
    assert "| claim | unbroken | shuffled-labels |" in (tmp_path / "mutants.md").read_text()  # Markdown kept
    data = json.loads((tmp_path / "mutants.json").read_text())
    assert data["undetected"] == ["shuffled-labels"] and data["unbroken"] == {"lemma5.1": True}
