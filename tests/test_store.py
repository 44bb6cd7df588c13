import json
import sqlite3

import pytest

from evonas.records import GenerationRecord, MetricNameError, Row
from evonas.store import JOURNAL, RunDirError, Store, open_readonly


def row(uid, metrics=None, **extra):
    values = {"uid": uid, "generation": 0, "genome": "{}", "arch_key": "k", "parents": "[]",
              "operator": "sample", "status": "ok", "error": None, "seed": 1, **extra}  # fmt: skip
    return Row(values, metrics or {})


def test_create_writes_config_and_schema(tmp_path):
    store = Store.create(tmp_path / "run", {"seed": 3})
    assert (tmp_path / "run" / "config.yaml").read_text() == "seed: 3\n"
    assert (tmp_path / "run" / "plots").is_dir()
    mode = store.db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    store.close()


def test_refuses_an_existing_run(tmp_path):
    Store.create(tmp_path / "run", {}).close()
    before = (tmp_path / "run" / JOURNAL).read_bytes()
    with pytest.raises(RunDirError, match="already holds a run"):
        Store.create(tmp_path / "run", {"seed": 9})
    assert (tmp_path / "run" / JOURNAL).read_bytes() == before
    assert (tmp_path / "run" / "config.yaml").read_text() == "{}\n"


def test_metric_columns_appear_as_metrics_do(tmp_path):
    store = Store.create(tmp_path / "run", {})
    store.record(row(0, {"val_accuracy": 0.5}))
    store.record(row(1, status="failed", error="boom"))
    store.record(row(2, {"val_accuracy": 0.7, "latency": 3.0, "val-acc": 0.1, "top 1": 2.0}))
    df = store.individuals()
    assert list(df["uid"]) == [0, 1, 2]
    assert df["latency"].isna().tolist() == [True, True, False]
    assert df.loc[2, "val-acc"] == 0.1 and df.loc[2, "top 1"] == 2.0  # quoted columns
    assert df.loc[1, "error"] == "boom"
    store.record_generation(GenerationRecord(0, (0, 2), 3, 1, {"best_val-acc": 0.7}), {})
    generations = store.generations()
    assert json.loads(generations.loc[0, "population"]) == [0, 2]
    assert generations.loc[0, "best_val-acc"] == 0.7
    with pytest.raises(MetricNameError, match="journal column of its own"):
        store.record(row(3, {"STATUS": 1.0}))
    store.close()


def test_results_are_readable_by_another_process_once_flushed(tmp_path):
    store = Store.create(tmp_path / "run", {})
    store.record(row(0, {"val_accuracy": 0.5}))
    store.flush()  # the loop flushes before it waits for a worker
    reader = open_readonly(tmp_path / "run")
    assert reader.execute("SELECT count(*) FROM individuals").fetchone()[0] == 1
    with pytest.raises(sqlite3.OperationalError):
        reader.execute("DELETE FROM individuals")
    reader.close()
    store.close()


def test_duplicate_uid_is_refused(tmp_path):
    store = Store.create(tmp_path / "run", {})
    store.record(row(0))
    with pytest.raises(sqlite3.IntegrityError):
        store.record(row(0))
    assert len(store.individuals()) == 1
    store.close()


def test_open_readonly_names_a_missing_journal(tmp_path):
    with pytest.raises(RunDirError, match="no history.sqlite here"):
        open_readonly(tmp_path)
