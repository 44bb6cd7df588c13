import pytest

from evonas.config import resolve
from evonas.launch import run_search
from evonas.weights import UnsafeFileError
from tests.conftest import FAULTS, ROOT, cli, tiny_config_yaml
from tests.test_cli import individuals
from tests.test_evolve import TINY as EVOLVE_TINY

TINY = [*EVOLVE_TINY, "training.epochs=1", "search.generations=1"]


def test_seed_genomes_start_generation_zero(tmp_path):
    mlp, resnet = ROOT / "genomes" / "mlp.yaml", ROOT / "genomes" / "small_resnet.yaml"
    config = resolve(sets=[*TINY, f"search.seed_genomes=['{mlp}', '{resnet}']",
                           "search.seed_fill=mutate"])  # fmt: skip
    people = run_search(config, tmp_path / "run", log=lambda line: None).individuals
    first = people[people["generation"] == 0]
    assert first["operator"].tolist()[:2] == ["seed", "seed"]
    assert first["origin"].tolist()[:2] == [f"file:{mlp}", f"file:{resnet}"]
    assert (first["status"] == "ok").all()
    fill = first.iloc[2:]
    assert len(fill) == 2 and fill["origin"].eq("offspring").all()
    assert all(set(eval(p)) <= {0, 1} for p in fill["parents"])  # mutants of the seeds
    assert sorted(p.name for p in (tmp_path / "run" / "seeds").iterdir()) == [
        "000.yaml",
        "001.yaml",
    ]


def test_seed_run_brings_its_best_models_with_their_weights(trained, tmp_path):
    result = cli(
        "search", "--config", str(write_config(tmp_path)), "--name", "seeded", "--runs-dir",
        str(tmp_path / "runs"), "--seed-run", str(trained.path), "--seed-top", "1",
        "--set", "training.finetune_epochs=0", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    people = individuals(tmp_path / "runs" / "seeded")
    seed = people.iloc[0]
    assert seed["operator"] == "seed" and seed["origin"].startswith(f"run:{trained.path}#uid")
    best = trained.individuals.sort_values("val_accuracy").iloc[-1]
    # Evaluated with its trained weights and no further training: the same validation accuracy.
    assert seed["val_accuracy"] == pytest.approx(best["val_accuracy"])
    assert (tmp_path / "runs" / "seeded" / "seeds" / "000.pt").exists()


def write_config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(tiny_config_yaml(training="training:\n  epochs: 1\n"))
    return path


def test_a_seed_that_does_not_fit_the_input_is_refused(tmp_path):
    pools = tmp_path / "pools.yaml"
    pools.write_text("layers:\n" + "".join(
        f"  - {{id: {i}, op: pool, kind: max, size: 2}}\n" for i in range(1, 6)))  # fmt: skip
    result = cli("search", "--config", str(write_config(tmp_path)), "--runs-dir",
                     str(tmp_path / "runs"), "--seed-genome", str(pools), cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2
    assert "does not fit this task's input" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()
    command = ["search", "--config", str(write_config(tmp_path)), "--runs-dir", str(tmp_path)]
    missing = cli(*command, "--seed-genome", "absent.yaml", cwd=tmp_path)
    assert missing.returncode == 2 and "absent.yaml: cannot read" in missing.stderr


def test_a_seeded_run_resumes_from_its_own_copy_of_the_seeds(tmp_path):
    from tests.test_evolve import TIMING, copy_run, resume_to_end

    seed_file = tmp_path / "seed.yaml"
    seed_file.write_text((ROOT / "genomes" / "mlp.yaml").read_text())
    sets = [*TINY, f"training.evaluator={FAULTS}:slow", f"search.seed_genomes=['{seed_file}']",
            "search.generations=3"]  # fmt: skip
    reference = run_search(resolve(sets=sets), tmp_path / "ref", log=lambda line: None)
    copy_run(tmp_path / "ref", tmp_path / "cut", 6)
    seed_file.unlink()  # the run must not need the original file any more
    resumed = resume_to_end(tmp_path / "cut")
    assert resumed.individuals.drop(columns=TIMING).equals(
        reference.individuals.drop(columns=TIMING)
    )


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_malicious_seed_weights_file_is_never_executed(tmp_path):
    import pickle

    seed = tmp_path / "seed.yaml"
    seed.write_text((ROOT / "genomes" / "mlp.yaml").read_text())
    marker = tmp_path / "pwned"
    (tmp_path / "seed.pt").write_bytes(pickle.dumps({"w": Payload(str(marker))}))
    config = resolve(sets=[*TINY, f"search.seed_genomes=['{seed}']", "search.generations=0"])
    with pytest.raises(UnsafeFileError, match="refusing to unpickle arbitrary objects"):
        run_search(config, tmp_path / "run", log=lambda line: None)  # before the run exists
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_tampered_run_weights_are_refused(trained, tmp_path):
    import pickle
    import shutil

    from evonas.analysis import load_run
    from evonas.weights import UnsafeFileError

    copy = tmp_path / "copy"
    shutil.copytree(trained.path, copy)
    uid = int(trained.best()["uid"])
    marker = tmp_path / "pwned"
    weights = copy / trained.individuals.set_index("uid").loc[uid, "weights"]
    weights.write_bytes(pickle.dumps(Payload(str(marker))))
    with pytest.raises(UnsafeFileError, match="refusing to unpickle"):
        load_run(copy).model(uid)
    assert not marker.exists()
