import shutil
import subprocess
import sys

import pytest

from evonas.config import resolve
from evonas.devices import gpu_ids
from evonas.launch import run_search
from tests.conftest import FAULTS, TINY

FAKE = {**TINY, "training": {"evaluator": f"{FAULTS}:visible_gpu"},
        "search": {"population": 6, "generations": 2,
                   "objectives": [{"name": "val_accuracy", "goal": "max"}]}}  # fmt: skip


def test_gpu_ids_from_the_setting_and_the_environment(monkeypatch):
    assert gpu_ids("cpu") == []
    assert gpu_ids("0,2") == ["0", "2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,3")
    assert gpu_ids("auto") == ["1", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-8f2a,MIG-1c3d")
    assert gpu_ids("auto") == ["GPU-8f2a", "MIG-1c3d"]  # passed on as given
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpu_ids("auto") == []
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert gpu_ids("auto") == []  # no GPU tooling: CPU


def leaser(folder):
    """A process that leases GPU 0 of `folder`, prints what it got and holds it until killed."""
    code = (f"from evonas.devices import lease; print(lease(['0'], 1, {str(folder)!r}),"
            " flush=True); import time; time.sleep(60)")  # fmt: skip
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    return process, process.stdout.readline().strip()


def test_a_lease_is_exclusive_and_freed_when_its_holder_dies(tmp_path):
    first, got = leaser(tmp_path)
    assert got == "0"
    second, got = leaser(tmp_path)
    assert got == "None"  # the only slot is taken: CPU
    first.kill()  # dies without releasing anything itself
    first.wait()
    third, got = leaser(tmp_path)
    assert got == "0"
    for process in (second, third):
        process.kill()
        process.wait()


def search(tmp_path, name, evaluator="visible_gpu", **parallel):
    training = {"evaluator": f"{FAULTS}:{evaluator}"}
    config = resolve(base={**FAKE, "training": training,
                           "parallel": {"backend": "loky", **parallel}})  # fmt: skip
    return run_search(config, tmp_path / name, log=lambda line: None).individuals


@pytest.fixture
def leases(tmp_path, monkeypatch):
    monkeypatch.setenv("EVONAS_LEASE_DIR", str(tmp_path / "leases"))


@pytest.mark.slow  # worker processes
def test_each_worker_leases_its_own_fake_gpu_and_the_journal_records_it(tmp_path, leases):
    people = search(tmp_path, "gpus", devices="0,1", n_jobs=2)
    assert set(people["gpu"]) <= {"0", "1"} and people["gpu"].notna().all()
    assert (people["visible"] == people["gpu"].astype(float)).all()  # set in the worker
    assert people.groupby("worker")["gpu"].nunique().eq(1).all()  # a worker keeps its GPU
    assert people.groupby("gpu")["worker"].nunique().eq(1).all()  # never two workers on one
    assert set(people["device"]) == {"cpu"}  # no CUDA here: the fake GPUs run on the CPU


@pytest.mark.slow  # worker processes
def test_more_workers_than_slots_fall_back_to_the_cpu(tmp_path, leases):
    people = search(tmp_path, "one-gpu", devices="0", n_jobs=2)
    on_gpu = people[people["gpu"].notna()]
    assert not on_gpu.empty and on_gpu["worker"].nunique() == 1
    assert (people.loc[people["gpu"].isna(), "visible"] == -1).all()


@pytest.mark.slow  # worker processes
def test_a_dying_worker_gives_its_gpu_back(tmp_path, leases):
    people = search(tmp_path, "crash", "visible_gpu_or_exit", devices="0,1", n_jobs=2,
                    crash_retries=0)  # fmt: skip
    assert (people["status"] == "crashed").any()
    ok = people[people["status"] == "ok"]
    assert ok["gpu"].notna().all()  # replacement workers leased the freed slot
    assert ok["worker"].nunique() > 2


@pytest.mark.slow  # worker processes
def test_same_results_with_and_without_gpus(tmp_path, leases):
    drop = ["worker", "started_at", "finished_at", "eval_seconds", "gpu", "visible"]
    cpu = search(tmp_path, "cpu", devices="cpu", n_jobs=2).drop(columns=drop)
    gpus = search(tmp_path, "gpus", devices="0,1", n_jobs=2).drop(columns=drop)
    assert cpu.equals(gpus)
