"""Progress bars on stderr for long library calls (training, claims, sweeps, Table 1)."""

from __future__ import annotations

import sys


def progress_bar(total: int, desc: str, enabled: bool = True):
    """A tqdm bar on stderr (or a no-op); returns (callback(step, total), close())."""
    if not enabled:
        return (lambda step, tot: None), (lambda: None)
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="step", file=sys.stderr, leave=False, dynamic_ncols=True, disable=None)

    def update(step: int, tot: int) -> None:
        bar.update(step - bar.n)

    return update, bar.close
