"""The run directory: resolved config, the SQLite journal, plots and weights.

Layout of `runs/<name>/`: `config.yaml` (resolved), `history.sqlite` (tables `individuals`,
`generations`, `meta`, `curves`: one row per uid, epoch and metric of each learning curve, and
`rungs`: the metrics of candidates at the rungs of successive halving, and `supernet`: each
epoch of a gradient search, its derived genome, architecture weights and losses), `plots/`,
`weights/`, `checkpoints/` (training state at a rung, `<uid>-e<epoch>.pt`), `supernet/` (a
gradient search's supernet after its last journaled epoch), `log.txt`. The parent process
is the only writer (an OS lock says so). Columns are `records.COLUMNS` plus one quoted column per
metric, added as metrics first appear.

Commits: every journaled row is committed before the loop next waits for a worker (`flush`), and
at least every `COMMIT_SECONDS` while it does not wait (table lookups in process), so a killed
run loses at most the results of that last fraction of a second, which a resume evaluates again.
WAL with synchronous=NORMAL: a crash of the process never loses a commit nor corrupts the
journal; a power loss may drop the last commits, which a resume simply evaluates again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from evonas.genome import parse_genome
from evonas.records import (
    COLUMNS,
    GenerationRecord,
    Row,
    SupernetEpoch,
    check_metric_name,
    int_list,
)

JOURNAL = "history.sqlite"
LOCK = ".lock"
COMMIT_SECONDS = 0.05

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS individuals ({", ".join(f"{k} {v}" for k, v in COLUMNS.items())});
CREATE TABLE IF NOT EXISTS generations (
    generation INTEGER PRIMARY KEY,
    population TEXT NOT NULL,
    evaluated INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    finished_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS curves (
    uid INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    metric TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (uid, epoch, metric)
);
CREATE TABLE IF NOT EXISTS rungs (
    uid INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    PRIMARY KEY (uid, epoch)
);
CREATE TABLE IF NOT EXISTS supernet (
    epoch INTEGER PRIMARY KEY,
    genome TEXT NOT NULL,
    arch TEXT NOT NULL,
    metrics TEXT NOT NULL,
    device TEXT,
    worker TEXT,
    started_at REAL,
    finished_at REAL
);
"""


class RunDirError(ValueError):
    """A run directory that cannot be used as asked; the message says why."""


class StorageError(RunDirError):
    """The run directory cannot be written any more (a full disk, read-only media)."""


_FULL = (errno.ENOSPC, errno.EDQUOT)


def storage_problem(exc: BaseException) -> str | None:
    """'full' or 'read-only' when `exc` says the disk is full or cannot be written; else None."""
    if isinstance(exc, OSError) and exc.errno in _FULL:
        return "full"
    if isinstance(exc, OSError) and exc.errno == errno.EROFS:
        return "read-only"
    text = str(exc).lower()
    if isinstance(exc, sqlite3.OperationalError):
        if "disk is full" in text:
            return "full"
        if "readonly" in text or "read-only" in text:
            return "read-only"
    return None


def _writes(method: Callable) -> Callable:
    """A Store method that writes: a full disk or read-only media become one StorageError that
    says what happened and how to go on (every committed evaluation stays in the journal)."""

    @functools.wraps(method)
    def guarded(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (OSError, sqlite3.OperationalError) as exc:
            problem = storage_problem(exc)
            if problem is None:
                raise
            with contextlib.suppress(sqlite3.Error):
                self.db.rollback()
            raise StorageError(storage_message(self.run_dir, problem)) from None

    return guarded


def writable(path: Path, flag: str) -> Path:
    """`path` (a file or folder to write), its parent folder made; RunDirError naming `flag` when
    it cannot be written there (read-only media, a full disk, no permission)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(path.parent, os.W_OK):
            read_only = os.statvfs(path.parent).f_flag & os.ST_RDONLY
            code = errno.EROFS if read_only else errno.EACCES
            raise OSError(code, os.strerror(code))
    except OSError as exc:
        raise RunDirError(f"{flag} {path}: cannot write there ({exc.strerror}); give {flag} "
                          "a writable place") from None  # fmt: skip
    return path


def storage_message(run_dir: Path, problem: str) -> str:
    if problem == "full":
        return (f"{run_dir}: the disk is full; the journal keeps every evaluation committed "
                f"so far: free some space, then: evonas resume {run_dir}")  # fmt: skip
    return (f"{run_dir}: cannot write here (read-only); reading commands work, to go on copy "
            "the run somewhere writable and resume the copy")  # fmt: skip


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class Store:
    def __init__(self, run_dir: Path, connection: sqlite3.Connection) -> None:
        self.run_dir = run_dir
        self.db = connection
        self._lock_file = None
        self._columns: dict[str, set[str]] = {}
        self._inserts: dict[tuple[str, tuple[str, ...]], str] = {}
        self._meta: dict[str, Any] = {}  # meta updates written with the next commit
        self._committed = time.monotonic()

    @classmethod
    def create(cls, run_dir: str | Path, config: dict[str, Any]) -> Store:
        """Start a new run directory; refuses one that already holds a journal."""
        run_dir = Path(run_dir)
        if (run_dir / JOURNAL).exists():
            raise RunDirError(
                f"{run_dir}: already holds a run; choose another --name or remove the directory"
            )
        try:
            (run_dir / "plots").mkdir(parents=True, exist_ok=True)
            tmp = run_dir / "config.yaml.tmp"
            tmp.write_text(yaml.safe_dump(config, sort_keys=False))
            tmp.replace(run_dir / "config.yaml")
        except OSError as exc:
            raise RunDirError(
                f"{run_dir}: cannot make the run directory ({exc.strerror})"
            ) from None
        store = cls(run_dir, _connect(run_dir / JOURNAL))
        store.lock()
        store.db.executescript(_SCHEMA)
        store.db.commit()
        return store

    @classmethod
    def open(cls, run_dir: str | Path) -> Store:
        """Open an existing run for writing (resume); takes the run's lock."""
        run_dir = Path(run_dir)
        open_readonly(run_dir).close()  # a damaged journal is refused before it is written to
        if not os.access(run_dir, os.W_OK):  # read-only media (or no permission)
            raise StorageError(storage_message(run_dir, "read-only"))
        try:
            store = cls(run_dir, _connect(run_dir / JOURNAL))
            store.lock()
        except (OSError, sqlite3.OperationalError) as exc:
            problem = storage_problem(exc)
            if problem is None:
                raise
            raise StorageError(storage_message(run_dir, problem)) from None
        store.upgrade()
        return store

    @_writes
    def upgrade(self) -> None:
        """Add the tables and columns a journal from an older evonas lacks."""
        self.db.executescript(_SCHEMA)
        existing = {row[1] for row in self.db.execute("PRAGMA table_info(individuals)")}
        for name, kind in COLUMNS.items():
            if name not in existing:
                self.db.execute(f"ALTER TABLE individuals ADD COLUMN {name} {kind.split()[0]}")
        self.db.commit()

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
        try:
            self.flush()
        finally:  # even when the disk is full: the connection and the lock are let go
            self.db.close()
            if self._lock_file is not None:
                self._lock_file.close()  # releases the lock
                self._lock_file = None

    # --- writing ------------------------------------------------------------------------------

    @_writes
    def flush(self) -> None:
        """Commit everything journaled so far."""
        if self._meta:
            self._set_meta(self._meta)
            self._meta = {}
        self.db.commit()
        self._committed = time.monotonic()

    def _commit_if_due(self) -> None:
        if time.monotonic() - self._committed >= COMMIT_SECONDS:
            self.flush()

    def note_end(self, state: str, reason: str) -> None:
        """Record how a session ended, when the disk still lets it (a run stopped by a full
        disk keeps the state it last committed)."""
        with contextlib.suppress(StorageError):
            self.set_meta({"state": state, "reason": reason})

    @_writes
    def set_meta(self, values: dict[str, Any]) -> None:
        self._meta.update(values)
        self.flush()

    def _set_meta(self, values: dict[str, Any]) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
            [(k, json.dumps(v)) for k, v in values.items()],
        )

    @_writes
    def record(self, row: Row) -> None:
        """Journal one finished evaluation (committed as the module docstring says). One that
        failed because the disk is full is not the genome's failure: the run stops instead, and
        the evaluation runs again on resume."""
        if f"[Errno {errno.ENOSPC}]" in str(row.values.get("error") or ""):
            raise StorageError(storage_message(self.run_dir, "full"))
        self._ensure_columns("individuals", row.metrics)
        self._insert("individuals", {**row.values, **row.metrics})
        self._commit_if_due()

    @_writes
    def record_generation(self, record: GenerationRecord, meta: dict[str, Any]) -> None:
        """Journal a finished generation (and `meta` updates, written with the commit)."""
        self._meta.update(meta)
        self._ensure_columns("generations", record.stats)
        values = {
            "generation": record.generation,
            "population": int_list(record.population),
            "evaluated": record.evaluated,
            "failed": record.failed,
            "finished_at": record.finished_at,
            **record.stats,
        }
        self._insert("generations", values)
        self._commit_if_due()

    def check_replay(
        self, generation: int, replayed: tuple[int, ...], journaled: list[int]
    ) -> None:
        """A replayed generation must select what the journal says it selected."""
        if tuple(journaled) != tuple(replayed):
            raise RunDirError(
                f"{self.run_dir}: the replay of generation {generation} disagrees with the "
                "journal; the run was made by another version of evonas or its task changed"
            )

    def _insert(self, table: str, values: dict[str, Any]) -> None:
        key = (table, tuple(values))
        sql = self._inserts.get(key)
        if sql is None:
            columns = ", ".join(quote(k) for k in values)
            sql = f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' * len(values))})"
            self._inserts[key] = sql
        self.db.execute(sql, tuple(values.values()))

    def metric_clash(self, metrics: dict[str, Any]) -> str | None:
        """Why these metric names cannot be columns of the journal: two that differ only in
        case (SQLite's column names ignore case), here or with a column it already has."""
        known = self._columns.get("individuals") or {
            row[1] for row in self.db.execute("PRAGMA table_info(individuals)")
        }
        if known.issuperset(metrics):  # names already there, exactly as spelled
            return None
        folded = {name.lower(): name for name in known}
        for name in metrics:
            other = folded.setdefault(name.lower(), name)
            if other != name:
                return f"metric {name!r} differs only in case from {other!r}; rename one"
        return None

    def _ensure_columns(self, table: str, names: dict[str, Any]) -> None:
        known = self._columns.get(table)
        if known is not None and known.issuperset(names):
            return
        existing = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
        self._columns[table] = existing | set(names)
        for name in names:
            if name not in existing:
                if table == "individuals":
                    check_metric_name(name)
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {quote(name)} REAL")

    @_writes
    def record_curve(self, uid: int, curve: tuple[dict[str, float], ...]) -> None:
        """Journal learning-curve points (`{"epoch": e, metric: value, ...}`); a point written
        again (an evaluation rerun after a kill) replaces the old one."""
        rows = [(uid, int(point["epoch"]), name, float(value))
                for point in curve for name, value in point.items() if name != "epoch"]  # fmt: skip
        self.db.executemany("INSERT OR REPLACE INTO curves VALUES (?, ?, ?, ?)", rows)
        self._commit_if_due()

    @_writes
    def record_rung(self, uid: int, epoch: int, metrics: dict[str, float]) -> None:
        """Journal a candidate's metrics at a rung of successive halving."""
        self.db.execute("INSERT OR REPLACE INTO rungs VALUES (?, ?, ?)",
                        (uid, epoch, json.dumps(metrics)))  # fmt: skip
        self._commit_if_due()

    @_writes
    def record_supernet_epoch(self, epoch: SupernetEpoch) -> None:
        """Journal one epoch of a gradient search (committed at once: there are few)."""
        self.db.execute(
            "INSERT OR REPLACE INTO supernet VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (epoch.epoch, epoch.genome.to_json(), json.dumps(epoch.arch), json.dumps(epoch.metrics),
             epoch.device, epoch.worker, epoch.started_at, epoch.finished_at),
        )  # fmt: skip
        self.flush()

    def journaled_supernet(self) -> list[SupernetEpoch]:
        """The journaled epochs of a gradient search, in order."""
        return read_supernet(self.db)

    def supernet_path(self, epoch: int) -> Path:
        return self.run_dir / "supernet" / f"epoch-{epoch:03d}.pt"

    def checkpoint_path(self, uid: int, epoch: int) -> Path:
        return self.run_dir / "checkpoints" / f"{uid}-e{epoch}.pt"

    def drop_checkpoints(self, uid: int, below: int | None = None) -> None:
        """Delete `uid`'s checkpoints (only those before epoch `below`, when given)."""
        for path in self.run_dir.glob(f"checkpoints/{uid}-e*.pt"):
            epoch = int(path.stem.rpartition("-e")[2])
            if below is None or epoch < below:
                path.unlink(missing_ok=True)

    @_writes
    def drop_weights(self, keep: set[int]) -> int:
        """Retention: delete weight files (and checkpoints) of individuals not in `keep`;
        returns how many weight files."""
        rows = self.db.execute("SELECT uid, weights FROM individuals WHERE weights IS NOT NULL")
        dropped = [(uid, path) for uid, path in rows if uid not in keep]
        for uid, path in dropped:
            (self.run_dir / path).unlink(missing_ok=True)
            self.db.execute("UPDATE individuals SET weights = NULL WHERE uid = ?", (uid,))
        for path in self.run_dir.glob("checkpoints/*-e*.pt"):
            if int(path.stem.partition("-e")[0]) not in keep:
                path.unlink(missing_ok=True)
        self.flush()
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

    def journaled_rungs(self) -> dict[int, dict[int, dict[str, float]]]:
        """uid -> rung epoch -> the metrics it had there."""
        rungs: dict[int, dict[int, dict[str, float]]] = {}
        for uid, epoch, metrics in self.db.execute("SELECT uid, epoch, metrics FROM rungs"):
            rungs.setdefault(uid, {})[epoch] = json_cell(metrics, f"rungs of uid {uid}")
        return rungs

    def journaled_curves(self) -> dict[int, list[dict[str, float]]]:
        """uid -> its learning curve, one point per epoch (`{"epoch": e, metric: value}`)."""
        points: dict[tuple[int, int], dict[str, float]] = {}
        query = "SELECT uid, epoch, metric, value FROM curves ORDER BY uid, epoch"
        for uid, epoch, name, value in self.db.execute(query):
            points.setdefault((uid, epoch), {"epoch": float(epoch)})[name] = value
        curves: dict[int, list[dict[str, float]]] = {}
        for (uid, _), point in points.items():
            curves.setdefault(uid, []).append(point)
        return curves

    def journaled_generations(self) -> dict[int, list[int]]:
        rows = self.db.execute("SELECT generation, population FROM generations")
        return {generation: json.loads(population) for generation, population in rows}

    def individuals(self) -> pd.DataFrame:
        return read_table(self.db, "individuals", "uid")

    def generations(self) -> pd.DataFrame:
        return read_table(self.db, "generations", "generation")


def read_supernet(db: sqlite3.Connection) -> list[SupernetEpoch]:
    """A journal's supernet epochs (none for a run without a gradient search)."""
    try:
        rows = db.execute("SELECT * FROM supernet ORDER BY epoch").fetchall()
    except sqlite3.OperationalError:  # a journal from before gradient search
        return []
    epochs = []
    for epoch, genome, arch, metrics, device, worker, started, finished in rows:
        where = f"supernet epoch {epoch}"
        epochs.append(SupernetEpoch(
            epoch, parse_genome(json_cell(genome, where), where=where),
            tuple(tuple(row) for row in json_cell(arch, where)), json_cell(metrics, where),
            device, worker, started, finished))  # fmt: skip
    return epochs


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def read_meta(db: sqlite3.Connection) -> dict[str, Any]:
    meta = {}
    for key, value in db.execute("SELECT key, value FROM meta"):
        try:
            meta[key] = json.loads(value)
        except (TypeError, ValueError):
            raise sqlite3.DatabaseError(f"meta value {key!r} is not JSON") from None
    return meta


# Larger than any genome evonas takes (10,000 genes): refused before it is parsed.
MAX_GENOME_JSON = 8 * 2**20


def json_cell(text: Any, what: str) -> Any:
    """A JSON cell of the journal; RunDirError (naming `what`) when it was tampered with."""
    if not isinstance(text, str) or len(text) > MAX_GENOME_JSON:
        size = len(text) if isinstance(text, str) else type(text).__name__
        raise RunDirError(f"{what}: not a journal value evonas wrote ({size})")
    try:
        return json.loads(text)
    except ValueError:
        raise RunDirError(f"{what}: not valid JSON") from None


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """A run's config.yaml as plain settings (safe loader); RunDirError says what is wrong."""
    import yaml

    path = Path(run_dir) / "config.yaml"
    try:
        settings = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise RunDirError(f"{run_dir}: no config.yaml here; is this a run directory?") from None
    except OSError as exc:
        raise RunDirError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise RunDirError(f"{path}: not a text file (UTF-8 YAML expected)") from None
    except yaml.YAMLError as exc:
        first = " ".join(str(exc).split())[:200]
        raise RunDirError(
            f"{path}: not valid YAML (or a tag the safe loader refuses: {first})"
        ) from None
    if not isinstance(settings, dict):
        raise RunDirError(f"{path}: expected a mapping of settings, as evonas writes")
    return settings


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
    """Open a run's journal read-only: safe while its writer is still running, and, when none
    is and nothing waits in the write-ahead log, without creating a file (so reading leaves the
    run byte-identical, and works on read-only media)."""
    path = Path(run_dir) / JOURNAL
    if not path.exists():
        raise RunDirError(f"{run_dir}: no {JOURNAL} here; is this a run directory?")
    wal = path.with_name(path.name + "-wal")
    settled = not is_locked(run_dir) and not (wal.exists() and wal.stat().st_size > 0)
    mode = "immutable=1" if settled else "mode=ro"
    db = None
    try:
        db = sqlite3.connect(f"file:{quote_path(path)}?{mode}", uri=True, timeout=30)
        db.execute("SELECT key, value FROM meta LIMIT 1").fetchall()
    except sqlite3.DatabaseError as exc:
        if db is not None:
            db.close()
        raise RunDirError(f"{path}: not an evonas journal ({exc})") from None
    return db


def quote_path(path: Path) -> str:
    """A path as the file: URI SQLite reads (so '?' and '#' in names stay part of the name)."""
    from urllib.parse import quote as url_quote

    return url_quote(str(path.resolve()))
