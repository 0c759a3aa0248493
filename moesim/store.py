"""The run store: one embedded SQLite file holding one row per run (one config, one seed).

A run's key is a content hash of its config, its seed and the code that computes it
(``run_key``), so the same run computed twice by the same code lands on the same row.

The code is named by ``code_version()``: the moesim version plus ``code_fingerprint()``, a hash
of the modules that compute a run's numbers (``FINGERPRINT_FILES``: the config and its
validation, the data generator, the model, the eager and fused steps with the C kernel's source,
training and metrics). Python files are hashed as their syntax tree without docstrings, so a
comment or docstring edit keeps the runs; any other change gives new keys. Sweeps, store and
command-line plumbing are not covered: they do not change a run's numbers. A stored run of the
same config and seed under another code version is *stale*: ``RunStore.stale`` finds them, and a
sweep refuses to mix them with new runs (``moesim sweep --retry-stale`` recomputes them with
this code and takes the old rows out of the sweep; they stay in the file, under their own key).

Rows are only ever written whole: a run, its trajectories and its sweep membership go in one
transaction, in WAL mode with full sync, so a process killed at any instant (``kill -9``, Ctrl-C,
power to the worker) leaves every committed run and no half run. A run that finished is never
overwritten; a failed run may be replaced by a new attempt.

Tables (schema ``SCHEMA_VERSION``, also in ``PRAGMA user_version``):

* ``meta``: ``format = moesim-run-store``, ``schema_version``, ``created_by``;
* ``runs``: key, config hash, seed, moesim version, config (JSON), status (``done``/``failed``),
  error, metrics (JSON: the per-seed summary of ``moesim.train``), timing (wall and CPU seconds
  of the batch that trained the run, with the batch size), worker (host:pid);
* ``trajectories``: key -> compressed ``.npz`` of that run's history and snapshots;
* ``sweep_runs``: which sweep asked for which run; ``sweep_log``: one row per sweep invocation
  (a row left open by a killed sweep is closed, marked interrupted, when that sweep next starts).

The file is checked when opened, before any work: a missing folder is created (or the path named
as impossible), a 0-byte file or a non-SQLite file is refused, and a store opened for writing must
be writable with its folder (SQLite's WAL files live beside it). ``readonly=True`` opens a store
for reading only, also in a read-only folder.

Only the standard library, numpy and (for ``dataframe``) pandas are needed.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import io
import json
import os
import sqlite3
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import Config, field_names, field_types

SCHEMA_VERSION = 1
FORMAT = "moesim-run-store"
#: ``PRAGMA application_id``: the bytes "moes", so ``file(1)`` and we can tell a store at a glance.
APPLICATION_ID = 0x6D6F6573
STATUSES = ("done", "failed")

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (
    key TEXT PRIMARY KEY,
    config_hash TEXT NOT NULL,
    seed INTEGER NOT NULL,
    moesim_version TEXT NOT NULL,
    config TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('done', 'failed')),
    error TEXT,
    metrics TEXT NOT NULL,
    batch_size INTEGER NOT NULL,
    batch_wall_time_s REAL,
    batch_cpu_time_s REAL,
    started_at REAL,
    finished_at REAL,
    committed_at REAL NOT NULL,
    worker TEXT
);
CREATE INDEX runs_config_hash ON runs (config_hash);
CREATE TABLE trajectories (key TEXT PRIMARY KEY REFERENCES runs (key) ON DELETE CASCADE, npz BLOB NOT NULL);
CREATE TABLE sweep_runs (
    sweep TEXT NOT NULL,
    key TEXT NOT NULL REFERENCES runs (key) ON DELETE CASCADE,
    PRIMARY KEY (sweep, key)
);
CREATE TABLE sweep_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sweep TEXT NOT NULL,
    spec TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    n_runs INTEGER NOT NULL,
    n_stored_before INTEGER NOT NULL,
    n_computed INTEGER,
    n_failed INTEGER,
    executor TEXT,
    interrupted INTEGER
);
"""

_RUN_COLUMNS = ("key", "config_hash", "seed", "moesim_version", "config", "status", "error", "metrics",
                "batch_size", "batch_wall_time_s", "batch_cpu_time_s", "started_at", "finished_at", "committed_at",
                "worker")


@functools.lru_cache(maxsize=1)
def config_field_types() -> dict[str, type]:
    """``moesim.config.field_types()``, computed once (it resolves type hints on every call)."""
    return field_types()


class StoreError(Exception):
    """The file is not a moesim run store, one of another schema version, or cannot be used."""


class StaleRunsError(StoreError):
    """The store holds runs of the same configs and seeds computed by other code."""


def canonical_config(cfg: Config | dict) -> dict[str, typing.Any]:
    """The config as a dict whose JSON is the same for equal configs.

    Floats are floats (``sigma_p: 1`` and ``1.0`` are one config), ranges are lists of floats.
    """
    d = cfg.to_dict() if isinstance(cfg, Config) else dict(cfg)
    types = config_field_types()
    out = {}
    for name in field_names():
        v = d[name]
        if types[name] is float:
            v = float(v)
        elif types[name] is tuple:
            v = [float(a) for a in v]
        out[name] = v
    return out


def config_hash(cfg: Config | dict) -> str:
    """sha256 of the canonical config JSON (groups the seeds of one grid point)."""
    blob = json.dumps(canonical_config(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


#: The files whose code computes a run's numbers (``code_fingerprint``): every file of the step
#: engines (``moesim/engines/``, a new engine included), the tables, training and its parts.
FINGERPRINT_FILES = ("config.py", "data.py", "model.py", "nonlinearities.py",
                     *sorted(f"engines/{p.name}" for p in (Path(__file__).parent / "engines").iterdir()
                             if p.suffix in (".py", ".c")),
                     "training.py", "noise.py", "optim.py", "stopping.py", "recorder.py", "evaluation.py", "metrics.py")


def _code_text(path: Path) -> bytes:
    """A Python file as its syntax tree without docstrings (comments are never in it); other files as bytes."""
    if path.suffix != ".py":
        return path.read_bytes()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False).encode()


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """16 hex digits of sha256 over ``FINGERPRINT_FILES`` (Python files without docstrings)."""
    root = Path(__file__).parent
    h = hashlib.sha256()
    for name in FINGERPRINT_FILES:
        h.update(name.encode() + b"\0" + _code_text(root / name) + b"\0")
    return h.hexdigest()[:16]


def code_version() -> str:
    """``<moesim version>+code.<code_fingerprint()>``: the code a run was computed by."""
    from . import __version__

    return f"{__version__}+code.{code_fingerprint()}"


def run_key(cfg: Config | dict, seed: int, version: str | None = None) -> str:
    """The store key of one run: sha256 of config JSON + seed + code version (default ``code_version()``)."""
    if version is None:
        version = code_version()
    blob = json.dumps({"config": canonical_config(cfg), "seed": int(seed), "moesim": version},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


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
                from .outputs import os_error_text

                why = os_error_text(self.path.parent, err)
                raise StoreError(f"run store {str(self.path)!r} cannot be created: its folder "
                                 f"{str(self.path.parent)!r} cannot be made ({why})") from None
            if not os.access(self.path.parent, os.W_OK | os.X_OK):
                raise StoreError(f"run store {str(self.path)!r} cannot be created: its folder "
                                 f"{str(self.path.parent)!r} is not writable")
        else:
            self._check_file(readonly)
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
            self._open()
        except BaseException:
            self.conn.close()
            raise

    def _check_file(self, readonly: bool) -> None:
        """An existing path: a non-empty SQLite file, writable with its folder unless ``readonly``."""
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a directory, not a moesim run store (an SQLite file)")
        try:
            with open(self.path, "rb") as f:
                head = f.read(16)
        except OSError as err:
            raise StoreError(f"run store {str(self.path)!r} cannot be read: {err.strerror or err}") from None
        if not head:
            raise StoreError(f"{self.path} is an empty file (0 bytes), not a moesim run store; remove it or "
                             f"name another store")
        if head != b"SQLite format 3\x00":
            raise StoreError(f"{self.path} is not a moesim run store: it is not an SQLite database")
        if not readonly:
            for what, where in (("file", self.path), ("folder", self.path.parent)):
                if not os.access(where, os.W_OK):
                    raise StoreError(f"run store {str(self.path)!r} is read-only (its {what} {str(where)!r} is not "
                                     f"writable); a sweep writes every run into it: make it writable or name "
                                     f"another store")

    def _open(self) -> None:
        c = self.conn
        try:
            tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as err:
            raise StoreError(f"{self.path} is not a moesim run store: it is not an SQLite database ({err})") from None
        if not tables:
            if self.readonly:
                raise StoreError(f"{self.path} is an empty SQLite database, not a moesim run store")
            self._initialize()
        else:
            self._check(tables)
        if not self.readonly:
            c.execute("PRAGMA journal_mode = WAL")
            c.execute("PRAGMA synchronous = FULL")
        c.execute("PRAGMA foreign_keys = ON")

    def _initialize(self) -> None:
        from . import __version__

        c = self.conn
        with _transaction(c):
            tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables:  # another process created the store between our look and our lock
                return self._check(tables)
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    c.execute(statement)
            c.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [
                ("format", FORMAT), ("schema_version", str(SCHEMA_VERSION)),
                ("created_by", f"moesim {__version__}"), ("created_at", repr(time.time()))])
            c.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _check(self, tables: set[str]) -> None:
        c = self.conn
        if "meta" not in tables:
            raise StoreError(f"{self.path} is an SQLite database but not a moesim run store (it has no 'meta' "
                             f"table; its tables are: {', '.join(sorted(tables))})")
        meta = dict(c.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("format") != FORMAT:
            raise StoreError(f"{self.path} is an SQLite database but not a moesim run store "
                             f"(meta format={meta.get('format')!r}, expected {FORMAT!r})")
        try:
            version = int(meta.get("schema_version", ""))
        except ValueError:
            raise StoreError(f"{self.path}: run store with an unreadable schema_version "
                             f"{meta.get('schema_version')!r}") from None
        if version != SCHEMA_VERSION:
            newer = version > SCHEMA_VERSION
            raise StoreError(
                f"{self.path} is a moesim run store of schema version {version} (written by "
                f"{meta.get('created_by', 'an unknown moesim')}), but this moesim reads schema version "
                f"{SCHEMA_VERSION}; " + ("upgrade moesim to read it" if newer else
                                         "use the moesim version that wrote it, or sweep into a new store"))

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
               record.error, json.dumps(_jsonable(record.metrics), sort_keys=True), int(record.batch_size),
               record.batch_wall_time_s, record.batch_cpu_time_s, record.started_at, record.finished_at, time.time(),
               record.worker)
        c = self.conn
        with _transaction(c):
            old = c.execute("SELECT status FROM runs WHERE key = ?", (key,)).fetchone()
            written = old is None or old[0] != "done"
            if written:
                c.execute("DELETE FROM runs WHERE key = ?", (key,))  # a failed attempt; cascades
                c.execute(f"INSERT INTO runs ({', '.join(_RUN_COLUMNS)}) VALUES ({', '.join('?' * len(row))})", row)
                c.execute("INSERT INTO trajectories (key, npz) VALUES (?, ?)", (key, blob))
            if sweep is not None:
                c.execute("INSERT OR IGNORE INTO sweep_runs (sweep, key) VALUES (?, ?)", (sweep, key))
        return written

    def add_to_sweep(self, sweep: str, keys: typing.Iterable[str]) -> None:
        """Record that ``sweep`` asked for the stored runs ``keys``."""
        with _transaction(self.conn):
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
        with _transaction(self.conn):
            self.conn.executemany("DELETE FROM sweep_runs WHERE sweep = ? AND key = ?", [(sweep, k) for k in keys])

    def close_interrupted(self, sweep: str) -> int:
        """Close the ``sweep_log`` rows of ``sweep`` left open by an invocation that was killed
        (SIGKILL, power loss): mark them interrupted, with the runs committed to the sweep since
        they started and the last such commit as their end. Returns how many were closed.

        Called when the sweep starts again; two invocations of one sweep name at once on one
        store are not supported (the second would close the first's row).
        """
        c = self.conn
        with _transaction(c):
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
        with _transaction(self.conn):
            cur = self.conn.execute(
                "INSERT INTO sweep_log (sweep, spec, started_at, n_runs, n_stored_before, executor) "
                "VALUES (?, ?, ?, ?, ?, ?)", (sweep, json.dumps(spec, sort_keys=True), time.time(), n_runs,
                                              n_stored, executor))
            return int(cur.lastrowid)

    def log_finish(self, log_id: int, n_computed: int, n_failed: int, interrupted: bool) -> None:
        with _transaction(self.conn):
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
        q = f"SELECT {', '.join('r.' + c for c in _RUN_COLUMNS)} FROM runs r"
        args: tuple = ()
        if sweep is not None:
            q += " JOIN sweep_runs s ON s.key = r.key WHERE s.sweep = ?"
            args = (sweep,)
        rows = []
        for values in self.conn.execute(q + " ORDER BY r.committed_at, r.key", args):
            row = dict(zip(_RUN_COLUMNS, values))
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
        """All runs (or one sweep's) as a pandas DataFrame, one row per run.

        Columns: every config field (named as in ``Config``), every metric (``test_accuracy``,
        ``dispatch_entropy``, ...; one named like a config field gets the prefix ``metric_``), and
        ``key``, ``config_hash``, ``seed``, ``status``, ``error``,
        ``moesim_version``, ``batch_size``, ``batch_wall_time_s``, ``batch_cpu_time_s``, ``started_at``,
        ``finished_at``, ``committed_at``, ``worker``. Range fields are tuples. ``configs(df)``
        turns the rows back into ``Config`` objects.
        """
        import pandas as pd

        first = ["key", "seed", "status", "error"]
        last = [c for c in _RUN_COLUMNS if c not in first + ["config", "metrics"]]
        rows, metric_names = [], {}
        for r in self.records(sweep):
            cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in r["config"].items()}
            metrics = {(f"metric_{k}" if k in cfg or k in _RUN_COLUMNS else k): v for k, v in r["metrics"].items()}
            metric_names.update(dict.fromkeys(metrics))
            rows.append({**{k: r[k] for k in first + last}, **cfg, **metrics})
        columns = first + field_names() + list(metric_names) + last
        return pd.DataFrame(rows, columns=columns)


def configs(df) -> list[Config]:
    """The ``Config`` of each row of a ``RunStore.dataframe`` (the inverse of storing it)."""
    names = field_names()
    out = []
    for row in df[names].itertuples(index=False):
        d = {}
        for name, v in zip(names, row):
            if isinstance(v, np.generic):
                v = v.item()
            if isinstance(v, (tuple, list, np.ndarray)):
                v = tuple(float(a) for a in v)
            d[name] = v
        out.append(Config(**d).validate())  # as Config.from_dict, without its per-key type lookups
    return out


def load_runs(path: str | os.PathLike, sweep: str | None = None):
    """One call: the runs of the store at ``path`` (optionally of one sweep) as a DataFrame."""
    with RunStore(path, create=False, readonly=True) as store:
        return store.dataframe(sweep)


def _quote(path: Path) -> str:
    from urllib.parse import quote

    return quote(str(path))


class _transaction:
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, value, tb):
        self.conn.execute("COMMIT" if kind is None else "ROLLBACK")


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (np.floating, np.integer, np.bool_)):
        return v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None if np.isnan(v) else v
    return v
