"""Where results and caches go, and how a results folder is written without losing or mixing files.

One rule for every command (``run``, ``verify``, ``reproduce``, ``book``):

* by default each invocation writes a NEW folder ``runs/<command>-<name>-<YYYYmmdd-HHMMSS>`` under
  the current directory (``default_out``; ``-2``, ``-3``, ... on a collision, never reused);
* an explicit ``--out`` that exists and is not empty is refused unless ``overwrite`` is given, and
  then it is replaced whole, never merged (``prepare_out``);
* the folder is created and checked for writability before any training, so a bad path costs
  nothing (``prepare_out``);
* results are written into a temporary sibling folder and renamed over the target at the end
  (``write_atomic``): a reader sees the old folder or the new one, never a mixture.

A results file records where it was computed (``environment``: versions, machine, threads).
Caches (generated data, compiled kernels) live in ``cache_dir()``: ``$MOESIM_CACHE``, else
``$XDG_CACHE_HOME/moesim``, else ``~/.cache/moesim``.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Callable


class OutputError(ValueError):
    """An output path cannot be used (exists, not writable, not a folder); the message names it."""


def os_error_text(path: str | os.PathLike, err: OSError) -> str:
    """Why ``path`` could not be made: names a file that stands where a folder is needed."""
    for parent in (Path(path), *Path(path).parents):
        if parent.exists():
            if not parent.is_dir():
                return f"{str(parent)!r} is a file, not a folder"
            break
    return err.strerror or str(err)


def cache_dir(kind: str | None = None) -> Path:
    """The cache root: ``$MOESIM_CACHE``, else ``$XDG_CACHE_HOME/moesim``, else ``~/.cache/moesim``.

    ``kind``: the sub-folder of one cache (``"data"``: generated data, ``moesim.data``;
    ``"kernels"``: compiled kernels); ``None``: the root itself.
    """
    if os.environ.get("MOESIM_CACHE"):
        root = Path(os.environ["MOESIM_CACHE"])
    elif os.environ.get("XDG_CACHE_HOME"):
        root = Path(os.environ["XDG_CACHE_HOME"]) / "moesim"
    else:
        root = Path.home() / ".cache" / "moesim"
    return root if kind is None else root / kind


def default_out(command: str, name: str, root: str | os.PathLike = "runs") -> Path:
    """A new folder path ``<root>/<command>-<name>-<YYYYmmdd-HHMMSS>`` that does not exist yet.

    On a collision (two runs in the same second) ``-2``, ``-3``, ... is appended; an existing
    folder is never reused. The folder itself is made by ``prepare_out``.
    """
    base = Path(root) / f"{command}-{name}-{time.strftime('%Y%m%d-%H%M%S')}".replace("/", "_")
    path, i = base, 1
    while path.exists() or path.is_symlink():
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    return path


def prepare_out(path: str | os.PathLike, overwrite: bool = False, option: str = "--out") -> Path:
    """Check an output folder before any work: create it, and prove it is writable.

    Refuses a path that is a file, and an existing non-empty folder unless ``overwrite`` (whose old
    content is then kept until ``write_atomic`` replaces it whole). Raises ``OutputError`` naming
    ``option`` and the path.
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{option} {str(out)!r} is not allowed: it exists and is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputError(f"{option} {str(out)!r} exists and is not empty; give --overwrite to replace it "
                          f"whole, or name a new folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out.parent / f".{out.name}.probe-{uuid.uuid4().hex[:8]}"
        probe.mkdir()
        probe.rmdir()
    except OSError as err:
        raise OutputError(f"{option} {str(out)!r} cannot be written: {os_error_text(out, err)}") from None
    return out


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None], overwrite: bool = False,
                 option: str = "--out") -> Path:
    """Call ``write(tmp)`` on a temporary sibling folder, then rename it to ``path``.

    ``path`` may be absent or an empty folder; an existing non-empty folder needs ``overwrite``
    and is then replaced whole (moved aside, the new folder renamed in, the old one deleted).
    If ``write`` fails the temporary folder is removed and ``path`` is left as it was.
    """
    out = Path(path)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputError(f"{option} {str(out)!r} exists and is not empty; give --overwrite to replace it "
                          f"whole, or name a new folder")
    if out.exists() and not out.is_dir():
        raise OutputError(f"{option} {str(out)!r} is not allowed: it exists and is a file, not a folder")
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.parent / f".{out.name}.tmp-{tag}"
        tmp.mkdir()
    except OSError as err:
        raise OutputError(f"{option} {str(out)!r} cannot be written: {os_error_text(out, err)}") from None
    old = None
    try:
        write(tmp)
        if out.is_dir():
            if any(out.iterdir()):
                old = out.parent / f".{out.name}.old-{tag}"
                os.replace(out, old)
            else:
                out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not out.exists():
            os.replace(old, out)  # the old results stay where they were
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out


def environment() -> dict:
    """Versions that produced the numbers of a results file: moesim, torch, Python, machine, threads."""
    import platform

    import torch

    from . import __version__

    return dict(moesim=__version__, torch=torch.__version__, python=platform.python_version(),
                machine=platform.machine(), threads=torch.get_num_threads())
