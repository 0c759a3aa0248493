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

Modules: ``keys`` (canonical config, run key, code fingerprint and version), ``schema`` (the
tables above and the checks made when a file is opened), ``database`` (``RunStore``, ``RunRecord``),
``frames`` (``load_runs``, ``configs``: the store as a DataFrame and back). Every public name is
importable from ``moesim.store``.

Only the standard library, numpy and (for ``dataframe``) pandas are needed.
"""

from __future__ import annotations

from .keys import (FINGERPRINT_FILES, canonical_config, code_fingerprint, code_version, config_field_types, config_hash,
                   run_key)
from .schema import APPLICATION_ID, FORMAT, SCHEMA_VERSION, STATUSES, StaleRunsError, StoreError
from .database import RunRecord, RunStore, pack_arrays, unpack_arrays
from .frames import configs, dataframe, load_runs

__all__ = ["APPLICATION_ID", "FINGERPRINT_FILES", "FORMAT", "SCHEMA_VERSION", "STATUSES", "RunRecord", "RunStore",
           "StaleRunsError", "StoreError", "canonical_config", "code_fingerprint", "code_version", "config_field_types",
           "config_hash", "configs", "dataframe", "load_runs", "pack_arrays", "run_key", "unpack_arrays"]
