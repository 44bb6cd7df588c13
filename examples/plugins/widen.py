"""An example operator plugin: widen one layer to the next width the space offers.

    search:
      operators: {add_layer: 1, change_op: 1, "examples/plugins/widen.py:widen": 2}

A mutation is `fn(genome, space, rng) -> Genome`; a crossover `fn(a, b, space, rng) -> Genome`.
Draw every random choice from `rng` (the run's), so a run stays reproducible. Keep the ids of
the genes you carry over: a child that inherits weights is matched to its parent by gene id.
Return the genome unchanged when the operator does not apply; evonas then draws again. evonas
repairs what you return with `space.repair` and discards it if it cannot be built.
"""

from dataclasses import replace


def widen(genome, space, rng):
    layers = [i for i, gene in enumerate(genome.genes) if gene.op in ("conv", "residual", "dense")]
    if not layers:
        return genome
    index = rng.choice(layers)
    gene = genome.genes[index]
    key, choices = ("units", space.units) if gene.op == "dense" else ("width", space.widths)
    wider = [c for c in sorted(choices) if c > gene.params[key]]
    if not wider:
        return genome
    genes = list(genome.genes)
    genes[index] = gene.with_params(**{key: wider[0]})
    return replace(genome, genes=tuple(genes))
