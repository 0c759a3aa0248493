"""Bad inputs and faults, tried as a careful user would; prints what was clean and what was lost.

    PYTHONPATH=. python benchmarks/faults.py                  # print the counts
    PYTHONPATH=. python benchmarks/faults.py --update-readme  # also rewrite the README's section

Three groups of cases:

* command line: bad values for every config field (a wrong type and an out-of-range value),
  bad seeds, presets, models, devices, output folders, stores, exports and claim lists. Clean =
  exit code 2 with one line naming the parameter and no traceback, before any training (training
  is replaced by a function that fails the case).
* Python API: the same values through ``preset`` / ``Config.from_dict``. Clean = ``ConfigError``
  whose one-line message names the field.
* faults: SIGTERM and SIGINT to a real ``moesim run`` process mid-training, a diverging run, a
  second run aimed at an earlier run's folder. A run is lost when what it trained cannot be read
  back with ``moesim.results.load_run`` afterwards (or an earlier run's folder changed).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from moesim import config as C
from moesim.cli import cli

TINY = ["--preset", "paper-s1-quick", "--set", "n_train=200", "--set", "n_test=200", "--set", "n_steps=20"]

#: A wrong-typed and an out-of-range ``--set`` text, and the same as Python values, per field kind.
BAD_TEXT = {bool: ("maybe", "2"), int: ("ten", "-1"), float: ("fast", "-1"), tuple: ("1", "2,1"), str: ("", "nothing")}
BAD_VALUE = {bool: ("false", 1), int: (2.5, -1), float: ("0.1", -1.0), tuple: (1.0, (2.0, 1.0)), str: (5, "nothing")}


def _no_training(*a, **k):
    raise AssertionError("training started")


def run_cli(argv: list[str]) -> tuple[int | None, str]:
    """``cli(argv)`` in this process with training disabled: (exit code or None, stderr)."""
    import pytest

    err = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        mp.setattr("moesim.training.train", _no_training)
        mp.setattr("moesim.claims.run_claims", _no_training)
        mp.setattr("moesim.reproduce.table1", _no_training)
        try:
            rc = cli(argv)
        except BaseException as e:  # noqa: BLE001 -- an escaping exception is an unclean case
            return None, f"{type(e).__name__}: {e}"
    return rc, err.getvalue()


def cli_cases(tmp: Path) -> list[tuple[list[str], str]]:
    """(argv, the word the one-line message must contain)."""
    afile = tmp / "afile"
    afile.write_text("")
    full = tmp / "full"
    full.mkdir()
    (full / "old.md").write_text("x")
    zero = tmp / "zero.sqlite"
    zero.write_bytes(b"")
    text = tmp / "text.sqlite"
    text.write_text("not a database")
    cases = []
    for name, kind in C.field_types().items():
        for bad in BAD_TEXT[kind]:
            cases.append((["run", *TINY, f"--set={name}={bad}"], name))
    sweep = ["sweep", *TINY, "--grid", "n_experts=2,4"]
    cases += [
        (["run", *TINY, "--seeds=ten"], "--seeds"), (["run", *TINY, "--seeds=0"], "--seeds"),
        (["run", *TINY, "--seeds=5-2"], "--seeds"), (["run", *TINY, "--seeds=-3"], "--seeds"),
        (["run", *TINY, "--seeds=1000000000"], "--seeds"), (["run", *TINY, "--seeds=,"], "--seeds"),
        (["run", "--preset=paper-s9"], "preset"), (["run", "--preset=official-s1", "--model=moe-quadratic"], "model"),
        (["run", *TINY, "--device=tpu"], "device"), (["run", *TINY, "--device=cuda:-1"], "device"),
        (["run", *TINY, "--set", "n_train=1000000000"], "n_train"),
        (["run", "--preset", "official-s1-quick", "--set", "data_seed=1099511627776"], "data_seed"),
        (["run", *TINY, "--set", "nosuchfield=1"], "nosuchfield"), (["run", *TINY, "--set", "n_train"], "n_train"),
        (["run", *TINY, "--out", str(afile / "out")], "--out"), (["run", *TINY, "--out", str(full)], "--out"),
        (["run", *TINY, "--out", str(afile)], "--out"),
        (["verify", "--claims", "lemma5.1", "--out", str(afile / "v")], "--out"),
        (["verify", "--claims", "lemma5.1", "--out", str(full)], "--out"),
        (["verify", "--device", "tpu", "--claims", "lemma5.1", "--out", str(tmp / "v1")], "device"),
        (["verify", "--claims", "", "--out", str(tmp / "v2")], "--claims"),
        (["verify", "--claims", "nosuch", "--out", str(tmp / "v3")], "--claims"),
        (["verify", "--mutants", "nosuch", "--out", str(tmp / "v4")], "--mutants"),
        (["verify", "--seeds", "x", "--out", str(tmp / "v5")], "--seeds"),
        (["reproduce", "table1", "--out", str(afile / "t")], "--out"),
        (["reproduce", "table1", "--out", str(full)], "--out"),
        (["reproduce", "table1", "--settings", "s9", "--out", str(tmp / "t1")], "--settings"),
        (["reproduce", "table1", "--models", "moe-quadratic", "--out", str(tmp / "t2")], "--models"),
        ([*sweep, "--store", str(zero), "--dry-run"], "empty file"), ([*sweep, "--store", str(zero)], "empty file"),
        ([*sweep, "--store", str(text)], "not an SQLite"), ([*sweep, "--store", str(afile / "s.sqlite")], "run store"),
        ([*sweep, "--store", "/proc/no-such-dir/s.sqlite"], "run store"),
        ([*sweep, "--store", str(tmp / "s.sqlite"), "--export", str(afile / "x.csv")], "--export"),
        ([*sweep, "--store", str(tmp / "s.sqlite"), "--export", str(full)], "--export"),
        (["sweep", *TINY, "--store", str(tmp / "s.sqlite")], "grid"),
        ([*sweep, "--grid", "n_experts=0", "--store", str(tmp / "s.sqlite")], "n_experts"),
        ([*sweep, "--workers", "0", "--store", str(tmp / "s.sqlite")], "--workers"),
        ([*sweep, "--device", "cuda:7", "--store", str(tmp / "s2.sqlite")], "cuda"),
    ]
    return cases


def api_cases() -> list[tuple[object, str]]:
    """(a zero-argument call that must raise ConfigError, the word its message must contain)."""
    cases = []
    for name, kind in C.field_types().items():
        for bad in BAD_VALUE[kind]:
            cases.append((lambda n=name, v=bad: C.preset("paper-s1-quick", **{n: v}), name))
            cases.append((lambda n=name, v=bad: C.Config.from_dict({n: v}), name))
    cases += [
        (lambda: C.preset(None), "preset"), (lambda: C.preset("paper-s1", model=["x"]), "model"),
        (lambda: C.Config.from_dict([]), "mapping"),
        (lambda: C.preset("paper-s1", alpha_range=[1, 2, 3]), "alpha_range"),
        (lambda: C.preset("paper-s1", device="cuda:-1"), "device"),
        (lambda: C.preset("paper-s1", device=None), "device"),
        (lambda: C.preset("official-s1", data_seed=2**40), "data_seed"),
    ]
    return cases


def _run_proc(argv: list[str], sig: int | None, cpu_seconds: float = 4.0) -> tuple[int, str]:
    """A real ``moesim`` process; with ``sig``, sent once it has used ``cpu_seconds`` of CPU."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "moesim.cli", *argv], env=env, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    if sig is not None:
        tick = os.sysconf("SC_CLK_TCK")
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            if (int(fields[11]) + int(fields[12])) / tick > cpu_seconds:
                break
            time.sleep(0.2)
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


def fault_cases(tmp: Path) -> list[dict]:
    """Each fault: the exit code, whether it was as specified, and runs lost (0 or 1)."""
    from moesim.results import load_run

    out = []
    long = [*TINY, "--set", "n_steps=1000000", "--no-progress", "--seeds", "2"]
    for sig, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        folder = tmp / f"int-{sig}"
        rc, err = _run_proc(["run", *long, "--out", str(folder)], sig)
        try:
            res = load_run(folder)
            kept = res.info.get("incomplete") is True and res.history["loss"].shape[0] >= 1
        except (OSError, ValueError) as e:
            kept = False
            err += f"\n{e}"
        out.append(dict(case=f"{signal.Signals(sig).name} during run", rc=rc, ok=rc == code and kept,
                        lost=int(not kept)))
    folder = tmp / "diverged"
    rc, err = _run_proc(["run", *TINY, "--set", "lr_expert=1e30", "--no-progress", "--out", str(folder)], None)
    try:
        status = json.loads((folder / "summary.json").read_text())["status"]
        kept = status == "diverged" and load_run(folder) is not None
    except (OSError, ValueError, KeyError):
        kept = False
    out.append(dict(case="diverging run", rc=rc, ok=rc == 1 and kept, lost=int(not kept)))
    folder = tmp / "earlier"
    _run_proc(["run", *TINY, "--no-progress", "--seeds", "2", "--out", str(folder)], None)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    rc, err = _run_proc(["run", *TINY, "--no-progress", "--set", "n_experts=4", "--out", str(folder)], None)
    same = {p.name: p.read_bytes() for p in folder.iterdir()} == before and load_run(folder).config.n_experts == 8
    out.append(dict(case="second run aimed at an earlier run's folder", rc=rc, ok=rc == 2 and same, lost=int(not same)))
    return out


def measure() -> dict:
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        os.environ.setdefault("MOESIM_CACHE", str(tmp / "cache"))
        cli_rows = []
        for argv, word in cli_cases(tmp):
            rc, err = run_cli(argv)
            lines = [ln for ln in err.splitlines() if ln.strip()]
            clean = (rc == 2 and len(lines) == 1 and lines[0].startswith("moesim: error:") and word in lines[0]
                     and "Traceback" not in err)
            cli_rows.append(dict(argv=argv, clean=clean, err=err.strip()[:300]))
        api_rows = []
        for call, word in api_cases():
            try:
                call()
                clean, msg = False, "accepted"
            except C.ConfigError as e:
                msg = str(e)
                clean = word in msg and "\n" not in msg
            except Exception as e:  # noqa: BLE001 -- another exception type is an unclean case
                clean, msg = False, f"{type(e).__name__}: {e}"
            api_rows.append(dict(clean=clean, err=msg[:300]))
        faults = fault_cases(tmp)
    return dict(cli=cli_rows, api=api_rows, faults=faults)


def markdown(m: dict) -> str:
    n_cli, c_cli = len(m["cli"]), sum(r["clean"] for r in m["cli"])
    n_api, c_api = len(m["api"]), sum(r["clean"] for r in m["api"])
    n_f, c_f = len(m["faults"]), sum(r["ok"] for r in m["faults"])
    lost = sum(r["lost"] for r in m["faults"])
    return (f"Bad inputs and faults tried by `python benchmarks/faults.py` (measured {time.strftime('%Y-%m-%d')}):\n\n"
            f"| cases | tried | clean | runs lost |\n|---|---|---|---|\n"
            f"| command line: bad values, paths, stores (exit 2, one line naming the parameter, before any work) "
            f"| {n_cli} | {c_cli} | — |\n"
            f"| Python API: bad config values (`ConfigError` naming the field) | {n_api} | {c_api} | — |\n"
            f"| faults: SIGTERM/SIGINT mid-run, a diverging run, a run aimed at an earlier run's folder "
            f"| {n_f} | {c_f} | {lost} |\n\n"
            "Interrupted runs are written marked incomplete (exit 130/143) and read back by `load_run`; sweeps "
            "survive SIGKILL of the client or a Dask worker with no run lost or duplicated (`tests/test_sweeps.py`).")


def update_readme(md: str) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = "<!-- reliability:start -->", "<!-- reliability:end -->"
    if start not in text or end not in text:
        raise SystemExit(f"README.md has no {start} ... {end} section")
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    readme.write_text(f"{head}{start}\n{md}\n{end}{tail}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--update-readme", action="store_true", help="rewrite the README's Reliability numbers")
    p.add_argument("--json", default=None, help="also write every case and its outcome to this file")
    args = p.parse_args()
    m = measure()
    for group in ("cli", "api"):
        for r in m[group]:
            if not r["clean"]:
                print(f"NOT CLEAN ({group}): {r.get('argv', '')} -> {r['err']}", file=sys.stderr)
    for r in m["faults"]:
        if not r["ok"]:
            print(f"FAULT NOT AS EXPECTED: {r}", file=sys.stderr)
    md = markdown(m)
    print(md)
    if args.json:
        Path(args.json).write_text(json.dumps(m, indent=1) + "\n")
    if args.update_readme:
        update_readme(md)
    clean = all(r["clean"] for g in ("cli", "api") for r in m[g]) and all(r["ok"] for r in m["faults"])
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
