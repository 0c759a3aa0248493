"""What ``train`` records of S runs: one history row per step, snapshots, the final summary.

``Recorder.record`` writes a step's loss, training accuracy and dispatch counts (a stopped run's
rows stay NaN) and applies the official early-stopping rules (``moesim.stopping``);
``snapshot`` evaluates the parameters on the test set (test accuracy, router and expert
alignments, each expert's accuracy per cluster); ``tables`` and ``summary`` give the arrays of
``RunResult``.
"""

from __future__ import annotations

import numpy as np
import torch

from . import metrics
from .evaluation import evaluate, expert_cluster_accuracy
from .stopping import stop_rule


class Recorder:
    """The record of S runs being trained on ``prob`` by ``engine`` (the arrays live on the device)."""

    def __init__(self, cfg, seeds: list[int], prob, a: torch.Tensor, engine, noise, device, dtype: torch.dtype):
        self.cfg, self.seeds, self.prob, self.a, self.engine, self.noise = cfg, seeds, prob, a, engine, noise
        S, M, K, T = len(seeds), cfg.experts, cfg.n_clusters, cfg.steps
        dev, dt = device, dtype
        self.loss = torch.full((T, S), float("nan"), device=dev, dtype=dt)
        self.accuracy = torch.full((T, S), float("nan"), device=dev, dtype=dt)
        self.counts = torch.zeros((T, S, K, M), device=dev, dtype=torch.long)
        self.active = torch.ones(S, dtype=torch.bool, device=dev)
        self.stopped = torch.zeros(S, dtype=torch.bool, device=dev)
        self.last_step = torch.full((S,), T - 1, dtype=torch.long, device=dev)  # last forward pass of each run
        self.first_bad = torch.full((S,), T, dtype=torch.long, device=dev)  # first non-finite loss
        self.best = torch.full((S,), float("inf"), device=dev, dtype=dt)
        self.snaps: list[dict[str, torch.Tensor]] = []

    @torch.no_grad()
    def record(self, step: int, loss: torch.Tensor, margin: torch.Tensor, expert: torch.Tensor) -> None:
        """Step ``step``'s row for the active runs; a run stops at a non-finite loss or by the rule."""
        cfg, active = self.cfg, self.active
        lv = loss.detach()
        self.loss[step] = torch.where(active, lv, self.loss[step])
        self.accuracy[step] = torch.where(active, (margin > 0).to(self.loss.dtype).mean(1), self.accuracy[step])
        self.counts[step] = metrics.dispatch_counts(expert, self.prob.cluster, cfg.n_clusters, cfg.experts) \
            * active[:, None, None]
        bad = active & ~torch.isfinite(lv)
        self.first_bad = torch.where(bad, step, self.first_bad)
        stop = bad
        if cfg.stopping == "official":
            rule, self.best = stop_rule(cfg, step, lv, self.best)
            stop = stop | (rule & active)
            self.stopped |= rule & active
        self.last_step = torch.where(stop, step, self.last_step)
        self.active = active & ~stop

    def diverged(self) -> tuple[int, list[int]] | None:
        """(first step with a non-finite loss, the seeds that had it there), or None."""
        if not bool((self.first_bad < self.cfg.steps).any()):
            return None
        step_bad = int(self.first_bad.min())
        return step_bad, [self.seeds[i] for i in (self.first_bad == step_bad).nonzero()[:, 0].tolist()]

    def snapshot(self, step: int, params) -> None:
        """Test accuracy and alignments of the parameters after ``step`` updates."""
        prob, a, p = self.prob, self.a, params.detach()
        correct, _ = evaluate(self.cfg, p, prob.x_test, prob.x_sum_test, prob.y_test, self._noise("snapshot"), a,
                              engine=self.engine)
        self.snaps.append(dict(
            step=torch.tensor(step),
            test_accuracy=100 * correct.to(torch.float64).mean(1),
            router_center=metrics.router_alignment(p.theta, prob.centers),
            router_feature=metrics.router_alignment(p.theta, prob.features),
            expert_feature=metrics.signed_filter_alignment(p.W, a, prob.features),
            expert_center=metrics.signed_filter_alignment(p.W, a, prob.centers),
            expert_cluster_accuracy=expert_cluster_accuracy(self.cfg, p, prob.x_test, prob.y_test, prob.cluster_test,
                                                            a, engine=self.engine),
        ))

    def last_snapshot(self) -> int | None:
        return int(self.snaps[-1]["step"]) if self.snaps else None

    def _noise(self, split: str):
        return self.noise.eval(split) if self.noise is not None else None

    def tables(self, upto: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(history of steps 0..upto-1, snapshots) as numpy arrays on the CPU."""
        hist = dict(loss=self.loss[:upto], train_accuracy=self.accuracy[:upto], dispatch_counts=self.counts[:upto])
        hist = {k: v.detach().cpu().numpy() for k, v in hist.items()}
        ran = np.arange(upto)[:, None] <= self.last_step.cpu().numpy()[None, :]
        hist["dispatch_entropy"] = np.where(
            ran, metrics.dispatch_entropy(torch.from_numpy(hist["dispatch_counts"])).numpy(), np.nan)
        hist["load"] = hist["dispatch_counts"].sum(2)
        hist["train_accuracy"] = 100 * hist["train_accuracy"]
        sn = {k: torch.stack([s[k] for s in self.snaps]).cpu().numpy() for k in self.snaps[0]} if self.snaps else {}
        return hist, sn

    def summary(self, params, history: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One value per run: final loss, accuracies and dispatch entropies, updates taken."""
        cfg, prob, a = self.cfg, self.prob, self.a
        S = len(self.seeds)
        p = params.detach()
        last = self.last_step.cpu().numpy()
        idx = np.arange(S)
        correct_test, expert_test = evaluate(cfg, p, prob.x_test, prob.x_sum_test, prob.y_test, self._noise("test"),
                                             a, engine=self.engine)
        correct_train, _ = evaluate(cfg, p, prob.x, prob.x_sum, prob.y, self._noise("train"), a, engine=self.engine)
        test_counts = metrics.dispatch_counts(expert_test, prob.cluster_test, cfg.n_clusters, cfg.experts)
        return dict(
            seed=np.array(self.seeds),
            updates=np.where(self.stopped.cpu().numpy(), last, cfg.steps),
            stopped_early=self.stopped.cpu().numpy(),
            loss=history["loss"][last, idx],
            dispatch_entropy=history["dispatch_entropy"][last, idx],
            test_accuracy=100 * correct_test.to(torch.float64).mean(1).cpu().numpy(),
            train_accuracy=100 * correct_train.to(torch.float64).mean(1).cpu().numpy(),
            test_dispatch_entropy=metrics.dispatch_entropy(test_counts).cpu().numpy(),
            test_dispatch_counts=test_counts.cpu().numpy(),
        )
