import json

import pytest
import yaml

from evonas.genome import Gene, Genome, GenomeError, load_genome, parse_genome, save_genome

LAYERS = [
    {
        "id": 1,
        "op": "conv",
        "width": 8,
        "kernel": 3,
        "stride": 1,
        "activation": "relu",
        "batch_norm": True,
    },
    {"id": 2, "op": "pool", "kind": "max", "size": 2},
    {"id": 3, "op": "dense", "units": 16, "activation": "gelu"},
    {"id": 4, "op": "dropout", "rate": 0.25},
]


def genome_dict(**training):
    return {"layers": [dict(layer) for layer in LAYERS], "training": {"lr": 0.01, **training}}


def test_parse_keeps_order_ids_and_params():
    genome = parse_genome(genome_dict())
    assert genome.gene_ids() == [1, 2, 3, 4]
    expected = {k: v for k, v in LAYERS[0].items() if k not in ("id", "op")}
    assert genome.genes[0] == Gene(1, "conv", {**expected, "dilation": 1})  # optional default
    assert genome.training == {"lr": 0.01}


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_file_round_trip(tmp_path, suffix):
    genome = parse_genome(genome_dict())
    path = tmp_path / f"g{suffix}"
    save_genome(genome, path)
    assert load_genome(path) == genome
    assert parse_genome(json.loads(genome.to_json())) == genome


def test_arch_key_ignores_gene_ids_but_not_params_or_lr():
    a = parse_genome(genome_dict())
    renumbered = genome_dict()
    for i, layer in enumerate(renumbered["layers"]):
        layer["id"] = 100 + i
    assert parse_genome(renumbered).arch_key() == a.arch_key()
    wider = genome_dict()
    wider["layers"][0]["width"] = 16
    assert parse_genome(wider).arch_key() != a.arch_key()
    assert parse_genome(genome_dict(lr=0.02)).arch_key() != a.arch_key()


def test_genome_is_frozen():
    genome = parse_genome(genome_dict())
    with pytest.raises(AttributeError):
        genome.genes = ()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["layers"][0].update(op="lstm"), "layers[0].op: expected one of"),
        (lambda d: d["layers"][0].update(width="8"), "layers[0].width: expected int"),
        (lambda d: d["layers"][0].update(width=0), "layers[0].width: must be >= 1"),
        (lambda d: d["layers"][0].pop("kernel"), "layers[0].kernel: missing"),
        (lambda d: d["layers"][1].update(extra=1), "layers[1].extra: unknown parameter"),
        (lambda d: d["layers"][1].update(kind="median"), "layers[1].kind: expected 'max'"),
        (lambda d: d["layers"][3].update(rate=1.5), "layers[3].rate: must be in [0, 1)"),
        (lambda d: d["layers"][2].update(id=1), "gene id 1 appears twice"),
        (lambda d: d["layers"][2].update(id=-3), "layers[2].id: expected a non-negative"),
        (lambda d: d["training"].update(lr=-1), "training.lr: must be > 0"),
        (lambda d: d["training"].update(momentum=0.9), "training.momentum: unknown"),
        (lambda d: d.update(layers="conv"), "genome.layers: expected a list"),
        (lambda d: d.update(extra=1), "genome: unknown key 'extra'"),
    ],
)
def test_validation_names_the_bad_field(mutate, message):
    data = genome_dict()
    mutate(data)
    with pytest.raises(GenomeError, match=None) as info:
        parse_genome(data)
    assert message in str(info.value)


def test_malformed_files_name_the_file(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("layers: [\n")
    with pytest.raises(GenomeError, match="broken.yaml: not valid YAML"):
        load_genome(broken)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump({"layers": [{"id": 1, "op": "conv"}]}))
    with pytest.raises(GenomeError, match=r"wrong.yaml.layers\[0\].width: missing"):
        load_genome(wrong)
    with pytest.raises(GenomeError, match="cannot read"):
        load_genome(tmp_path / "absent.yaml")


def test_yaml_never_constructs_python_objects(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(GenomeError, match="not valid YAML"):
        load_genome(evil)


def test_empty_genome_is_valid():
    assert parse_genome({"layers": []}) == Genome(genes=(), training={"lr": 1e-3})
