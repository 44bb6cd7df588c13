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
