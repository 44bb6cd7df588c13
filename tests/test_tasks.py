import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import evonas
from evonas.tasks import TaskError, load_table, load_task, split, table_lookup
from tests.conftest import NB201_TABLE


def spec(name, **extra):
    return {
        "name": name,
        "options": {},
        "split_seed": 0,
        "val_fraction": 0.2,
        "test_fraction": 0.2,
        **extra,
    }


def test_digits_as_images_with_fixed_splits():
    data = load_task(spec("digits"))
    assert data.input_shape == (1, 8, 8)
    assert data.num_classes == 10
    total = len(data.x_train) + len(data.x_val) + len(data.x_test)
    assert total == 1797
    assert data.x_train.min() >= 0 and data.x_train.max() <= 1
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64


def test_splits_are_seeded_and_disjoint():
    x = np.arange(100)[:, None].astype(np.float32)
    y = np.arange(100)
    a = split(x, y, 0.25, seed=1)
    b = split(x, y, 0.25, seed=1)
    c = split(x, y, 0.25, seed=2)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not np.array_equal(a[3], c[3])
    assert len(a[3]) == 25 and not set(a[1]) & set(a[3])


def test_mnist1d_generated_offline_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("EVONAS_CACHE", str(tmp_path))
    data = load_task(spec("mnist1d", split_seed=3))
    assert data.input_shape == (1, 40)
    assert data.num_classes == 10
    assert len(data.x_train) + len(data.x_val) == 4000 and len(data.x_test) == 1000
    assert (tmp_path / "mnist1d.npz").exists()


def test_synthetic_is_small_and_learnable_shape():
    data = load_task(spec("synthetic", options={"samples": 100, "length": 8, "classes": 4}))
    assert data.input_shape == (1, 8)
    assert len(data.x_train) + len(data.x_val) + len(data.x_test) == 100


def test_user_task(tmp_path, monkeypatch):
    (tmp_path / "mytask.py").write_text(
        textwrap.dedent("""
        import numpy as np
        def make(n=30):
            rng = np.random.default_rng(0)
            x = rng.normal(size=(n, 5))
            y = (x[:, 0] > 0).astype(int)
            return {"x_train": x, "y_train": y, "x_val": x[:10], "y_val": y[:10]}
        def broken():
            return [1, 2]
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    data = load_task(spec("mytask:make", options={"n": 40}))
    assert data.input_shape == (5,)
    assert data.num_classes == 2 and data.x_test is None
    with pytest.raises(TaskError, match="must return a mapping"):
        load_task(spec("mytask:broken"))
    with pytest.raises(TaskError, match="has no function 'absent'"):
        load_task(spec("mytask:absent"))
    with pytest.raises(TaskError, match="failed: TypeError"):
        load_task(spec("mytask:make", options={"bogus": 1}))
    sys.modules.pop("mytask", None)


def test_unknown_task_names_the_setting():
    with pytest.raises(TaskError, match="task.name: unknown task 'cifar'"):
        load_task(spec("cifar"))


def test_table_lookup_on_the_packaged_nb201_table():
    options = {"path": str(NB201_TABLE), "fitness": "c10valid_val_12ep",
               "report": ["c10_test_200ep"]}  # fmt: skip
    best = (
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
        "+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    )
    metrics = table_lookup(options, best)
    assert set(metrics) == {"c10valid_val_12ep", "c10_test_200ep"}
    assert len(load_table(options)) == 15625
    with pytest.raises(KeyError, match="is not in the table"):
        table_lookup(options, "|none~0|")
    assert table_lookup({}, best) == {"c10valid_val_12ep": metrics["c10valid_val_12ep"]}
    assert str(NB201_TABLE).startswith(str(Path(evonas.__file__).parent))  # from the package


def test_table_errors_name_the_option(tmp_path):
    with pytest.raises(TaskError, match="task.options.colour: unknown option"):
        table_lookup({"path": "t.csv", "colour": 1}, "x")
    with pytest.raises(TaskError, match="cannot read table"):
        table_lookup({"path": str(tmp_path / "absent.csv")}, "x")
    table = tmp_path / "t.csv"
    table.write_text("arch_str,acc\na,1.0\n")
    with pytest.raises(TaskError, match="no column 'c10valid_val_12ep'"):
        table_lookup({"path": str(table)}, "a")
    assert table_lookup({"path": str(table), "fitness": "acc"}, "a") == {"acc": 1.0}
