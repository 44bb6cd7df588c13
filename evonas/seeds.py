"""Seeding generation 0 from genome files and earlier runs, with their weights (torch-free).

At the start of a run every seed is copied into `RUN_DIR/seeds/` (`NNN.yaml` with its origin,
`NNN.pt` when it has weights), so the run is self-contained and a resume replays exactly the same
seeds whatever happened to the original files since.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from evonas.genome import Genome, GenomeError, genome_header, load_genome, parse_genome

if TYPE_CHECKING:
    from evonas.config import Search
    from evonas.ledger import Ledger
    from evonas.operators import Variation
    from evonas.records import Individual
    from evonas.spaces import Space


@dataclass(frozen=True)
class Seed:
    genome: Genome
    origin: str  # "file:PATH" or "run:RUN_DIR#uidN"
    weights: Path | None
    input_shape: tuple[int, ...] | None = None  # what the genome was made for, when known


def collect(search: Search) -> list[Seed]:
    """The seeds a config asks for: genome files (weights beside them, same stem `.pt`) and the
    Pareto front (or top K on the first objective) of an earlier run."""
    seeds = []
    for path in search.seed_genomes:
        path = Path(path)
        weights = path.with_suffix(".pt")
        genome = load_genome(path)
        made_for = genome_header(path).get("input_shape")
        shape = tuple(made_for) if made_for else None
        seeds.append(Seed(genome, f"file:{path}", weights if weights.exists() else None, shape))
    if search.seed_run:
        seeds += _from_run(Path(search.seed_run), search.seed_top)
    return seeds


def _from_run(run_dir: Path, top: int) -> list[Seed]:
    from evonas.analysis import Run

    run = Run(run_dir)
    if top:
        from evonas.objectives import successful

        first = run.objectives[0]
        ok = successful(run.individuals, [first])  # trained, and within the run's constraints
        chosen = ok.sort_values(first.name, ascending=first.goal == "min").head(top)
    else:
        chosen = run.pareto()
    seeds = []
    for _, row in chosen.iterrows():
        source = row
        if row.get("cached_from") == row.get("cached_from") and row.get("cached_from") is not None:
            source = run.individuals.set_index("uid", drop=False).loc[int(row["cached_from"])]
        weights = source.get("weights")
        path = run.path / weights if isinstance(weights, str) else None
        seeds.append(Seed(run.genome(int(row["uid"])), f"run:{run_dir}#uid{row['uid']}", path))
    return seeds


def store(seeds: list[Seed], run_dir: Path) -> None:
    if not seeds:
        return
    folder = run_dir / "seeds"
    folder.mkdir(parents=True, exist_ok=True)
    for index, seed in enumerate(seeds):
        data = {**seed.genome.to_dict(), "source": seed.origin}
        (folder / f"{index:03d}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        if seed.weights is not None:
            shutil.copyfile(seed.weights, folder / f"{index:03d}.pt")


def load(run_dir: Path) -> list[Seed]:
    folder = run_dir / "seeds"
    seeds = []
    for path in sorted(folder.glob("*.yaml")) if folder.exists() else []:
        data = yaml.safe_load(path.read_text())
        origin = data.pop("source", f"file:{path}")
        weights = path.with_suffix(".pt")
        genome = parse_genome(data, where=str(path))
        seeds.append(Seed(genome, origin, weights if weights.exists() else None))
    return seeds


def check(seeds: list[Seed], space: Space, input_shape: tuple[int, ...] | None) -> None:
    """A seed must be buildable for this task's input, and made for it when its file says what
    it was made for; values outside the space's choices are allowed (its mutations stay in the
    space)."""
    for seed in seeds:
        if seed.input_shape and input_shape and tuple(seed.input_shape) != tuple(input_shape):
            raise GenomeError(
                f"{seed.origin}: made for input {tuple(seed.input_shape)}, but this task's input "
                f"is {tuple(input_shape)}"
            )
        problem = space.infeasible(seed.genome)
        if problem is None:
            continue
        if space.has_shapes:
            raise GenomeError(f"{seed.origin}: does not fit this task's input: {problem}")
        raise GenomeError(f"{seed.origin}: not a genome of this space: {problem}")


def check_weights(seeds: list[Seed], input_shape: tuple[int, ...], num_classes: int) -> None:
    """Each seed's weights must be a plain state_dict of its own genome's model: refused before
    the run, not at its first evaluation. Imports torch (once, only when a seed has weights)."""
    with_weights = [seed for seed in seeds if seed.weights is not None]
    if not with_weights:
        return
    from evonas.builder import build
    from evonas.weights import UnsafeFileError, load_state_dict

    for seed in with_weights:
        state = load_state_dict(seed.weights)  # never unpickles anything but tensors
        if not isinstance(state, dict):
            raise UnsafeFileError(f"{seed.weights}: not a state_dict (a mapping of tensors)")
        model = build(seed.genome, tuple(input_shape), num_classes)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            first = " ".join(str(exc).split())[:160]
            raise GenomeError(
                f"{seed.weights}: not the weights of {seed.origin} ({first})"
            ) from None


def generation_zero(
    seeds: list[Seed],
    size: int,
    fill: str,
    ledger: Ledger,
    variation: Variation,
    stopping: Callable[[], bool] = lambda: False,
) -> list[Individual]:
    """Seeds first (with their weights), then `size` filled up with mutants of the seeds
    (`fill: mutate`) or fresh samples. Stops early (an incomplete list) once `stopping()`: a
    huge population must not keep a signal waiting."""
    population = []
    for seed in seeds:
        ind = ledger.new(seed.genome, 0, operator="seed", origin=seed.origin)
        ind.init_weights = str(seed.weights.resolve()) if seed.weights else None
        population.append(ind)
    seeded, rng = list(population), variation.rng
    while len(population) < max(size, len(seeded)) and not stopping():
        if seeded and fill == "mutate":
            child = variation.vary(lambda k: [rng.choice(seeded) for _ in range(k)], True)
            population.append(ledger.child(child, 0))
        else:
            population.append(ledger.new(variation.sample(), 0))
    return population
