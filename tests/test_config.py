import json

import pytest

from evonas.config import (
    DEFAULTS,
    OPERATOR_NAMES,
    Config,
    ConfigError,
    parse_set,
    preset_names,
    resolve,
)
from evonas.objectives import Objective


def test_defaults_are_valid_and_not_mutated():
    config = resolve()
    config.search.population = 99
    assert DEFAULTS["search"]["population"] == 12
    assert resolve().search.population == 12


def test_typed_sections_and_plain_data_round_trip():
    config = resolve(sets=["search.objectives=[{name: val-acc, goal: max}]", "seed=3"])
    assert config.search.objectives == [Objective("val-acc", "max")]
    assert config.strategy == "local"  # auto with one objective
    data = config.to_dict()
    assert data["search"]["objectives"] == [{"name": "val-acc", "goal": "max"}]
    assert resolve(base=data) == config
    assert json.loads(json.dumps(data)) == data


def test_json_schema_for_editors():
    schema = Config.model_json_schema()
    assert {"task", "space", "training", "search", "parallel", "seed"} <= set(schema["properties"])
    assert "additionalProperties" in json.dumps(schema)  # unknown keys are errors for editors too


def test_operator_names_are_registered_operators():
    from evonas.operators import OPERATORS

    for kind, names in OPERATOR_NAMES.items():
        assert {n for (k, n) in OPERATORS if k == kind} == set(names)
    from evonas.config import CROSSOVERS

    assert {op.name for op in OPERATORS.values() if op.arity == 2} == set(CROSSOVERS)


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_is_valid(name):
    config = resolve(preset=name)
    assert config.task.name


def test_presets_ship_demo_digits_and_mnist1d():
    assert {"demo", "digits", "mnist1d"} <= set(preset_names())


def test_precedence_file_then_set_then_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("search:\n  population: 6\n  generations: 2\ntraining:\n  epochs: 3\n")
    config = resolve(
        config_file=path,
        sets=["search.population=8", "training.optimizer=sgd"],
        overrides={"search.population": 10, "training.epochs": None},
    )
    assert config.search.population == 10
    assert config.search.generations == 2
    assert config.training.epochs == 3
    assert config.training.optimizer == "sgd"


def test_set_parses_yaml_values():
    assert parse_set("space.widths=[4, 8]") == (["space", "widths"], [4, 8])
    assert parse_set("task.name=digits") == (["task", "name"], "digits")
    assert parse_set("training.weight_decay=0.001") == (["training", "weight_decay"], 0.001)


def test_free_form_sections_accept_new_keys():
    config = resolve(sets=["task.options.samples=50", "search.operators.crossover=2"])
    assert config.task.options == {"samples": 50}
    assert config.search.operators == {"crossover": 2}


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["search.popsize=3"], "search.popsize: unknown setting"),
        (["bogus.key=1"], "bogus: unknown setting"),
        (["search.population=many"], "search.population: expected int, got 'many'"),
        (["search.population=1"], "search.population: must be >= 2"),
        (["training.epochs=0"], "training.epochs: must be >= 1"),
        (["training.optimizer=rmsprop"], "training.optimizer: expected one of"),
        (["search.strategy=annealing"], "search.strategy: expected one of"),
        (["space.widths=[]"], "space.widths: must not be empty"),
        (["space.widths=[8, -1]"], "space.widths: values must be > 0"),
        (["space.ops=[conv, lstm]"], "space.ops: 'lstm' is not one of"),
        (["space.lr_min=0.1", "space.lr_max=0.01"], "space.lr_min/lr_max"),
        (["search.operators.teleport=1"], "search.operators.teleport: unknown operator"),
        (["search.operators={add_layer: 0}"], "at least one weight must be > 0"),
        (["search.objectives=[{name: val_accuracy, goal: up}]"], "objectives[0].goal"),
        (["search.strategy=tournament"], "needs exactly one objective"),
        (["task.val_fraction=1.5"], "task.val_fraction: must be between 0 and 1"),
        (["training.evaluator=myfunction"], "training.evaluator: expected 'builtin'"),
        (["parallel.n_jobs=0"], "parallel.n_jobs: must be >= 1"),
        (["search=3"], "search: expected a mapping of settings, got 3"),
        (["search={populaton: 3}"], "search.populaton: unknown setting; did you mean population?"),
        (["search.objectives=[{name: val_accuracy}]"], "search.objectives[0].goal: missing"),
        (["parallel.devices=0,"], "parallel.devices: expected 'auto', 'cpu' or GPUs"),
        (["space.kind=nb201", "search.operators.add_layer=1"], "unknown operator for a nb201"),
        (
            [
                "search.strategy=regularized",
                "search.objectives=[{name: val_accuracy, goal: max}]",
                "search.operators={crossover: 1}",
            ],
            "search.operators: this search breeds by mutation",
        ),
        (["nokey"], "expected key=value"),
        (
            ["search.objectives[0].goal=min"],
            "--set search.objectives[0].goal: a list is set as a whole",
        ),
        (["training.timeout=soon"], "training.timeout: expected a number, got 'soon'"),
    ],
)
def test_bad_values_name_the_key(sets, message):
    with pytest.raises(ConfigError) as info:
        resolve(sets=sets)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_files(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("search: [\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        resolve(config_file=broken)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        resolve(config_file=listy)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("search:\n  populaton: 5\n")
    with pytest.raises(ConfigError, match="search.populaton: unknown setting"):
        resolve(config_file=unknown)
    with pytest.raises(ConfigError, match="cannot read config"):
        resolve(config_file=tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        resolve(preset="nope")


def test_numbers_written_as_text_count(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("search:\n  max_time: 1e3\ntraining:\n  timeout: '90'\n")  # YAML 1.1: strings
    config = resolve(config_file=path)
    assert config.search.max_time == 1000.0 and config.training.timeout == 90.0
