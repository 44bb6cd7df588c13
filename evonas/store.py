"""The run directory: resolved config, the SQLite journal and plots.

Layout of `runs/<name>/`: `config.yaml` (resolved), `history.sqlite` (tables `individuals`,
`generations`, `meta`), `plots/`. The parent process is the only writer; every finished evaluation
is committed as soon as it returns. Metric columns are added as metrics first appear.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

JOURNAL = "history.sqlite"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS individuals (
    uid INTEGER PRIMARY KEY,
    generation INTEGER NOT NULL,
    genome TEXT NOT NULL,
    arch_key TEXT NOT NULL,
    parents TEXT NOT NULL,
    operator TEXT NOT NULL,
    origin TEXT,
    status TEXT NOT NULL,
    error TEXT,
    seed INTEGER NOT NULL,
    cached_from INTEGER,
    inherited_from TEXT,
    distilled_from TEXT,
    device TEXT,
    gpu TEXT,
    weights TEXT,
    worker TEXT,
    started_at REAL,
    finished_at REAL,
    eval_seconds REAL
);
CREATE TABLE IF NOT EXISTS generations (
    generation INTEGER PRIMARY KEY,
    population TEXT NOT NULL,
    evaluated INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    finished_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class RunDirError(ValueError):
    """A run directory that cannot be used as asked; the message says why."""


class UnsafeFileError(ValueError):
    """A weights file that is not plain tensors and containers; refused, never unpickled."""


LOCK = ".lock"
LATER_COLUMNS = {"inherited_from": "TEXT", "distilled_from": "TEXT", "device": "TEXT",
                 "gpu": "TEXT"}  # fmt: skip


class Store:
    def __init__(self, run_dir: Path, connection: sqlite3.Connection) -> None:
        self.run_dir = run_dir
        self.db = connection
        self._lock_file = None
        self._columns: dict[str, set[str]] = {}

    @classmethod
    def create(cls, run_dir: str | Path, config: dict[str, Any]) -> Store:
        """Start a new run directory; refuses one that already holds a journal."""
        run_dir = Path(run_dir)
        if (run_dir / JOURNAL).exists():
            raise RunDirError(
                f"{run_dir}: already holds a run; choose another --name or remove the directory"
            )
        (run_dir / "plots").mkdir(parents=True, exist_ok=True)
        tmp = run_dir / "config.yaml.tmp"
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
        tmp.replace(run_dir / "config.yaml")
        store = cls(run_dir, _connect(run_dir / JOURNAL))
        store.lock()
        store.db.executescript(_SCHEMA)
        store.db.commit()
        return store

    @classmethod
    def open(cls, run_dir: str | Path) -> Store:
        """Open an existing run for writing (resume); takes the run's lock."""
        run_dir = Path(run_dir)
        if not (run_dir / JOURNAL).exists():
            raise RunDirError(f"{run_dir}: no {JOURNAL} here; is this a run directory?")
        store = cls(run_dir, _connect(run_dir / JOURNAL))
        store.lock()
        store.db.executescript(_SCHEMA)
        columns = {row[1] for row in store.db.execute("PRAGMA table_info(individuals)")}
        for name, kind in LATER_COLUMNS.items():  # a journal from before these columns existed
            if name not in columns:
                store.db.execute(f"ALTER TABLE individuals ADD COLUMN {name} {kind}")
        store.db.commit()
        return store

    def lock(self) -> None:
        """One writer per run: an OS lock that dies with its process (no stale locks)."""
        handle = open(self.run_dir / LOCK, "a+")  # noqa: SIM115 - held for the store's lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            self.db.close()
            raise RunDirError(
                f"{self.run_dir}: in use by another evonas process (pid {holder}); "
                "wait for it or stop it first"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock_file = handle

    def close(self) -> None:
        self.db.close()
        if self._lock_file is not None:
            self._lock_file.close()  # releases the lock
            self._lock_file = None

    # --- writing ------------------------------------------------------------------------------

    def set_meta(self, values: dict[str, Any]) -> None:
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                [(k, json.dumps(v)) for k, v in values.items()],
            )

    def _ensure_columns(self, table: str, names: list[str]) -> None:
        known = self._columns.setdefault(table, set())
        if known.issuperset(names):
            return
        existing = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
        known.update(existing, names)
        for name in names:
            if name not in existing:
                if not _IDENTIFIER.match(name):
                    raise ValueError(f"metric name {name!r} is not a valid column name")
                self.db.execute(f'ALTER TABLE {table} ADD COLUMN "{name}" REAL')

    def record_individual(self, row: dict[str, Any], metrics: dict[str, float]) -> None:
        """Journal one finished evaluation (committed before returning)."""
        safe_metrics = {k: v for k, v in metrics.items() if _IDENTIFIER.match(k)}
        with self.db:
            self._ensure_columns("individuals", list(safe_metrics))
            values = {**row, **safe_metrics}
            columns = ", ".join(f'"{k}"' for k in values)
            marks = ", ".join("?" for _ in values)
            self.db.execute(
                f"INSERT INTO individuals ({columns}) VALUES ({marks})", list(values.values())
            )

    def record_generation(
        self,
        generation: int,
        population: list[int],
        evaluated: int,
        failed: int,
        stats: dict[str, float],
        meta: dict[str, Any] | None = None,
    ) -> None:
        """Journal a finished generation (and `meta` updates) in one transaction."""
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                [(k, json.dumps(v)) for k, v in (meta or {}).items()],
            )
            self._ensure_columns("generations", list(stats))
            values = {
                "generation": generation,
                "population": json.dumps(population),
                "evaluated": evaluated,
                "failed": failed,
                "finished_at": time.time(),
                **stats,
            }
            columns = ", ".join(f'"{k}"' for k in values)
            marks = ", ".join("?" for _ in values)
            self.db.execute(
                f"INSERT INTO generations ({columns}) VALUES ({marks})", list(values.values())
            )

    def drop_weights(self, keep: set[int]) -> int:
        """Retention: delete weight files of individuals not in `keep`; returns how many."""
        rows = self.db.execute("SELECT uid, weights FROM individuals WHERE weights IS NOT NULL")
        dropped = [(uid, path) for uid, path in rows if uid not in keep]
        with self.db:
            for uid, path in dropped:
                (self.run_dir / path).unlink(missing_ok=True)
                self.db.execute("UPDATE individuals SET weights = NULL WHERE uid = ?", (uid,))
        return len(dropped)

    # --- reading ------------------------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        return read_meta(self.db)

    def journaled_rows(self) -> dict[int, dict[str, Any]]:
        """Every journaled evaluation by uid, as a dict of its columns (NULLs dropped)."""
        cursor = self.db.execute("SELECT * FROM individuals")
        names = [d[0] for d in cursor.description]
        rows = {}
        for values in cursor:
            row = {k: v for k, v in zip(names, values) if v is not None}
            rows[row["uid"]] = row
        return rows

    def journaled_generations(self) -> dict[int, list[int]]:
        rows = self.db.execute("SELECT generation, population FROM generations")
        return {generation: json.loads(population) for generation, population in rows}

    def individuals(self) -> pd.DataFrame:
        return read_table(self.db, "individuals", "uid")

    def generations(self) -> pd.DataFrame:
        return read_table(self.db, "generations", "generation")


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    # WAL + NORMAL: a crash of the process never loses a commit and the journal never corrupts;
    # a power loss may drop the last few commits, which a resume simply evaluates again.
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def read_meta(db: sqlite3.Connection) -> dict[str, Any]:
    return {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}


def is_locked(run_dir: str | Path) -> bool:
    """True while some process holds the run's writer lock."""
    path = Path(run_dir) / LOCK
    if not path.exists():
        return False
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def read_table(db: sqlite3.Connection, table: str, order_by: str) -> pd.DataFrame:
    return pd.read_sql_query(f"SELECT * FROM {table} ORDER BY {order_by}", db)


def open_readonly(run_dir: str | Path) -> sqlite3.Connection:
    """Open a run's journal read-only (safe while its writer is still running)."""
    path = Path(run_dir) / JOURNAL
    if not path.exists():
        raise RunDirError(f"{run_dir}: no {JOURNAL} here; is this a run directory?")
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
