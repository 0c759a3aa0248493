"""The run store itself: ``RunStore`` (one SQLite file, one row per run) and ``RunRecord``.

Rows are only ever written whole: a run, its trajectories and its sweep membership go in one
transaction, in WAL mode with full sync, so a process killed at any instant leaves every committed
run and no half run. A run that finished is never overwritten; a failed run may be replaced.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..jsonable import jsonable
from .keys import canonical_config, code_version, config_hash, run_key
from .schema import RUN_COLUMNS, STATUSES, StoreError, check_file, open_schema, transaction


def pack_arrays(arrays: dict[str, np.ndarray]) -> bytes:
    """A dict of arrays as compressed ``.npz`` bytes."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def unpack_arrays(blob: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob)) as f:
        return {k: f[k] for k in f.files}


@dataclass
class RunRecord:
    """One finished or failed run, ready to commit.

    ``metrics`` holds JSON-able per-run values (the ``moesim.train`` summary of this seed);
    ``trajectory`` the run's history and snapshots as arrays (may be empty for a failed run).
    """

    config: dict[str, typing.Any]
    seed: int
    status: str
    metrics: dict[str, typing.Any] = field(default_factory=dict)
    trajectory: dict[str, np.ndarray] | bytes = field(default_factory=dict)
    error: str | None = None
    batch_size: int = 1
    batch_wall_time_s: float | None = None
    batch_cpu_time_s: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    worker: str | None = None
    moesim_version: str | None = None

    def key(self) -> str:
        return run_key(self.config, self.seed, self.moesim_version)


class RunStore:
    """An open run store (SQLite, WAL). Use as a context manager or call ``close()``.

    Args:
        path: the database file.
        create: make a new store when ``path`` does not exist (otherwise ``FileNotFoundError``).
        readonly: open for reading only (never creates or changes the file; works in a read-only
            folder).

    Raises:
        StoreError: ``path`` cannot be created or written (for a writing store), is empty, is not
            an SQLite database, is a database of something else, or a store of another schema
            version.
    """

    def __init__(self, path: str | os.PathLike, create: bool = True, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        memory = str(path) == ":memory:"
        if memory:
            pass
        elif not self.path.exists():
            if not create or readonly:
                raise FileNotFoundError(f"no run store at {self.path}")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                from ..outputs import os_error_text

                why = os_error_text(self.path.parent, err)
                raise StoreError(f"run store {str(self.path)!r} cannot be created: its folder "
                                 f"{str(self.path.parent)!r} cannot be made ({why})") from None
            if not os.access(self.path.parent, os.W_OK | os.X_OK):
                raise StoreError(f"run store {str(self.path)!r} cannot be created: its folder "
                                 f"{str(self.path.parent)!r} is not writable")
        else:
            check_file(self.path, readonly)
        try:
            if memory:
                self.conn = sqlite3.connect(":memory:", isolation_level=None)
            elif readonly:
                # in a read-only folder SQLite cannot make the WAL index: read the file as immutable,
                # unless a non-empty write-ahead log (a writer killed before its checkpoint) holds runs
                wal = Path(f"{self.path}-wal")
                pending = wal.exists() and wal.stat().st_size > 0
                folder_writable = os.access(self.path.parent, os.W_OK | os.X_OK)
                mode = "mode=ro" if folder_writable or pending else "mode=ro&immutable=1"
                uri = f"file:{_quote(self.path.resolve())}?{mode}"
                self.conn = sqlite3.connect(uri, uri=True, timeout=60.0, isolation_level=None)
            else:
                # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per run
                self.conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        except sqlite3.Error as err:
            raise StoreError(f"run store {str(self.path)!r} cannot be opened: {err}") from None
        try:
            open_schema(self.conn, self.path, self.readonly)
        except BaseException:
            self.conn.close()
            raise

    # --- context manager ------------------------------------------------------------------

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- writing --------------------------------------------------------------------------

    def commit(self, record: RunRecord, sweep: str | None = None) -> bool:
        """Write one run atomically (row, trajectories, sweep membership).

        A stored ``done`` run is never replaced (returns False); a stored ``failed`` run is
        replaced by the new attempt. Returns True when the record was written.
        """
        if record.status not in STATUSES:
            raise ValueError(f"status={record.status!r} is not allowed; choose one of: {', '.join(STATUSES)}")
        version = record.moesim_version or code_version()
        cfg = canonical_config(record.config)
        key = run_key(cfg, record.seed, version)
        blob = record.trajectory if isinstance(record.trajectory, bytes) else pack_arrays(record.trajectory)
        row = (key, config_hash(cfg), int(record.seed), version, json.dumps(cfg, sort_keys=True), record.status,
               record.error, json.dumps(jsonable(record.metrics, nonfinite="null"), sort_keys=True),
               int(record.batch_size), record.batch_wall_time_s, record.batch_cpu_time_s, record.started_at,
               record.finished_at, time.time(), record.worker)
        c = self.conn
        with transaction(c):
            old = c.execute("SELECT status FROM runs WHERE key = ?", (key,)).fetchone()
            written = old is None or old[0] != "done"
            if written:
                c.execute("DELETE FROM runs WHERE key = ?", (key,))  # a failed attempt; cascades
                c.execute(f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}) VALUES ({', '.join('?' * len(row))})", row)
                c.execute("INSERT INTO trajectories (key, npz) VALUES (?, ?)", (key, blob))
            if sweep is not None:
                c.execute("INSERT OR IGNORE INTO sweep_runs (sweep, key) VALUES (?, ?)", (sweep, key))
        return written

    def add_to_sweep(self, sweep: str, keys: typing.Iterable[str]) -> None:
        """Record that ``sweep`` asked for the stored runs ``keys``."""
        with transaction(self.conn):
            self.conn.executemany("INSERT OR IGNORE INTO sweep_runs (sweep, key) SELECT ?, key FROM runs WHERE key = ?",
                                  [(sweep, k) for k in keys])

    def stale(self, pairs: typing.Iterable[tuple[str, int]], version: str | None = None) -> list[dict[str, typing.Any]]:
        """Stored runs of the ``(config_hash, seed)`` pairs computed by another code version than
        ``version`` (default ``code_version()``): dicts with key, config_hash, seed, moesim_version, status."""
        version = version or code_version()
        wanted = set(pairs)
        hashes = sorted({h for h, _ in wanted})
        out = []
        for i in range(0, len(hashes), 500):
            chunk = hashes[i:i + 500]
            q = (f"SELECT key, config_hash, seed, moesim_version, status FROM runs WHERE moesim_version != ? AND "
                 f"config_hash IN ({', '.join('?' * len(chunk))})")
            for key, h, seed, ver, status in self.conn.execute(q, [version, *chunk]):
                if (h, seed) in wanted:
                    out.append(dict(key=key, config_hash=h, seed=seed, moesim_version=ver, status=status))
        return out

    def remove_from_sweep(self, sweep: str, keys: typing.Iterable[str]) -> None:
        """Take the runs ``keys`` out of ``sweep`` (the runs stay in the store)."""
        with transaction(self.conn):
            self.conn.executemany("DELETE FROM sweep_runs WHERE sweep = ? AND key = ?", [(sweep, k) for k in keys])

    def close_interrupted(self, sweep: str) -> int:
        """Close the ``sweep_log`` rows of ``sweep`` left open by an invocation that was killed
        (SIGKILL, power loss): mark them interrupted, with the runs committed to the sweep since
        they started and the last such commit as their end. Returns how many were closed.

        Called when the sweep starts again; two invocations of one sweep name at once on one
        store are not supported (the second would close the first's row).
        """
        c = self.conn
        with transaction(c):
            rows = c.execute("SELECT id, started_at FROM sweep_log WHERE sweep = ? AND finished_at IS NULL",
                             (sweep,)).fetchall()
            for log_id, started in rows:
                n, last = c.execute(
                    "SELECT count(*), max(r.committed_at) FROM runs r JOIN sweep_runs s ON s.key = r.key "
                    "WHERE s.sweep = ? AND r.committed_at >= ?", (sweep, started)).fetchone()
                failed = c.execute(
                    "SELECT count(*) FROM runs r JOIN sweep_runs s ON s.key = r.key "
                    "WHERE s.sweep = ? AND r.committed_at >= ? AND r.status = 'failed'", (sweep, started)).fetchone()[0]
                c.execute("UPDATE sweep_log SET finished_at = ?, n_computed = ?, n_failed = ?, interrupted = 1 "
                          "WHERE id = ?", (last if last is not None else started, n, failed, log_id))
        return len(rows)

    def log_start(self, sweep: str, spec: dict, n_runs: int, n_stored: int, executor: str) -> int:
        """Open a ``sweep_log`` row for one invocation (closing rows a killed one left open); returns its id."""
        self.close_interrupted(sweep)
        with transaction(self.conn):
            cur = self.conn.execute(
                "INSERT INTO sweep_log (sweep, spec, started_at, n_runs, n_stored_before, executor) "
                "VALUES (?, ?, ?, ?, ?, ?)", (sweep, json.dumps(spec, sort_keys=True), time.time(), n_runs,
                                              n_stored, executor))
            return int(cur.lastrowid)

    def log_finish(self, log_id: int, n_computed: int, n_failed: int, interrupted: bool) -> None:
        with transaction(self.conn):
            self.conn.execute("UPDATE sweep_log SET finished_at = ?, n_computed = ?, n_failed = ?, interrupted = ? "
                              "WHERE id = ?", (time.time(), n_computed, n_failed, int(interrupted), log_id))

    # --- reading --------------------------------------------------------------------------

    def statuses(self, keys: typing.Iterable[str]) -> dict[str, str]:
        """``{key: status}`` of those of ``keys`` that are stored."""
        keys = list(keys)
        out: dict[str, str] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            q = f"SELECT key, status FROM runs WHERE key IN ({', '.join('?' * len(chunk))})"
            out.update(dict(self.conn.execute(q, chunk).fetchall()))
        return out

    def count(self, sweep: str | None = None) -> int:
        if sweep is None:
            return self.conn.execute("SELECT count(*) FROM runs").fetchone()[0]
        return self.conn.execute("SELECT count(*) FROM sweep_runs WHERE sweep = ?", (sweep,)).fetchone()[0]

    def sweeps(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT DISTINCT sweep FROM sweep_runs ORDER BY sweep")]

    def sweep_log(self, sweep: str | None = None) -> list[dict[str, typing.Any]]:
        """The logged invocations (newest last), optionally of one sweep."""
        q, args = "SELECT * FROM sweep_log", ()
        if sweep is not None:
            q, args = q + " WHERE sweep = ?", (sweep,)
        cur = self.conn.execute(q + " ORDER BY id", args)
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r)) for r in cur.fetchall()]
        for r in rows:
            r["spec"] = json.loads(r["spec"])
        return rows

    def records(self, sweep: str | None = None) -> list[dict[str, typing.Any]]:
        """Every stored run (optionally of one sweep) as a dict; config and metrics decoded."""
        q = f"SELECT {', '.join('r.' + c for c in RUN_COLUMNS)} FROM runs r"
        args: tuple = ()
        if sweep is not None:
            q += " JOIN sweep_runs s ON s.key = r.key WHERE s.sweep = ?"
            args = (sweep,)
        rows = []
        for values in self.conn.execute(q + " ORDER BY r.committed_at, r.key", args):
            row = dict(zip(RUN_COLUMNS, values))
            row["config"] = json.loads(row["config"])
            row["metrics"] = json.loads(row["metrics"])
            rows.append(row)
        return rows

    def trajectory(self, key: str) -> dict[str, np.ndarray]:
        """The stored history and snapshots of run ``key`` (``history/...``, ``snapshots/...``)."""
        row = self.conn.execute("SELECT npz FROM trajectories WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise KeyError(f"no run with key {key!r} in {self.path}")
        return unpack_arrays(row[0])

    def dataframe(self, sweep: str | None = None):
        """All runs (or one sweep's) as a pandas DataFrame, one row per run (``moesim.store.frames.dataframe``)."""
        from .frames import dataframe

        return dataframe(self.records(sweep))


def _quote(path: Path) -> str:
    from urllib.parse import quote

    return quote(str(path))
