"""A corpus of bad inputs (configs, `--set` values, flags, genomes, weights, run directories and
crafted journals), each through the real command line: every case exits 2 with one line on
stderr that names the culprit, never a traceback, and leaves every file where it ran (the bad
inputs themselves and a copy of a finished run) byte-identical, with no run directory made.

Each case runs in this process under a time limit and an address-space limit, so an input that
is accepted when it should not be (a population of 10**9, a layer 10**9 channels wide) fails its
case instead of hanging or exhausting the machine."""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import ROOT, cli, tiny_config_yaml

pytestmark = pytest.mark.slow

CASE_SECONDS = 10  # far more than any refusal needs; a case still going by then is a failure
MEMORY_HEADROOM = 4 << 30  # address space a case may add to the test process
ISOLATED_MEMORY = 6 << 30  # address space of a case run in a new process
HUGE = 10**9
MANY = 10**6

TINY = tiny_config_yaml(
    search="search:\n  population: 4\n  generations: 1\n",
    parallel="parallel:\n  backend: inline\n",  # in-process: a case past its time stops
)
NOT_A_DATABASE = random.Random(0).randbytes(8192)
TEXT = "this is a history, but not a database\n" * 200
BINARY = bytes(range(256)) * 4
SEARCH = ("search", "--runs-dir", "{tmp}/runs", "--name", "r")
TINY_SEARCH = (*SEARCH, "--config", "{tmp}/tiny.yaml")
SEED_SEARCH = (*TINY_SEARCH, "--generations", "0", "--seed-genome")
GENOME = ("genome", "--config", "{tmp}/tiny.yaml")
IMPORT = ("import", f"{ROOT / 'tests' / 'import_models.py'}:mlp", "--out", "{tmp}/m.yaml")


# --- the finished run every run case copies ---------------------------------------------------


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad-inputs")
    (folder / "tiny.yaml").write_text(TINY)
    result = cli(
        "search", "--config", "tiny.yaml", "--name", "good", "--runs-dir", "runs", cwd=folder
    )
    assert result.returncode == 0, result.stderr
    run = folder / "runs" / "good"
    with contextlib.closing(sqlite3.connect(run / "history.sqlite")) as db:
        kept = [
            u
            for (u,) in db.execute(
                "SELECT uid FROM individuals WHERE weights IS NOT NULL ORDER BY uid"
            )
        ]
    assert len(kept) >= 2, "the fixture run must keep the weights of two individuals"
    return SimpleNamespace(path=run, uid=kept[0], other=kept[1])


# --- cases ------------------------------------------------------------------------------------

Setup = Callable[[SimpleNamespace], None]  # gets tmp, run (the copy, if any), uid and other


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]  # {tmp}, {run}, {uid} and {other} are filled in
    fragments: tuple[str, ...]  # what the one error line must contain (also filled in)
    setup: Setup | None = None
    isolated: bool = False  # run in a new process: it may take the interpreter down


def fill(text: str, ctx: SimpleNamespace) -> str:
    for key in ("tmp", "run", "uid", "other"):
        text = text.replace("{" + key + "}", str(getattr(ctx, key)))
    return text


def write(name: str, content: str | bytes) -> Setup:
    """Write a file under the case's folder (`content` as bytes, or text)."""

    def setup(ctx: SimpleNamespace) -> None:
        path = ctx.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)

    return setup


def in_run(name: str, content: str | bytes | None) -> Setup:
    """Replace (None: remove) a file of the run's copy; `name` may use {uid}, {other}."""

    def setup(ctx: SimpleNamespace) -> None:
        path = ctx.run / fill(name, ctx)
        if content is None:
            path.unlink()
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)

    return setup


def make_dir(name: str) -> Setup:
    def setup(ctx: SimpleNamespace) -> None:
        (ctx.tmp / name).mkdir(parents=True, exist_ok=True)

    return setup


def run_dir_replaced(name: str, by: str) -> Setup:
    """The run's file `name` replaced by a directory or by a part of itself."""

    def setup(ctx: SimpleNamespace) -> None:
        path = ctx.run / name
        data = path.read_bytes()
        path.unlink()
        if by == "directory":
            path.mkdir()
        else:  # "truncated": the first half
            path.write_bytes(data[: len(data) // 2])

    return setup


def journal(sql: str, *params) -> Setup:
    """Run one statement on the copy's journal; `sql` may use {uid} and {other}."""

    def setup(ctx: SimpleNamespace) -> None:
        with contextlib.closing(sqlite3.connect(ctx.run / "history.sqlite")) as db:
            db.execute(fill(sql, ctx), [p(ctx) if callable(p) else p for p in params])
            db.commit()

    return setup


def genome_of_uid(change: Callable[[dict], dict]) -> Setup:
    """Rewrite the journaled genome of {uid}."""

    def setup(ctx: SimpleNamespace) -> None:
        with contextlib.closing(sqlite3.connect(ctx.run / "history.sqlite")) as db:
            (text,) = db.execute(
                "SELECT genome FROM individuals WHERE uid = ?", (ctx.uid,)
            ).fetchone()
            changed = change(json.loads(text))
            db.execute(
                "UPDATE individuals SET genome = ? WHERE uid = ?", (json.dumps(changed), ctx.uid)
            )
            db.commit()

    return setup


def widest(genome: dict) -> dict:
    """The first layer with channels or units made 10**9 wide."""
    for layer in genome["layers"]:
        for key in ("width", "units"):
            if key in layer:
                layer[key] = HUGE
                return genome
    genome["layers"].insert(0, {"id": 999, "op": "dense", "units": HUGE, "activation": "relu"})
    return genome


@cache
def million_layers() -> str:
    layers = [
        {"id": i, "op": "dense", "units": 8, "activation": "relu"} for i in range(1, MANY + 1)
    ]
    return json.dumps({"layers": layers, "training": {"lr": 0.001}})


def weights_swapped(ctx: SimpleNamespace) -> None:
    weights = ctx.run / "weights"
    shutil.copyfile(weights / f"{ctx.other}.pt", weights / f"{ctx.uid}.pt")


class Payload:
    """Unpickled, it would create a file; a weights loader must refuse it, never run it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def payload(where: Callable[[SimpleNamespace], Path]) -> Setup:
    def setup(ctx: SimpleNamespace) -> None:
        import torch

        torch.save({"weight": Payload(str(ctx.tmp / "pwned"))}, where(ctx))

    return setup


def other_genomes_weights(ctx: SimpleNamespace) -> None:
    """g.pt: a state_dict of another architecture than g.yaml's."""
    import torch

    from evonas.builder import build
    from evonas.genome import parse_genome

    other = parse_genome(
        {
            "layers": [
                {
                    "id": 7,
                    "op": "conv",
                    "width": 4,
                    "kernel": 3,
                    "stride": 1,
                    "activation": "relu",
                    "batch_norm": False,
                }
            ]
        }
    )
    torch.save(build(other, (1, 12), 3).state_dict(), ctx.tmp / "g.pt")


def both(*setups: Setup) -> Setup:
    def setup(ctx: SimpleNamespace) -> None:
        for one in setups:
            one(ctx)

    return setup


def genome_file(*layers: str, name: str = "g.yaml", header: str = "") -> Setup:
    return write(name, header + "layers:\n" + "".join(f"  - {layer}\n" for layer in layers))


DENSE = "{id: 1, op: dense, units: 8, activation: relu}"
SWISHY = "{id: 1, op: conv, width: 8, kernel: 3, stride: 1, activation: swishy, batch_norm: false}"
WIDE = "{id: 1, op: conv, width: %d, kernel: 3, stride: 1, activation: relu, batch_norm: false}"
GRAPH_READS_MISSING = "{id: 1, op: linear, features: 3, inputs: [7]}"
VALID_SEED = genome_file(DENSE)


def config_case(
    id: str, content: str | bytes, *fragments: str, extra: tuple = (), isolated: bool = False
) -> Case:
    args = (*SEARCH, "--config", "{tmp}/bad.yaml", *extra)
    return Case(id, args, fragments, write("bad.yaml", content), isolated)


def set_case(id: str, assignment: str, *fragments: str, extra: tuple = ()) -> Case:
    return Case(id, (*TINY_SEARCH, "--set", assignment, *extra), fragments)


def seed_case(id: str, setup: Setup, *fragments: str, name: str = "g.yaml") -> Case:
    return Case(id, (*SEED_SEARCH, "{tmp}/" + name), fragments, setup)


def genome_case(id: str, setup: Setup, *fragments: str, name: str = "g.yaml") -> Case:
    return Case(id, (*GENOME, "{tmp}/" + name), fragments, setup)


def run_case(id: str, args: tuple[str, ...], setup: Setup | None, *fragments: str) -> Case:
    return Case(id, args, fragments, setup)


# Nine levels of nine aliases: 9**9 leaves if anything expands it (YAML's "billion laughs").
BILLION_LAUGHS = TINY.replace(
    "  options: {samples: 240, length: 12, classes: 3}\n",
    "  options:\n    a0: &a0 [x, x, x, x, x, x, x, x, x]\n"
    + "".join(f"    a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)),
)
GEN0 = ("--generations", "0")

CONFIGS = [
    config_case("config-invalid-yaml", "search: [\n", "bad.yaml"),
    config_case("config-binary-bytes", BINARY, "bad.yaml"),
    config_case(
        "config-latin1-not-utf8", "task:\n  name: synth\xe9tic\n".encode("latin-1"), "bad.yaml"
    ),
    config_case("config-utf16", TINY.encode("utf-16"), "bad.yaml"),
    config_case("config-nul-byte", "search:\n  population: 4\x00\n", "bad.yaml"),
    config_case(
        "config-python-object-apply",
        "search: !!python/object/apply:os.system ['touch pwned']\n",
        "bad.yaml",
    ),
    config_case("config-python-name-tag", "task:\n  name: !!python/name:os.system\n", "bad.yaml"),
    config_case("config-top-level-list", "- search\n- task\n", "bad.yaml"),
    config_case("config-top-level-scalar", "just some words\n", "bad.yaml"),
    # (an empty config file is valid: it means every default)
    Case("config-is-a-directory", (*SEARCH, "--config", "{tmp}/adir"), ("adir",), make_dir("adir")),
    Case("config-missing-file", (*SEARCH, "--config", "{tmp}/missing.yaml"), ("missing.yaml",)),
    config_case("config-unknown-section", TINY + "searh:\n  population: 4\n", "searh"),
    config_case(
        "config-unknown-key", TINY.replace("  name: synthetic", "  nmae: synthetic"), "task.nmae"
    ),
    config_case(
        "config-section-not-a-mapping",
        TINY.replace("search:\n  population: 4\n  generations: 1\n", "search: 5\n"),
        "search",
    ),
    config_case(
        "config-population-not-a-number",
        TINY.replace("population: 4", "population: four"),
        "search.population",
    ),
    config_case(
        "config-population-1e9",
        TINY.replace("population: 4", f"population: {HUGE}"),
        "search.population",
    ),
    config_case(
        "config-epochs-1e7", TINY.replace("epochs: 2", "epochs: 10000000"), "training.epochs"
    ),
    config_case(
        "config-batch-size-1e9",
        TINY.replace("batch_size: 32", f"batch_size: {HUGE}"),
        "training.batch_size",
        extra=GEN0,
    ),
    config_case(
        "config-widths-1e9",
        TINY.replace("widths: [4, 8]", f"widths: [{HUGE}]"),
        "space.widths",
        extra=GEN0,
    ),
    config_case(
        "config-units-1e9",
        TINY.replace("units: [8, 16]", f"units: [{HUGE}]"),
        "space.units",
        extra=GEN0,
    ),
    config_case(
        "config-max-layers-1e6",
        TINY.replace("max_layers: 4", f"max_layers: {MANY}"),
        "space.max_layers",
        extra=GEN0,
    ),
    config_case(
        "config-kernels-1e6",
        TINY.replace("units: [8, 16]", f"units: [8]\n  kernels: [{MANY}]\n  ops: [conv]"),
        "space.kernels",
        extra=GEN0,
    ),
    config_case(
        "config-samples-1e9",
        TINY.replace("samples: 240", f"samples: {HUGE}"),
        "task.options.samples",
        extra=GEN0,
    ),
    config_case(
        "config-lr-max-infinite",
        TINY.replace("units: [8, 16]\n", "units: [8, 16]\n  lr_max: .inf\n"),
        "space.lr_max",
        extra=GEN0,
    ),
    config_case(
        "config-val-fraction-1.5",
        TINY.replace("  options:", "  val_fraction: 1.5\n  options:"),
        "task.val_fraction",
    ),
    config_case(
        "config-unknown-strategy",
        TINY.replace("generations: 1", "strategy: simulated"),
        "search.strategy",
    ),
    config_case(
        "config-unknown-backend",
        TINY.replace("backend: inline", "backend: mpi"),
        "parallel.backend",
    ),
    config_case(
        "config-unknown-task", TINY.replace("name: synthetic", "name: nosuchtask"), "task.name"
    ),
    config_case(
        "config-objective-goal",
        TINY.replace(
            "generations: 1\n", "generations: 1\n  objectives: [{name: val_accuracy, goal: up}]\n"
        ),
        "search.objectives[0].goal",
    ),
    config_case("config-negative-seed", TINY + "seed: -1\n", "seed"),
    # in a new process: expanding the aliases has panicked pydantic-core and hung the process
    config_case("config-billion-laughs", BILLION_LAUGHS, "bad.yaml", extra=GEN0, isolated=True),
]

SETS = [
    set_case("set-population-not-a-number", "search.population=four", "search.population"),
    set_case("set-epochs-1e7", "training.epochs=10000000", "training.epochs"),
    set_case("set-unknown-section", "nosuch.key=1", "nosuch"),
    set_case("set-without-equals", "search.population", "search.population"),
    set_case(
        "set-python-tag",
        "space.widths=!!python/object/apply:os.system [touch pwned]",
        "space.widths",
    ),
    set_case("set-through-a-number", "search.population.x=1", "search.population"),
    set_case("set-n-jobs-zero", "parallel.n_jobs=0", "parallel.n_jobs"),
    set_case(
        "set-objective-goal",
        "search.objectives=[{name: val_accuracy, goal: maxx}]",
        "search.objectives[0].goal",
    ),
    set_case("set-empty-key", "=5", "--set"),
    set_case("set-unclosed-list", "space.widths=[8, 16", "space.widths"),
    set_case("set-widths-1e9", f"space.widths=[{HUGE}]", "space.widths", extra=GEN0),
    set_case("set-augment-unknown", "training.augment={rotate: 9}", "training.augment.rotate"),
    set_case("set-cutout-1e9", f"training.augment.cutout={HUGE}", "training.augment.cutout"),
    set_case("set-precision-fp8", "training.precision=fp8", "training.precision"),
    set_case("set-warmup-past-training", "training.warmup_epochs=2", "training.warmup_epochs"),
    set_case("set-early-stop-asha", "search.early_stop.kind=asha", "search.early_stop.kind"),
    set_case(
        "set-early-stop-past-training",
        "search.early_stop={kind: halving, min_epochs: 5}",
        "search.early_stop.min_epochs",
    ),  # fmt: skip
    set_case(
        "set-early-stop-eta-1",
        "search.early_stop.reduction_factor=1",
        "search.early_stop.reduction_factor",
    ),  # fmt: skip
    set_case(
        "set-loader-workers-1e9", f"training.loader_workers={HUGE}", "training.loader_workers"
    ),  # fmt: skip
    set_case(
        "set-cifar-missing",
        "task={name: cifar10, options: {path: '{tmp}/none'}}",
        "{tmp}/none/data_batch_1.bin not found",
    ),  # fmt: skip
    set_case(
        "set-cifar-labels",
        "task={name: cifar100, options: {labels: middle}}",
        "task.options.labels",
    ),  # fmt: skip
    set_case(
        "set-mnist-limit-text", "task={name: mnist, options: {limit: many}}", "task.options.limit"
    ),  # fmt: skip
    set_case(
        "set-image-folder-no-path", "task={name: image_folder, options: {}}", "task.options.path"
    ),  # fmt: skip
    set_case(
        "set-image-folder-not-a-folder",
        "task={name: image_folder, options: {path: '{tmp}/tiny.yaml'}}",
        "tiny.yaml",
    ),  # fmt: skip
    set_case(
        "set-fashion-download-text",
        "task={name: fashion_mnist, options: {download: yes2}}",
        "task.options.download",
    ),  # fmt: skip
]

FLAGS = [
    Case(
        "flag-runs-dir-is-a-file",
        ("search", "--config", "{tmp}/tiny.yaml", "--runs-dir", "{tmp}/afile", "--name", "r"),
        ("afile",),
        write("afile", "a file\n"),
    ),
    Case("flag-negative-n-jobs", (*TINY_SEARCH, "--n-jobs", "-2"), ("--n-jobs",)),
    Case("flag-unknown-preset", (*SEARCH, "--preset", "nope"), ("nope",)),
    Case("flag-population-not-a-number", (*TINY_SEARCH, "--population", "abc"), ("--population",)),
    Case("flag-max-time-garbage", (*TINY_SEARCH, "--max-time", "5x"), ("--max-time",)),
    Case(
        "flag-name-escapes",
        (
            "search",
            "--config",
            "{tmp}/tiny.yaml",
            "--runs-dir",
            "{tmp}/runs",
            "--name",
            "../escape",
        ),
        ("--name",),
    ),
    Case("flag-config-and-preset", (*TINY_SEARCH, "--preset", "digits"), ("--preset",)),
    Case("flag-unknown-backend", (*TINY_SEARCH, "--backend", "mpi"), ("--backend",)),
    Case(
        "flag-seed-run-missing", (*TINY_SEARCH, "--seed-run", "{tmp}/nosuch-run"), ("nosuch-run",)
    ),
    Case("flag-unknown", (*TINY_SEARCH, "--frobnicate"), ("--frobnicate",)),
    Case(
        "flag-seed-genome-is-a-directory", (*SEED_SEARCH, "{tmp}/adir"), ("adir",), make_dir("adir")
    ),
    Case("flag-resume-population", ("resume", "{run}", "--population", "8"), ("--population",)),
    Case(
        "flag-resume-negative-generations",
        ("resume", "{run}", "--generations", "-1"),
        ("--generations",),
    ),
    Case(
        "flag-export-unknown-format",
        ("export", "{run}", "--best", "--format", "pickle"),
        ("--format",),
    ),
    Case(
        "flag-optimize-sparsity-1.5",
        ("optimize", "{run}", "--best", "--sparsity", "1.5"),
        ("--sparsity",),
    ),
    Case(
        "flag-export-best-and-individual",
        ("export", "{run}", "--best", "--individual", "1"),
        ("--individual",),
    ),
    Case("flag-import-input-shape", (*IMPORT, "--input-shape", "abc"), ("--input-shape",)),
    Case(
        "flag-import-missing-source",
        ("import", "{tmp}/nosuch.py:build", "--out", "{tmp}/m.yaml"),
        ("nosuch.py",),
    ),
    Case(
        "flag-export-out-is-a-file",
        ("export", "{run}", "--pareto", "--out", "{tmp}/afile"),
        ("afile",),
        write("afile", "a file\n"),
    ),
    Case(
        "flag-export-out-is-a-directory",
        ("export", "{run}", "--best", "--out", "{tmp}/adir"),
        ("adir",),
        make_dir("adir"),
    ),
    Case(
        "flag-report-out-is-a-directory",
        ("report", "{run}", "--out", "{tmp}/adir"),
        ("adir",),
        make_dir("adir"),
    ),
    Case(
        "flag-optimize-unknown-student",
        ("optimize", "{run}", "--best", "--student", "999"),
        ("999",),
    ),
    Case(
        "flag-export-unknown-objective",
        ("export", "{run}", "--best", "--objective", "nosuch", "--out", "{tmp}/m.pt"),
        ("nosuch",),
    ),
]

GENOMES = [
    genome_case("genome-invalid-yaml", write("g.yaml", "layers: [\n"), "g.yaml"),
    genome_case("genome-binary-bytes", write("g.yaml", BINARY), "g.yaml"),
    genome_case(
        "genome-python-tag",
        write("g.yaml", "layers: !!python/object/apply:os.system ['touch pwned']\n"),
        "g.yaml",
    ),
    genome_case(
        "genome-unknown-op",
        genome_file("{id: 1, op: transformer, width: 8}"),
        "g.yaml.layers[0].op",
    ),
    genome_case("genome-unknown-activation", genome_file(SWISHY), "g.yaml", "swishy"),
    genome_case("genome-negative-width", genome_file(WIDE % -8), "g.yaml.layers[0].width"),
    genome_case("genome-width-1e9", genome_file(WIDE % HUGE), "g.yaml", "width"),
    genome_case(
        "genome-units-1e9",
        genome_file(f"{{id: 1, op: dense, units: {HUGE}, activation: relu}}"),
        "g.yaml",
        "units",
    ),
    genome_case(
        "genome-kernel-1e9",
        genome_file(
            f"{{id: 1, op: conv, width: 4, kernel: {HUGE}, "
            "stride: 1, activation: relu, batch_norm: false}"
        ),
        "g.yaml",
        "kernel",
    ),
    genome_case(
        "genome-1e6-layers",
        lambda ctx: (ctx.tmp / "g.json").write_text(million_layers()),
        "g.json",
        name="g.json",
    ),
    genome_case(
        "genome-graph-reads-missing-id", genome_file(GRAPH_READS_MISSING), "g.yaml", "gene 1"
    ),
    Case("genome-missing-file", (*GENOME, "{tmp}/nope.yaml"), ("nope.yaml",)),
    genome_case("genome-duplicate-id", genome_file(DENSE, DENSE), "g.yaml.layers"),
    genome_case("genome-not-a-mapping", write("g.yaml", "- conv\n- dense\n"), "g.yaml"),
    genome_case(
        "genome-pool-kind",
        genome_file("{id: 1, op: pool, kind: median, size: 2}"),
        "g.yaml.layers[0].kind",
    ),
    genome_case(
        "genome-negative-lr",
        write("g.yaml", f"layers:\n  - {DENSE}\ntraining: {{lr: -0.1}}\n"),
        "g.yaml.training.lr",
    ),
]

SEEDS = [
    seed_case("seed-unknown-activation", genome_file(SWISHY), "g.yaml", "swishy"),
    seed_case(
        "seed-made-for-another-input",
        genome_file(DENSE, header="input_shape: [3, 32, 32]\nnum_classes: 10\n"),
        "g.yaml",
    ),
    seed_case("seed-width-1e9", genome_file(WIDE % HUGE), "g.yaml", "width"),
    seed_case(
        "seed-1e6-layers",
        lambda ctx: (ctx.tmp / "g.json").write_text(million_layers()),
        "g.json",
        name="g.json",
    ),
    seed_case("seed-graph-reads-missing-id", genome_file(GRAPH_READS_MISSING), "g.yaml"),
    seed_case("seed-weights-not-torch", both(VALID_SEED, write("g.pt", NOT_A_DATABASE)), "g.pt"),
    seed_case(
        "seed-weights-pickle-payload",
        both(VALID_SEED, payload(lambda ctx: ctx.tmp / "g.pt")),
        "g.pt",
    ),
    seed_case("seed-weights-of-another-genome", both(VALID_SEED, other_genomes_weights), "g.pt"),
]

EXPORT = ("export", "{run}", "--individual", "{uid}", "--out", "{tmp}/m.pt")
BEST = ("export", "{run}", "--best", "--out", "{tmp}/m.pt")
OPTIMIZE = (
    "optimize",
    "{run}",
    "--individual",
    "{uid}",
    "--sparsity",
    "0.5",
    "--channels",
    "0.5",
    "--finetune-epochs",
    "0",
)
UID_WEIGHTS = "weights/{uid}.pt"

WEIGHTS = [
    run_case("export-weights-not-torch", EXPORT, in_run(UID_WEIGHTS, NOT_A_DATABASE), "{uid}.pt"),
    run_case(
        "export-weights-pickle-payload",
        EXPORT,
        payload(lambda ctx: ctx.run / fill(UID_WEIGHTS, ctx)),
        "{uid}.pt",
    ),
    run_case("export-weights-of-another-individual", EXPORT, weights_swapped, "{uid}.pt"),
    run_case(
        "export-weights-truncated",
        EXPORT,
        lambda ctx: run_dir_replaced(fill(UID_WEIGHTS, ctx), "truncated")(ctx),
        "{uid}.pt",
    ),
    run_case("export-weights-missing", EXPORT, in_run(UID_WEIGHTS, None), "{uid}.pt"),
    run_case("export-weights-empty-file", EXPORT, in_run(UID_WEIGHTS, b""), "{uid}.pt"),
    run_case(
        "optimize-weights-not-torch", OPTIMIZE, in_run(UID_WEIGHTS, NOT_A_DATABASE), "{uid}.pt"
    ),
    Case(
        "import-weights-not-torch",
        (*IMPORT, "--weights", "{tmp}/bad.pt"),
        ("bad.pt",),
        write("bad.pt", NOT_A_DATABASE),
    ),
    Case(
        "import-weights-pickle-payload",
        (*IMPORT, "--weights", "{tmp}/bad.pt"),
        ("bad.pt",),
        payload(lambda ctx: ctx.tmp / "bad.pt"),
    ),
]

JOURNAL = "history.sqlite"
RANDOM_JOURNAL = in_run(JOURNAL, NOT_A_DATABASE)
TEXT_JOURNAL = in_run(JOURNAL, TEXT)
BAD_YAML = "search: [\n  population: 4\n"
PYTHON_TAG = "search: !!python/object/apply:os.system ['touch pwned']\n"
REPORT = ("report", "{run}")
STATUS = ("status", "{run}")
RESUME = ("resume", "{run}")
RESUME_MORE = ("resume", "{run}", "--generations", "2")

RUNS = [
    run_case("report-journal-not-a-database", REPORT, RANDOM_JOURNAL, JOURNAL),
    run_case("export-journal-not-a-database", BEST, RANDOM_JOURNAL, JOURNAL),
    run_case("status-journal-not-a-database", STATUS, RANDOM_JOURNAL, JOURNAL),
    run_case("resume-journal-not-a-database", RESUME, RANDOM_JOURNAL, JOURNAL),
    run_case(
        "optimize-journal-not-a-database", ("optimize", "{run}", "--best"), RANDOM_JOURNAL, JOURNAL
    ),
    run_case("report-journal-is-text", REPORT, TEXT_JOURNAL, JOURNAL),
    run_case("export-journal-is-text", BEST, TEXT_JOURNAL, JOURNAL),
    run_case("status-journal-is-text", STATUS, TEXT_JOURNAL, JOURNAL),
    run_case("resume-journal-is-text", RESUME, TEXT_JOURNAL, JOURNAL),
    run_case("report-journal-empty-file", REPORT, in_run(JOURNAL, b""), JOURNAL),
    run_case("status-journal-empty-file", STATUS, in_run(JOURNAL, b""), JOURNAL),
    run_case(
        "status-journal-is-a-directory", STATUS, run_dir_replaced(JOURNAL, "directory"), JOURNAL
    ),
    run_case("report-journal-truncated", REPORT, run_dir_replaced(JOURNAL, "truncated"), JOURNAL),
    run_case("export-journal-truncated", BEST, run_dir_replaced(JOURNAL, "truncated"), JOURNAL),
    run_case("report-journal-missing", REPORT, in_run(JOURNAL, None), JOURNAL),
    run_case(
        "resume-config-invalid-yaml", RESUME_MORE, in_run("config.yaml", BAD_YAML), "config.yaml"
    ),
    run_case("report-config-invalid-yaml", REPORT, in_run("config.yaml", BAD_YAML), "config.yaml"),
    run_case(
        "resume-config-python-tag", RESUME_MORE, in_run("config.yaml", PYTHON_TAG), "config.yaml"
    ),
    run_case("report-config-python-tag", REPORT, in_run("config.yaml", PYTHON_TAG), "config.yaml"),
    run_case("report-config-missing", REPORT, in_run("config.yaml", None), "config.yaml"),
    run_case(
        "resume-config-a-list",
        RESUME_MORE,
        in_run("config.yaml", "- search\n- task\n"),
        "config.yaml",
    ),
    run_case("resume-config-binary", RESUME_MORE, in_run("config.yaml", BINARY), "config.yaml"),
    run_case("export-row-width-1e9", EXPORT, genome_of_uid(widest), "uid {uid}"),
    run_case("report-row-width-1e9", REPORT, genome_of_uid(widest), "uid {uid}"),
    run_case(
        "export-row-1e6-layers",
        EXPORT,
        genome_of_uid(lambda g: json.loads(million_layers())),
        "uid {uid}",
    ),
    run_case(
        "report-row-1e6-layers",
        REPORT,
        genome_of_uid(lambda g: json.loads(million_layers())),
        "uid {uid}",
    ),
    run_case(
        "export-row-genome-not-json",
        EXPORT,
        journal("UPDATE individuals SET genome = 'not json' WHERE uid = {uid}"),
        "uid {uid}",
    ),
    run_case(
        "export-row-unknown-op",
        EXPORT,
        genome_of_uid(lambda g: {**g, "layers": [{"id": 1, "op": "transformer"}]}),
        "uid {uid}",
    ),
    run_case(
        "export-row-weights-path-missing",
        EXPORT,
        journal("UPDATE individuals SET weights = 'weights/999.pt' WHERE uid = {uid}"),
        "999.pt",
    ),
    run_case(
        "export-meta-input-shape-garbage",
        EXPORT,
        journal("UPDATE meta SET value = '\"abc\"' WHERE key = 'input_shape'"),
        "input_shape",
    ),
    run_case(
        "status-meta-not-json",
        STATUS,
        journal("UPDATE meta SET value = '{not json' WHERE key = 'state'"),
        JOURNAL,
    ),
    run_case("report-no-individuals-table", REPORT, journal("DROP TABLE individuals"), JOURNAL),
    run_case(
        "report-parents-not-json",
        REPORT,
        journal("UPDATE individuals SET parents = 'oops' WHERE uid = {uid}"),
        "uid {uid}",
    ),
    Case("status-missing-run", ("status", "{tmp}/nosuch"), ("nosuch",)),
    Case("resume-missing-run", ("resume", "{tmp}/nosuch"), ("nosuch",)),
    Case("export-missing-run", ("export", "{tmp}/nosuch", "--best"), ("nosuch",)),
    Case("status-run-is-a-file", ("status", "{tmp}/afile"), ("afile",), write("afile", "x\n")),
    run_case("export-unknown-uid", ("export", "{run}", "--individual", "999"), None, "999"),
    run_case("optimize-unknown-uid", ("optimize", "{run}", "--individual", "999"), None, "999"),
]

CASES = [*CONFIGS, *SETS, *FLAGS, *GENOMES, *SEEDS, *WEIGHTS, *RUNS]


# --- running one case -------------------------------------------------------------------------


class CaseTimeout(BaseException):
    """Past CASE_SECONDS (a BaseException, so no `except Exception` in evonas swallows it)."""


@contextlib.contextmanager
def bounded(seconds: float = CASE_SECONDS):
    """A time limit (SIGALRM) and an address-space limit for the code inside."""

    def on_alarm(signum, frame):
        raise CaseTimeout(f"still going after {seconds} s")

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as statm:
        size = int(statm.read().split()[0]) * resource.getpagesize()
    limit = size + MEMORY_HEADROOM
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    previous = signal.signal(signal.SIGALRM, on_alarm)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def in_new_process(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`python -m evonas ARGS` with the address-space limit; killed after 2 * CASE_SECONDS."""

    def limit() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (ISOLATED_MEMORY, hard))

    try:
        return subprocess.run([sys.executable, "-m", "evonas", *args], cwd=cwd,
                              capture_output=True, text=True, timeout=2 * CASE_SECONDS,
                              preexec_fn=limit)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise CaseTimeout(f"still going after {2 * CASE_SECONDS} s (killed)") from None


def snapshot(folder: Path) -> dict[str, str]:
    """Every file (its sha256) and folder under `folder`."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else "<dir>"
        for p in sorted(folder.rglob("*"))
    }


def changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    return [
        f"{what}: {', '.join(paths[:5])}"
        for what, paths in (("added", added), ("removed", removed), ("modified", changed))
        if paths
    ]


def last_line(exc: BaseException) -> str:
    text = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_a_bad_input_is_one_line_and_changes_nothing(case, good_run, tmp_path):
    ctx = SimpleNamespace(
        tmp=tmp_path, run=tmp_path / "run", uid=good_run.uid, other=good_run.other
    )
    (tmp_path / "tiny.yaml").write_text(TINY)
    if any("{run}" in arg for arg in case.args):
        shutil.copytree(good_run.path, ctx.run)
    if case.setup is not None:
        case.setup(ctx)
    args = [fill(arg, ctx) for arg in case.args]
    before = snapshot(tmp_path)
    problems = []
    try:
        if case.isolated:
            result = in_new_process(args, tmp_path)
        else:
            with bounded():
                result = cli(*args, cwd=tmp_path)
    except CaseTimeout as exc:
        problems.append(f"hang: {exc}")
        result = None
    except BaseException as exc:  # what a user would see as a traceback
        problems.append(f"traceback: {last_line(exc)}")
        result = None
    if result is not None:
        output = result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        if result.returncode != 2:
            problems.append(f"exit {result.returncode}")
        if "Traceback" in output:
            problems.append("a traceback in the output")
        if len(lines) != 1:
            problems.append(f"{len(lines)} lines on stderr: {result.stderr.strip()[-600:]!r}")
        elif result.returncode == 2:
            for fragment in (fill(f, ctx) for f in case.fragments):
                if fragment not in lines[0]:
                    problems.append(f"{fragment!r} not in {lines[0][:400]!r}")
    problems += [f"files {c}" for c in changes(before, snapshot(tmp_path))]
    assert not problems, f"evonas {' '.join(args)}: " + "; ".join(problems)


@pytest.mark.parametrize("content", [NOT_A_DATABASE, TEXT.encode()], ids=["random", "text"])
def test_load_run_refuses_a_journal_that_is_not_a_database(good_run, tmp_path, content):
    import evonas

    run = tmp_path / "run"
    shutil.copytree(good_run.path, run)
    (run / JOURNAL).write_bytes(content)
    before = snapshot(tmp_path)
    with bounded(), pytest.raises(ValueError) as caught:
        evonas.load_run(run).individuals  # noqa: B018 - the read is the point
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and JOURNAL in message, message
    assert not changes(before, snapshot(tmp_path))


def test_the_corpus_is_large_enough():
    assert len({case.id for case in CASES}) == len(CASES) >= 60
