"""Where Theorem 4.2's predictions hold at finite d: the dynamics claims in the theory regime.

    python benchmarks/theory_regime.py --run 100,200,400     # train (minutes to an hour), store JSON
    python benchmarks/theory_regime.py --update-readme        # rewrite the table in benchmarks/README.md from the JSON

``--run`` calls ``moesim verify --regime theory --theory-dim D --seeds 0-5`` for each D and keeps
its verify.json in ``book/results/theory_regime.json`` (the book's "What is verified" chapter and
the README read it); ``--update-readme`` writes one row per check and one column per d between
the ``theory-regime`` markers of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STORE = ROOT / "book" / "results" / "theory_regime.json"
CLAIMS = "thm4.2,no-collapse,router-centers,exploration,linear-experts,noise-ablation"
COMMAND = f"moesim verify --regime theory --theory-dim D --seeds 0-5 --threads 1 --claims {CLAIMS}"


def run(dims: list[int], seeds: str = "0-5") -> None:
    data = json.loads(STORE.read_text()) if STORE.exists() else dict(command=COMMAND, results={})
    for d in dims:
        with tempfile.TemporaryDirectory() as out:
            subprocess.run([sys.executable, "-m", "moesim.cli", "verify", "--regime", "theory", "--theory-dim", str(d),
                            "--seeds", seeds, "--threads", "1", "--no-progress", "--claims", CLAIMS, "--out", out],
                           check=False)
            j = json.loads((Path(out) / "verify.json").read_text())
        data["results"][str(d)] = dict(
            seeds=j["seeds"], statistics=j["statistics"], wall_time_s=j["wall_time_s"],
            claims=[dict(name=c["name"], verdict=c["verdict"], checks=[
                dict(prediction=k["prediction"], measured=k["measured"], passed=k["passed"],
                     successes=k["values"].get("successes"), trials=k["values"].get("trials"))
                for k in c["checks"]]) for c in j["claims"]])
        STORE.write_text(json.dumps(data, indent=1) + "\n")


def check_name(prediction: str) -> str:
    """A check's prediction without its regime tag, with the step T1 (which depends on d) as 'T1'."""
    pred = prediction.split(": ", 1)[-1].replace(" [per seed]", "")
    return re.sub(r"(steps? (< )?)\d+", r"\1T1", pred)


def table() -> str:
    data = json.loads(STORE.read_text())
    dims = sorted(data["results"], key=int)
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for d in dims:
        for c in data["results"][d]["claims"]:
            for k in c["checks"]:
                pred = check_name(k["prediction"]).replace("|", "\\|")
                cell = ("pass" if k["passed"] else "**FAIL**") + (
                    f" ({k['successes']}/{k['trials']})" if k["successes"] is not None else "")
                rows.setdefault((c["name"], pred), {})[d] = cell
    head = "| claim | check | " + " | ".join(f"d = {d}" for d in dims) + " |"
    lines = [head, "|" + "---|" * (2 + len(dims))]
    lines += [f"| {c} | {p} | " + " | ".join(v.get(d, "") for d in dims) + " |" for (c, p), v in rows.items()]
    return "\n".join(lines)


def update_readme() -> None:
    readme = ROOT / "benchmarks" / "README.md"
    text = readme.read_text()
    start, end = "<!-- theory-regime:start -->", "<!-- theory-regime:end -->"
    i, j = text.index(start) + len(start), text.index(end)
    data = json.loads(STORE.read_text())
    notes = "".join(f"\n- d = {d}: {r['note']}" for d, r in sorted(data["results"].items(), key=lambda kv: int(kv[0]))
                    if r.get("note"))
    body = (f"\n`python benchmarks/theory_regime.py --run 100,200,400` ({data['command']}; seeds 0-5, majority "
            "rule; in parentheses the seeds that satisfy each check; an empty cell was not measured):\n\n"
            + table() + "\n" + (f"\nNotes:{notes}\n" if notes else ""))
    readme.write_text(text[:i] + body + text[j:])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=None, help="comma-separated patch dimensions to (re)measure")
    ap.add_argument("--update-readme", action="store_true")
    args = ap.parse_args()
    if args.run:
        run([int(d) for d in args.run.split(",")])
    if args.update_readme:
        update_readme()
    if not args.run and not args.update_readme:
        print(table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
