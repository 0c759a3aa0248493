"""The paper's Table 1 protocol: four models, ten seeds each, in each data setting.

Protocol (the official notebooks; book/official_code.md, 'The protocol behind Table 1'): per setting,
one fixed data set (the official generator and seed); single linear and single nonlinear CNNs
(80 filters, Adam, up to 801 epochs with the code's stopping rule), linear and nonlinear MoE (8 experts of 16 filters, normalized GD
and router GD, up to 501 epochs with the code's early stopping); 10 consecutive model seeds on the
same data; mean and population std (ddof = 0) of the test accuracy and of the final training
dispatch entropy. ``moesim reproduce table1`` and the book's Table 1 chapter call ``table1``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .config import MODELS, SETTINGS, preset
from .paper import CONFIDENCE, reported

TABLE1_MODELS = ("single-linear", "single-nonlinear", "moe-linear", "moe-nonlinear")
TABLE1_SETTINGS = ("s1", "s2", "s3", "s4")


@dataclass
class Table1Row:
    """One cell group of Table 1: our mean and std over seeds beside the paper's."""

    setting: str
    model: str
    seeds: int
    test_accuracy: tuple[float, float]  # mean, std (%)
    dispatch_entropy: tuple[float, float] | None  # mean, std (nats); None for single models
    updates: float  # mean number of training steps taken
    wall_time_s: float
    paper_test_accuracy: tuple[float, float | None] | None
    paper_dispatch_entropy: tuple[float, float | None] | None
    paper_confidence: str | None
    per_seed_test_accuracy: list[float] = field(default_factory=list)
    per_seed_dispatch_entropy: list[float] = field(default_factory=list)


@dataclass
class Table1:
    """The reproduced table, with its protocol."""

    rows: list[Table1Row]
    semantics: str
    n_train: int
    wall_time_s: float

    def row(self, setting: str, model: str) -> Table1Row:
        for r in self.rows:
            if r.setting == setting and r.model == model:
                return r
        raise KeyError(f"no row for setting={setting!r}, model={model!r}")

    def markdown(self) -> str:
        """Table 1 as Markdown: ours beside the paper's for accuracy and dispatch entropy."""

        def ms(v, fmt):
            if v is None:
                return "—"
            return fmt.format(v[0]) + ("" if v[1] is None else " ± " + fmt.format(v[1]))

        lines = ["| setting | model | test accuracy (%) ours | paper | dispatch entropy ours | paper | steps | time (s) |",
                 "|---|---|---|---|---|---|---|---|"]
        for r in self.rows:
            conf = f" ({r.paper_confidence})" if r.paper_confidence == "L" else ""
            lines.append(f"| {r.setting} | {r.model} | {ms(r.test_accuracy, '{:.2f}')} | "
                         f"{ms(r.paper_test_accuracy, '{:.2f}')}{conf} | {ms(r.dispatch_entropy, '{:.3f}')} | "
                         f"{ms(r.paper_dispatch_entropy, '{:.3f}')} | {r.updates:.0f} | {r.wall_time_s:.1f} |")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return dict(semantics=self.semantics, n_train=self.n_train, wall_time_s=self.wall_time_s,
                    rows=[asdict(r) for r in self.rows])


def table1(settings=TABLE1_SETTINGS, models=TABLE1_MODELS, seeds: int | list[int] = 10, *,
           semantics: str = "official", quick: bool = False, overrides: dict | None = None,
           progress: bool = False, log=None) -> Table1:
    """Run the Table 1 protocol and return our numbers beside the paper's.

    Args:
        settings: data settings (``s1``..``s4``).
        models: among ``single-linear``, ``single-nonlinear``, ``moe-linear``, ``moe-nonlinear``.
        seeds: model seeds (an int ``S`` means 0..S-1), trained as one batched program per model.
        semantics: ``"official"`` (the protocol that produced Table 1) or ``"paper"``.
        quick: use the laptop size (n = 4,000) instead of the paper's (n = 16,000).
        overrides: config fields to change in every run (e.g. ``{"device": "cuda"}``).
        progress: show a progress bar per model. log: a callable taking one line per finished model.
    """
    from .arguments import seed_list as seeds_of
    from .progress import progress_bar
    from .training import make_problem, train

    for s in settings:
        if s not in SETTINGS or s == "verify":
            raise ValueError(f"setting={s!r} is not allowed; choose from {', '.join(TABLE1_SETTINGS)}")
    for m in models:
        if m not in MODELS:
            raise ValueError(f"model={m!r} is not allowed; choose from {', '.join(TABLE1_MODELS)}")
    if semantics not in ("official", "paper"):
        raise ValueError(f"semantics={semantics!r} is not allowed; choose 'official' or 'paper'")
    seed_list = seeds_of(seeds if isinstance(seeds, int) else [int(s) for s in seeds])
    t0 = time.perf_counter()
    rows = []
    n_train = 0
    for setting in settings:
        name = f"{semantics}-{setting}" + ("-quick" if quick else "")
        base = preset(name, **(overrides or {}))
        problem = make_problem(base)  # one data set per setting, shared by the four models
        n_train = base.n_train
        for model in models:
            cfg = preset(name, model, **{"record_every": 10**6, **(overrides or {})})
            update, close = progress_bar(cfg.steps, f"{setting} {model} x{len(seed_list)}", progress)
            res = train(cfg, seed_list, problem=problem, progress=update, keep_params=False)
            close()
            acc = res.summary["test_accuracy"]
            ent = res.summary["dispatch_entropy"]
            is_moe = cfg.architecture == "moe"
            rows.append(Table1Row(
                setting=setting, model=model, seeds=len(seed_list),
                test_accuracy=(float(np.mean(acc)), float(np.std(acc))),
                dispatch_entropy=(float(np.mean(ent)), float(np.std(ent))) if is_moe else None,
                updates=float(np.mean(res.summary["updates"])), wall_time_s=res.wall_time,
                paper_test_accuracy=reported(setting, model, "test_accuracy"),
                paper_dispatch_entropy=reported(setting, model, "dispatch_entropy"),
                paper_confidence=CONFIDENCE.get((setting, model)),
                per_seed_test_accuracy=[float(v) for v in acc],
                per_seed_dispatch_entropy=[float(v) for v in ent] if is_moe else [],
            ))
            if log is not None:
                r = rows[-1]
                log(f"{setting} {model}: test accuracy {r.test_accuracy[0]:.2f} ± {r.test_accuracy[1]:.2f} "
                    f"in {r.wall_time_s:.1f} s")
    return Table1(rows, semantics, n_train, time.perf_counter() - t0)
