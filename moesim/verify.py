"""Check every claim of the paper and print a verdict table (``moesim verify``, ``moesim.commands.verify``).

    moesim verify                 # --quick: n = 4000, seeds 0-2 (a few minutes on 2 CPU cores)
    moesim verify --full          # the paper's n = 16000, 10 seeds, one-sided 95 % bounds
    moesim verify --claims thm4.2,lemma5.1 --set lr_router=0    # break the model under test
    moesim verify --regime theory  # the dynamics claims in Theorem 4.2's own regime (theory-d200)
    moesim verify --mutants        # the claims x broken-models matrix (moesim.claims.mutants)
    moesim verify --scaling        # the scaling-law predictions (the `scaling` tier)

The claims are ``moesim.claims`` (the same objects ``tests/theory`` asserts on). The table has one
row per check: claim | prediction | measured (with its spread or bound) | verdict. It is printed
and written as ``verify.md`` and ``verify.json`` to ``--out`` (default ``runs/verify-<scale>-<time>``).
Exit code: 0 when every claim passes, 1 when one fails, 2 for bad input.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from .outputs import environment


def run(scale, selected: list[str], overrides: dict, out: Path, *, device: str = "cpu", regimes=None,
        theory_dim: int | None = None, mutant_names: list[str] | None = None, scaling: dict | None = None,
        progress: bool = True, overwrite: bool = False) -> int:
    """Check the ``selected`` claims at ``scale`` on the model under test (``overrides``), print the
    verdict table and write it to ``out`` (``verify.md``, ``verify.json``); return the exit code.

    ``mutant_names``: check the claims on each broken model instead (``mutants.md``/``.json``).
    ``scaling``: the scaling tier's options (grid, store, workers, export) for
    ``moesim.claims.scaling.configure``. Exit code 0 when every claim passes (every mutant is
    detected), 1 otherwise; ``UsageError`` for a value the scaling grid refuses.
    """
    from . import claims
    from .arguments import UsageError
    from .progress import progress_bar

    regimes = regimes or claims.DEFAULT_REGIMES

    def log(text: str) -> None:
        print(f"[verify {time.perf_counter() - t0:7.1f} s] {text}", file=sys.stderr, flush=True)

    def bar(desc: str, total: int):
        return progress_bar(total, desc, progress)

    t0 = time.perf_counter()
    cache = claims.RunCache()

    def context(over: dict):
        return claims.Context(scale, over, device=device, progress=bar, log=log, cache=cache,
                              regimes=regimes, theory_dim=theory_dim)

    ctx = context(overrides)
    if scaling is not None:
        from .claims import scaling as scaling_tier

        try:
            scaling_tier.configure(ctx, **scaling, progress=progress)
        except ValueError as e:
            raise UsageError(str(e)) from None
    log(f"scale {scale.name}: n = {scale.n}, seeds {list(scale.seeds)}, regimes {list(regimes)}"
        + (f" (theory d = {ctx.theory_dim})" if "theory" in regimes else "")
        + (f", model under test changed by {overrides}" if overrides else ""))

    def done(res) -> None:
        log(f"{res.verdict} {res.name} ({res.wall_time_s:.1f} s)")

    if mutant_names is not None:
        return _mutation_matrix(claims, context, selected, mutant_names, scale, regimes, out, t0, log, overwrite)
    try:
        results = claims.run_claims(ctx, selected, on_result=done)
    except ValueError as e:  # a --set that names an axis the scaling grid varies
        if scaling is None:
            raise
        raise UsageError(str(e)) from None
    wall = time.perf_counter() - t0
    header = dict(scale=scale.name, n=scale.n, seeds=list(scale.seeds), statistics=scale.statistics,
                  regimes=list(regimes), theory_dim=ctx.theory_dim if "theory" in regimes else None,
                  overrides=overrides, device=device, wall_time_s=round(wall, 1),
                  train_time_s=round(ctx.train_seconds, 1), passed=all(r.passed for r in results),
                  claims_passed=sum(r.passed for r in results), claims_total=len(results), **environment())
    table = markdown(results, header)
    print(plain_text(results, header))
    _write(out, "verify", table, dict(header, claims=[r.to_dict() for r in results]), overwrite)
    print(f"{header['claims_passed']}/{len(results)} claims passed in {wall:.0f} s; written to {out}/verify.md and "
          f"{out}/verify.json")
    return 0 if header["passed"] else 1


def _write(out: Path, stem: str, table: str, payload: dict, overwrite: bool = False) -> None:
    from .outputs import write_atomic

    def write(folder: Path) -> None:
        (folder / f"{stem}.md").write_text(table + "\n")
        (folder / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")

    write_atomic(out, write, overwrite=overwrite)


def _mutation_matrix(claims, context, selected, mutant_names, scale, regimes, out, t0, log,
                     overwrite: bool = False) -> int:
    """Check ``selected`` claims on the unbroken model and on each mutant; print the matrix.

    Exit 0 when the unbroken model passes every claim and every claim fails on every mutant it
    declares (``Claim.detects``); 1 otherwise.
    """
    from .claims import mutants

    matrix = mutants.run_matrix(claims, context, selected, mutant_names, log=log)
    wall = time.perf_counter() - t0
    table = mutants.matrix_markdown(matrix, scale, regimes, wall)
    print(mutants.matrix_plain_text(matrix, scale, regimes, wall))
    _write(out, "mutants", table, dict(scale=scale.name, seeds=list(scale.seeds), regimes=list(regimes),
                                       wall_time_s=round(wall, 1), **matrix.to_dict(), **environment()), overwrite)
    print(f"mutation matrix: {'complete' if matrix.ok else 'INCOMPLETE'} in {wall:.0f} s; written to {out}/mutants.md")
    return 0 if matrix.ok else 1


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(results, header: dict) -> str:
    """The verdict table: one row per check (claim | prediction | measured | verdict)."""
    over = f"; model under test changed by `{header['overrides']}`" if header["overrides"] else ""
    rule = ("a per-seed property must hold for a majority of seeds; a quantity is compared through its median"
            if header["statistics"] == "median" else
            "a per-seed property needs a one-sided 95 % Clopper-Pearson lower bound >= 0.5 on its success "
            "probability; a quantity is compared through a one-sided 95 % t bound on its mean")
    lines = [
        f"# moesim verify ({header['scale']}): {header['claims_passed']}/{header['claims_total']} claims pass",
        "",
        f"n = {header['n']} training and test points (theory regime: n = c_n d), seeds {header['seeds']}, "
        f"regimes {header.get('regimes')}, device {header['device']}{over}. "
        f"Rule: {rule}. Wall time {header['wall_time_s']} s (training {header['train_time_s']} s); "
        f"moesim {header['moesim']}, torch {header['torch']}.",
        "",
        "| claim | prediction | measured | verdict |",
        "|---|---|---|---|",
    ]
    for r in results:
        for i, c in enumerate(r.checks):
            name = f"**{r.name}** ({r.reference}): {r.verdict}" if i == 0 else ""
            lines.append(f"| {_cell(name)} | {_cell(c.prediction)} | {_cell(c.measured)} | "
                         f"{'pass' if c.passed else '**FAIL**'} |")
    lines += ["", "Threshold sources:", ""]
    lines += [f"- **{r.name}**: {_cell(r.source)}" for r in results]
    return "\n".join(lines)


def plain_text(results, header: dict, width: int | None = None) -> str:
    """The verdict table for a terminal: aligned columns (claim, prediction, measured, verdict), cells
    wrapped to the terminal's width; the same rows as ``markdown`` (which is what ``verify.md`` holds)."""
    import shutil
    import textwrap

    width = width or max(shutil.get_terminal_size((120, 24)).columns, 80)
    claim_w, verdict_w = max(len(r.name) for r in results) if results else 5, 7
    rest = width - claim_w - verdict_w - 6
    pred_w = max(rest * 3 // 5, 20)
    meas_w = max(rest - pred_w, 16)
    widths = (claim_w, pred_w, meas_w, verdict_w)

    def row(cells) -> list[str]:
        wrapped = [textwrap.wrap(str(c), w) or [""] for c, w in zip(cells, widths)]
        return ["  ".join(f"{(col[i] if i < len(col) else ''):<{w}}" for col, w in zip(wrapped, widths)).rstrip()
                for i in range(max(map(len, wrapped)))]

    lines = [f"moesim verify ({header['scale']}): {header['claims_passed']}/{header['claims_total']} claims pass; "
             f"n = {header['n']}, seeds {header['seeds']}, regimes {header.get('regimes')}, device {header['device']}"
             + (f"; model under test changed by {header['overrides']}" if header["overrides"] else ""), ""]
    lines += row(("claim", "prediction", "measured", "verdict"))
    lines.append("  ".join("-" * w for w in widths))
    for r in results:
        for i, c in enumerate(r.checks):
            lines += row((r.name if i == 0 else "", c.prediction, c.measured, "pass" if c.passed else "FAIL"))
    lines += ["", "Threshold sources:"]
    for r in results:
        lines += textwrap.wrap(f"{r.name}: {r.source}", width, subsequent_indent="    ")
    return "\n".join(lines)
