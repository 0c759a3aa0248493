"""The command line's layout and shared flags: the CLI sits on top (nothing imports it), each
shared flag is defined once (``moesim.arguments``) and means the same in every command, and the
flags added to verify (``--dtype``) and reproduce (``--set``, ``--dtype``) reach the runs."""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from pathlib import Path

import pytest

from moesim.cli import build_parser, cli

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "moesim"


class _Reached(Exception):
    """Raised by a stub once the values under test have reached it."""


def _imports(path: Path) -> set[str]:
    """Absolute names of the moesim modules ``path`` imports (relative imports resolved)."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[:len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.add(name)
            out |= {f"{name}.{a.name}" for a in node.names}
    return {n for n in out if n.startswith("moesim")}


def test_no_module_imports_the_cli_and_only_the_cli_imports_the_commands():
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(ROOT).as_posix()
        names = _imports(path)
        if rel not in ("moesim/__main__.py", "moesim/cli.py"):
            assert "moesim.cli" not in names, f"{rel} imports the CLI"
        if rel != "moesim/cli.py" and not rel.startswith("moesim/commands/"):
            assert not any(n.startswith("moesim.commands") for n in names), f"{rel} imports a subcommand"


def test_trajectory_metrics_import_without_the_sweep_runner():
    code = ("import sys, moesim.phase, moesim.sweeps.export; "
            "assert 'moesim.sweeps.runner' not in sys.modules, 'runner imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    from moesim.sweeps import TRAJECTORY_METRICS, run_sweep, trajectory_metrics  # the package's names load lazily

    assert callable(run_sweep) and callable(trajectory_metrics) and "min_loss" in TRAJECTORY_METRICS


def _options(command: list[str]) -> dict[str, argparse.Action]:
    parser = build_parser(command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command[0]]
    if len(command) > 1 and command[0] == "book":
        sub = next(a for a in sub._actions if isinstance(a, argparse._SubParsersAction)).choices[command[1]]
    return {opt: a for a in sub._actions for opt in a.option_strings}


COMMANDS = [["run"], ["verify"], ["reproduce"], ["sweep"], ["config"], ["replay"], ["book", "run"]]


@pytest.mark.parametrize("flag, commands, help_start", [
    ("--set", ["run", "verify", "reproduce", "sweep", "config"], "override one config field (repeatable)"),
    ("--device", ["run", "verify", "reproduce", "sweep", "config"], "cpu, cuda or cuda:<i> (default"),
    ("--dtype", ["run", "verify", "reproduce", "sweep", "config"], "float type of every run"),
    ("--seeds", ["run", "verify", "reproduce", "sweep"], "number of seeds (10), a list (0,3,5) or a range (0-9)"),
    ("--threads", ["run", "verify", "reproduce", "sweep", "replay"], "torch CPU threads"),
    ("--out", ["run", "verify", "reproduce", "book"], "output folder"),
    ("--overwrite", ["run", "verify", "reproduce", "sweep", "book"], "replace an existing"),
    ("--no-progress", ["run", "verify", "reproduce", "sweep", "book"], "no "),
    ("--preset", ["run", "sweep"], "{paper|official}-{s1|s2|s3|s4|verify}[-quick] or theory-d<d> (default"),
])
def test_a_shared_flag_has_one_name_parser_and_help(flag, commands, help_start):
    """Same destination, type, choices and help text everywhere (only the default and what the flag
    applies to are said per command)."""
    actions = {c: _options(next(cmd for cmd in COMMANDS if cmd[0] == c))[flag] for c in commands}
    first = next(iter(actions.values()))
    for c, a in actions.items():
        assert (a.dest, a.type, a.choices, a.nargs) == (first.dest, first.type, first.choices, first.nargs), c
        assert a.help.startswith(help_start), (c, a.help)


def test_verify_dtype_changes_the_model_under_test(monkeypatch, tmp_path):
    seen = {}

    def run_claims(ctx, selected, on_result=None):
        seen.update(ctx.overrides)
        raise _Reached

    monkeypatch.setattr("moesim.claims.run_claims", run_claims)
    with pytest.raises(_Reached):
        cli(["verify", "--claims", "lemma5.1", "--dtype", "float64", "--set", "n_experts=4", "--no-progress",
             "--out", str(tmp_path / "v")])
    assert seen == {"n_experts": 4, "dtype": "float64"}


def test_reproduce_set_and_dtype_reach_every_model_of_the_table(monkeypatch, tmp_path):
    seen = {}

    def table1(settings, models, seeds, **kw):
        seen.update(kw["overrides"], seeds=seeds)
        raise _Reached

    monkeypatch.setattr("moesim.reproduce.table1", table1)
    with pytest.raises(_Reached):
        cli(["reproduce", "table1", "--set", "n_train=200", "--dtype", "float64", "--device", "cpu", "--seeds", "2",
             "--no-progress", "--out", str(tmp_path / "t")])
    assert seen == {"n_train": 200, "dtype": "float64", "device": "cpu", "seeds": [0, 1]}


def test_reproduce_set_trains_the_table_with_the_override(tmp_path, capsys):
    tiny = ["--set", "n_train=200", "--set", "n_test=100", "--set", "n_steps=3", "--set", "n_steps_single=3"]
    assert cli(["reproduce", "table1", "--settings", "s1", "--models", "moe-linear", "--seeds", "1", "--quick",
                "--no-progress", "--out", str(tmp_path / "t"), *tiny]) == 0
    import json

    table = json.loads((tmp_path / "t" / "table1.json").read_text())
    assert table["n_train"] == 200 and table["rows"][0]["updates"] <= 3


@pytest.mark.parametrize("args, words", [
    (["reproduce", "table1", "--set", "n_expert=3"], "unknown config field 'n_expert'"),
    (["reproduce", "table1", "--set", "n_experts=three"], "n_experts='three' has the wrong type"),
    (["reproduce", "table1", "--set", "n_experts"], "must look like name=value"),
    (["verify", "--set", "n_expert=3", "--claims", "lemma5.1"], "unknown config field 'n_expert'"),
    (["verify", "--mutants", "--dtype", "float64"], "--mutants and --dtype cannot be combined"),
])
def test_bad_new_flag_values_exit_2_before_any_output(args, words, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("moesim.claims.run_claims", lambda *a, **k: pytest.fail("claims ran"))
    monkeypatch.setattr("moesim.reproduce.table1", lambda *a, **k: pytest.fail("training ran"))
    out = tmp_path / "out"
    assert cli([*args, "--no-progress", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "moesim: error:" in err and words in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("command", [["verify"], ["reproduce", "table1"], ["run"]])
def test_bad_dtype_is_refused_by_the_parser_naming_the_flag(command, capsys):
    with pytest.raises(SystemExit) as stop:
        cli([*command, "--dtype", "float16"])
    assert stop.value.code == 2 and "--dtype" in capsys.readouterr().err


def test_cli_does_not_rewrite_sys_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["moesim-test", "untouched"])
    argv_before = list(sys.argv)
    assert cli(["config", "--preset", "official-s1-quick"]) == 0
    assert sys.argv == argv_before
