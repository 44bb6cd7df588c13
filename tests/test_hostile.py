"""Hostile conditions: reading never writes, finished runs stay as they are, and the other
promises of the reliability pass that need no subprocess (the corpus of bad inputs is
tests/test_bad_inputs.py, in the slow suite)."""

import hashlib
from pathlib import Path

import pytest

from evonas.analysis import load_run
from tests.conftest import cli, tiny_config_yaml


def snapshot(folder: Path) -> dict[str, str]:
    """Every file of a folder and its sha256."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    (folder / "tiny.yaml").write_text(tiny_config_yaml())
    result = cli("search", "--config", "tiny.yaml", "--name", "done", "--runs-dir", "runs",
                 cwd=folder)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return folder / "runs" / "done"


def test_reading_or_resuming_a_finished_run_leaves_it_byte_identical(finished, tmp_path):
    before = snapshot(finished)
    resumed = cli("resume", str(finished), cwd=tmp_path)
    assert resumed.returncode == 0 and "nothing to do" in resumed.stdout
    assert cli("status", str(finished), cwd=tmp_path).returncode == 0
    exported = cli("export", str(finished), "--best", "--out", str(tmp_path / "m.pt"), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert len(load_run(finished).individuals) > 0
    assert snapshot(finished) == before  # no -wal or -shm file appears, nothing is rewritten


def test_a_finished_run_given_more_generations_goes_on(finished, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    result = cli("resume", str(copy), "--generations", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert load_run(copy).individuals["generation"].max() == 3


def test_the_gpu_lease_folder_is_private_and_lock_files_never_follow_links(tmp_path):
    import os

    from evonas.devices import LeaseDirError, lease, private_folder

    folder = private_folder(tmp_path / "leases")
    assert folder.stat().st_mode & 0o777 == 0o700
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(LeaseDirError, match="symlink"):
        private_folder(tmp_path / "link")
    open_to_all = tmp_path / "shared"
    open_to_all.mkdir()
    open_to_all.chmod(0o777)
    with pytest.raises(LeaseDirError, match="others may write"):
        private_folder(open_to_all)
    planted = tmp_path / "victim.txt"
    planted.write_text("keep me")
    os.symlink(planted, folder / "gpu7-0.lock")  # another user's trap
    with pytest.raises(OSError):
        lease(["7"], 1, str(folder))
    assert planted.read_text() == "keep me"


def test_an_unsafe_lease_folder_is_a_one_line_error_before_the_run(tmp_path, monkeypatch):
    (tmp_path / "tiny.yaml").write_text(tiny_config_yaml())
    (tmp_path / "open").mkdir()
    (tmp_path / "open").chmod(0o777)
    monkeypatch.setenv("EVONAS_LEASE_DIR", str(tmp_path / "open"))
    result = cli("search", "--config", "tiny.yaml", "--name", "x", "--runs-dir", "runs",
                 "--set", "parallel.devices=0", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2 and "others may write" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "runs" / "x").exists()


HUNGRY = '''
def evaluate(genome, seed, training):
    """Every other evaluation eats memory, 64 MB at a time, until there is none left."""
    if seed % 2:
        hoard = []
        while True:
            hoard.append(bytearray(64 * 2**20))
    return {"val_accuracy": (seed % 97) / 97, "params": 1000.0 + seed % 89}
'''


@pytest.mark.slow
def test_an_evaluator_exhausting_memory_fails_its_evaluations_not_the_run(tmp_path):
    """Under an address-space limit (ulimit -v) in every process, the evaluations that exhaust
    memory are journaled as oom and the run finishes."""
    import resource
    import subprocess
    import sys

    (tmp_path / "hungry.py").write_text(HUNGRY)
    (tmp_path / "tiny.yaml").write_text(tiny_config_yaml())
    limit = 3 * 2**30  # numpy, pandas and the loop fit; a hoard of memory does not

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    command = [sys.executable, "-m", "evonas", "search", "--config", "tiny.yaml", "--name", "m",
               "--runs-dir", "runs", "--n-jobs", "2",
               "--set", f"training.evaluator={tmp_path / 'hungry.py'}:evaluate"]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          preexec_fn=limited)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    people = load_run(tmp_path / "runs" / "m").individuals
    assert set(people["status"]) == {"ok", "oom"}, people[["status", "error"]]
    assert (people["status"] == "oom").sum() >= 2


def test_genomes_beyond_the_size_limits_are_refused_before_anything_is_built(tmp_path):
    import json

    from evonas.builder import build
    from evonas.genome import GenomeError, load_genome, parse_genome

    many = {"layers": [{"id": i + 1, "op": "dropout", "rate": 0.1} for i in range(10_001)]}
    (tmp_path / "many.json").write_text(json.dumps(many))
    with pytest.raises(GenomeError, match="10001 genes; evonas takes at most 10000"):
        load_genome(tmp_path / "many.json")
    wide = {"layers": [{"id": 1, "op": "dense", "units": 10**9, "activation": "relu"}]}
    with pytest.raises(GenomeError, match=r"layers\[0\].units: must be <= 65536"):
        parse_genome(wide)
    conv = {"op": "conv", "width": 65_536, "kernel": 7, "stride": 1, "activation": "relu",
            "batch_norm": False}  # fmt: skip
    huge = parse_genome({"layers": [{"id": i, **conv} for i in (1, 2, 3)]})
    with pytest.raises(GenomeError, match="parameters; evonas builds at most"):
        build(huge, (1, 64), 10)  # 420 billion parameters: refused, not allocated


def test_a_signal_while_generation_zero_is_sampled_stops_before_anything_runs(tmp_path):
    """A huge population takes long to sample; a SIGTERM then must not wait for it."""
    import signal

    from evonas.config import resolve
    from evonas.launch import run_to_end, start_search
    from tests.test_evolve import TINY

    config = resolve(sets=[*TINY, "search.population=50000"])
    evolution = start_search(config, tmp_path / "huge", log=None)
    space, sampled = evolution.variation.space, []

    def sample(rng):  # the signal arrives while the 1000th genome is drawn
        sampled.append(1)
        if len(sampled) == 1000:
            evolution.request_stop(signal.SIGTERM)
        return type(space).sample(space, rng)

    object.__setattr__(space, "sample", sample)
    result = run_to_end(evolution)
    assert result.state == "interrupted" and len(sampled) == 1000
    assert len(load_run(tmp_path / "huge").individuals) == 0


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of a few hundred KB (a disk that fills up), where this process may mount one."""
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(disk)],
                          capture_output=True, text=True)  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({made.stderr.strip() or 'not root'})")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _remount(disk, options):
    import subprocess

    subprocess.run(["mount", "-o", f"remount,{options}", str(disk)], check=True)


@pytest.mark.slow
def test_a_full_disk_stops_the_run_with_its_journal_intact_and_resume_goes_on(tmp_path, small_disk):
    from tests.conftest import run_cli

    (tmp_path / "tiny.yaml").write_text(tiny_config_yaml())
    longer = ("--set", "search.generations=6", "--set", "search.population=8")
    reference = run_cli("search", "--config", "tiny.yaml", "--name", "ref", "--runs-dir",
                        str(tmp_path / "runs"), *longer, cwd=tmp_path)  # fmt: skip
    assert reference.returncode == 0, reference.stderr
    runs = small_disk / "runs"
    full = run_cli("search", "--config", "tiny.yaml", "--name", "f", "--runs-dir", str(runs),
                   *longer, cwd=tmp_path)  # fmt: skip
    assert full.returncode == 2 and "Traceback" not in full.stderr
    assert full.stderr.strip().splitlines() == [
        f"evonas: error: {runs / 'f'}: the disk is full; the journal keeps every evaluation "
        f"committed so far: free some space, then: evonas resume {runs / 'f'}"
    ]
    assert not list((runs / "f").rglob("*.tmp"))
    kept = load_run(runs / "f").individuals  # readable, and only what was committed
    assert 0 < len(kept) < len(load_run(tmp_path / "runs" / "ref").individuals)
    _remount(small_disk, "size=64m")
    resumed = run_cli("resume", str(runs / "f"), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    columns = ["uid", "genome", "status", "val_accuracy", "params"]
    ours, theirs = (
        load_run(d).individuals[columns] for d in (runs / "f", tmp_path / "runs" / "ref")
    )
    import pandas as pd

    pd.testing.assert_frame_equal(ours, theirs)


@pytest.mark.slow
def test_a_read_only_run_is_read_and_exported_elsewhere_and_resume_says_it_cannot_write(
    finished, tmp_path, small_disk
):
    import shutil

    _remount(small_disk, "size=64m")
    run = small_disk / "done"
    shutil.copytree(finished, run)
    _remount(small_disk, "ro")
    before = snapshot(run)
    assert cli("status", str(run), cwd=tmp_path).returncode == 0
    assert len(load_run(run).individuals) > 0
    out = tmp_path / "out"
    optimize = ["optimize", str(run), "--best", "--sparsity", "0.5", "--channels", "0.5",
                "--finetune-epochs", "0", "--distill-epochs", "1",
                "--out", str(out / "o")]  # fmt: skip
    elsewhere = [["report", str(run), "--out", str(out / "r.html")],
                 ["export", str(run), "--best", "--out", str(out / "m.pt")], optimize]  # fmt: skip
    for args in elsewhere:
        result = cli(*args, cwd=tmp_path)
        assert result.returncode == 0, (args, result.stderr)
    refused = [(["report", str(run)], "Read-only file system"),
               (["export", str(run), "--best"], "Read-only file system"),
               (["resume", str(run), "--generations", "4"], "cannot write here")]  # fmt: skip
    for args, fragment in refused:
        result = cli(*args, cwd=tmp_path)
        assert result.returncode == 2 and fragment in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
    assert snapshot(run) == before
