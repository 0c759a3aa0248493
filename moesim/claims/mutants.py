"""Broken models on purpose: the catalogue of the mutation matrix.

Each mutant is a set of config overrides applied to the model under test (every MoE run of a
claim, as ``moesim verify --set``). A claim declares in ``register(..., detects=...)`` which
mutants it must fail on and why; ``moesim verify --mutants`` prints the claims x mutants matrix
and ``tests/theory/test_mutation_matrix.py`` asserts it: the unbroken model passes every claim,
every claim fails on every mutant it declares, and every mutant is detected by some claim.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Mutant:
    """One broken model: what is broken, in the paper's terms, and the overrides that break it."""

    name: str
    broken: str
    overrides: dict = field(default_factory=dict)


MUTANTS: dict[str, Mutant] = {m.name: m for m in (
    Mutant("frozen-router", "the router never learns (eta_r = 0): Theta stays 0, routing stays uniform",
           dict(lr_router=0.0)),
    Mutant("linear-experts", "sigma(z) = z instead of z^3: alignments do not reinforce themselves (Section 5)",
           dict(activation="linear")),
    Mutant("no-router-noise", "no U[0,1] router noise (a 1e-5 tie-break instead): no exploration (Lemma 5.1)",
           dict(router_noise="none")),
    Mutant("plain-gd", "plain GD for the experts instead of normalized GD (Algorithm 1), same eta",
           dict(normalization="none")),
    Mutant("unit-gate", "the top-1 gate renormalized to 1: the router routes but gets no task gradient",
           dict(gate="unit")),
    Mutant("random-fixed-router", "a random Theta^(0) (entries N(0, 1)) that never learns: routing is fixed "
           "and blind to the clusters", dict(router_init_sigma=1.0, lr_router=0.0)),
    Mutant("shared-init", "every expert starts from the same W^(0): nothing breaks the symmetry but the "
           "routing noise", dict(shared_init=True)),
    Mutant("shuffled-labels", "the training labels are permuted: y no longer depends on x",
           dict(shuffle_labels=True)),
)}


def get(name: str) -> Mutant:
    """The mutant called ``name`` (``ValueError`` naming the allowed ones otherwise)."""
    if name not in MUTANTS:
        raise ValueError(f"mutant {name!r} is not known; choose from: {', '.join(MUTANTS)}")
    return MUTANTS[name]


@dataclass
class Matrix:
    """Verdicts of claims on the unbroken model and on mutants.

    ``unbroken[claim]``: the claim passes on the unbroken model; ``cells[(mutant, claim)]``: it
    passes on the mutant (``False`` = detected); ``declared[(mutant, claim)]``: the claim declares
    that it detects the mutant. Cells not computed are absent.
    """

    claims: list[str]
    mutants: list[str]
    unbroken: dict
    cells: dict
    declared: dict
    failures: dict = field(default_factory=dict)  # (mutant or "unbroken", claim) -> failed checks

    @property
    def missed(self) -> list[tuple[str, str]]:
        """Declared detections that did not happen (the claim passed on its mutant)."""
        return [k for k, d in self.declared.items() if d and self.cells.get(k, True)]

    @property
    def undetected(self) -> list[str]:
        """Mutants that no claim declares (nothing must catch them)."""
        return [m for m in self.mutants if not any(self.declared.get((m, c)) for c in self.claims)]

    @property
    def ok(self) -> bool:
        return all(self.unbroken.values()) and not self.missed and not self.undetected

    def to_dict(self) -> dict:
        return dict(claims=self.claims, mutants=self.mutants, unbroken=self.unbroken,
                    cells=[dict(mutant=m, claim=c, passed=v, declared=bool(self.declared.get((m, c))))
                           for (m, c), v in self.cells.items()],
                    missed=[list(k) for k in self.missed], undetected=self.undetected, complete=self.ok,
                    failures={f"{m}|{c}": v for (m, c), v in self.failures.items()})


def run_matrix(claims, context, selected: list[str], mutant_names: list[str], *, only_declared: bool = False,
               log=lambda text: None) -> Matrix:
    """Check ``selected`` claims on the unbroken model and on each mutant.

    ``claims``: the ``moesim.claims`` package; ``context(overrides)`` makes a ``Context`` (all
    sharing one run cache). ``only_declared``: on a mutant, check only the claims that declare it
    (what the tests assert); otherwise every claim (the full matrix of ``moesim verify --mutants``).
    """
    declared = {(m, c): m in claims.get(c).detects for m in mutant_names for c in selected}
    unbroken, cells, failures = {}, {}, {}
    base = context({})
    for c in selected:
        res = claims.get(c).check(base)
        unbroken[c] = res.passed
        if not res.passed:
            failures[("unbroken", c)] = [ch.prediction for ch in res.failures()]
        log(f"unbroken: {res.verdict} {c}")
    for m in mutant_names:
        ctx = context(get(m).overrides)
        for c in selected:
            if only_declared and not declared[(m, c)]:
                continue
            res = claims.get(c).check(ctx)
            cells[(m, c)] = res.passed
            failures[(m, c)] = [ch.prediction for ch in res.failures()]
            log(f"{m}: {'passes' if res.passed else 'detected by'} {c}"
                + (" (declared: MISSED)" if declared[(m, c)] and res.passed else ""))
    return Matrix(list(selected), list(mutant_names), unbroken, cells, declared, failures)


def matrix_plain_text(matrix: Matrix, scale, regimes, wall: float) -> str:
    """The same matrix for a terminal: aligned columns, no Markdown markup (``mutants.md`` keeps it)."""
    lines = matrix_markdown(matrix, scale, regimes, wall).replace("**", "").replace("`", "").splitlines()
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines if line.startswith("|")
            and not line.startswith("|---")]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    table = ["  ".join(f"{c:<{w}}" for c, w in zip(r, widths)).rstrip() for r in rows]
    table.insert(1, "  ".join("-" * w for w in widths))
    out, done = [], False
    for line in lines:
        if line.startswith("|"):
            if not done:
                out += table
                done = True
        else:
            out.append(line.lstrip("# "))
    return "\n".join(out)


def matrix_markdown(matrix: Matrix, scale, regimes, wall: float) -> str:
    """The claims x mutants table: 'caught' / '**MISSED**' on declared cells, 'fails' / '-' elsewhere."""
    head = "| claim | unbroken | " + " | ".join(matrix.mutants) + " |"
    lines = [
        f"# moesim mutation matrix ({scale.name}, regimes {list(regimes)}): "
        f"{'complete' if matrix.ok else 'INCOMPLETE'}",
        "",
        "A cell is **caught** when the claim fails on that broken model and declares it must; **MISSED** when "
        "it declares the mutant but passes; 'fails' when it fails without declaring it; '-' when it passes and "
        "does not declare it; blank when not computed. The unbroken model must pass every claim.",
        "",
        head,
        "|" + "---|" * (2 + len(matrix.mutants)),
    ]
    for c in matrix.claims:
        row = [c, "pass" if matrix.unbroken.get(c) else "**FAIL**"]
        for m in matrix.mutants:
            if (m, c) not in matrix.cells:
                row.append("")
            elif matrix.declared.get((m, c)):
                row.append("caught" if not matrix.cells[(m, c)] else "**MISSED**")
            else:
                row.append("fails" if not matrix.cells[(m, c)] else "-")
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Mutants:", ""] + [f"- **{m}**: {MUTANTS[m].broken} (`{MUTANTS[m].overrides}`)"
                                      for m in matrix.mutants]
    if matrix.undetected:
        lines += ["", f"Mutants no claim declares: {', '.join(matrix.undetected)}"]
    lines += ["", f"Wall time {wall:.0f} s."]
    return "\n".join(lines)
