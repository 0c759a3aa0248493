"""The run store's file format: its SQLite schema, and the checks that a file is a store of it.

``open_schema`` runs when a store is opened, before any work: it makes the tables of a new store
(``initialize``) or refuses a database that is not a moesim run store of ``SCHEMA_VERSION``
(``check_schema``); ``check_file`` refuses a path that is not a usable SQLite file first.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

SCHEMA_VERSION = 1
FORMAT = "moesim-run-store"
#: ``PRAGMA application_id``: the bytes "moes", so ``file(1)`` and we can tell a store at a glance.
APPLICATION_ID = 0x6D6F6573
STATUSES = ("done", "failed")

SCHEMA = """
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

RUN_COLUMNS = ("key", "config_hash", "seed", "moesim_version", "config", "status", "error", "metrics",
               "batch_size", "batch_wall_time_s", "batch_cpu_time_s", "started_at", "finished_at", "committed_at",
               "worker")


class StoreError(Exception):
    """The file is not a moesim run store, one of another schema version, or cannot be used."""


class StaleRunsError(StoreError):
    """The store holds runs of the same configs and seeds computed by other code."""


def check_file(path: Path, readonly: bool) -> None:
    """An existing path: a non-empty SQLite file, writable with its folder unless ``readonly``."""
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not a moesim run store (an SQLite file)")
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as err:
        raise StoreError(f"run store {str(path)!r} cannot be read: {err.strerror or err}") from None
    if not head:
        raise StoreError(f"{path} is an empty file (0 bytes), not a moesim run store; remove it or "
                         f"name another store")
    if head != b"SQLite format 3\x00":
        raise StoreError(f"{path} is not a moesim run store: it is not an SQLite database")
    if not readonly:
        for what, where in (("file", path), ("folder", path.parent)):
            if not os.access(where, os.W_OK):
                raise StoreError(f"run store {str(path)!r} is read-only (its {what} {str(where)!r} is not "
                                 f"writable); a sweep writes every run into it: make it writable or name "
                                 f"another store")


def open_schema(conn: sqlite3.Connection, path: Path, readonly: bool) -> None:
    """Make a new store's tables, or check an existing file is a store of this schema; set its pragmas."""
    c = conn
    try:
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as err:
        raise StoreError(f"{path} is not a moesim run store: it is not an SQLite database ({err})") from None
    if not tables:
        if readonly:
            raise StoreError(f"{path} is an empty SQLite database, not a moesim run store")
        initialize(c, path)
    else:
        check_schema(c, path, tables)
    if not readonly:
        c.execute("PRAGMA journal_mode = WAL")
        c.execute("PRAGMA synchronous = FULL")
    c.execute("PRAGMA foreign_keys = ON")


def initialize(conn: sqlite3.Connection, path: Path) -> None:
    """Create the tables and meta rows of an empty database (unless another process just did)."""
    from .. import __version__

    c = conn
    with transaction(c):
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables:  # another process created the store between our look and our lock
            return check_schema(c, path, tables)
        for statement in SCHEMA.split(";"):
            if statement.strip():
                c.execute(statement)
        c.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [
            ("format", FORMAT), ("schema_version", str(SCHEMA_VERSION)),
            ("created_by", f"moesim {__version__}"), ("created_at", repr(time.time()))])
        c.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def check_schema(conn: sqlite3.Connection, path: Path, tables: set[str]) -> None:
    """An existing database with ``tables``: refuse one that is not a run store of ``SCHEMA_VERSION``."""
    c = conn
    if "meta" not in tables:
        raise StoreError(f"{path} is an SQLite database but not a moesim run store (it has no 'meta' "
                         f"table; its tables are: {', '.join(sorted(tables))})")
    meta = dict(c.execute("SELECT key, value FROM meta").fetchall())
    if meta.get("format") != FORMAT:
        raise StoreError(f"{path} is an SQLite database but not a moesim run store "
                         f"(meta format={meta.get('format')!r}, expected {FORMAT!r})")
    try:
        version = int(meta.get("schema_version", ""))
    except ValueError:
        raise StoreError(f"{path}: run store with an unreadable schema_version "
                         f"{meta.get('schema_version')!r}") from None
    if version != SCHEMA_VERSION:
        newer = version > SCHEMA_VERSION
        raise StoreError(
            f"{path} is a moesim run store of schema version {version} (written by "
            f"{meta.get('created_by', 'an unknown moesim')}), but this moesim reads schema version "
            f"{SCHEMA_VERSION}; " + ("upgrade moesim to read it" if newer else
                                     "use the moesim version that wrote it, or sweep into a new store"))


class transaction:
    """``with transaction(conn):`` one ``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on an error)."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, value, tb):
        self.conn.execute("COMMIT" if kind is None else "ROLLBACK")
