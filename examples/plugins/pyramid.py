"""An example search-space plugin: chains whose convolutions never get narrower.

    space:
      kind: examples/plugins/pyramid.py:pyramid
      widths: [8, 16, 32]

The factory is called with (config, task info: input_shape, num_classes) and returns an object
of the `evonas.spaces.Space` protocol. Its genomes must be ones the built-in trainer can build
(chains or graphs), unless `training.evaluator` evaluates them. Here the sequential space of the
config's choices is extended: every genome is repaired into a pyramid, so the built-in chain
operators (its `kind` stays `sequential`) and weight inheritance work unchanged.
"""

from dataclasses import dataclass, fields

from evonas.spaces import SequentialSpace, sequential_space


@dataclass(frozen=True)
class PyramidSpace(SequentialSpace):
    def repair(self, genome):
        genome = super().repair(genome)
        convolutions = [i for i, gene in enumerate(genome.genes) if gene.op in ("conv", "residual")]
        widths = sorted(genome.genes[i].params["width"] for i in convolutions)
        genes = list(genome.genes)
        for index, width in zip(convolutions, widths):
            genes[index] = genes[index].with_params(width=width)  # the same gene id
        return type(genome)(genes=tuple(genes), training=genome.training)

    def sample(self, rng):
        return self.repair(super().sample(rng))

    def problems(self, genome):
        found = super().problems(genome)
        widths = [g.params["width"] for g in genome.genes if g.op in ("conv", "residual")]
        if widths != sorted(widths):
            found.append(f"convolution widths {widths} get narrower")
        return found


def pyramid(config, info):
    base = sequential_space(config, info)
    return PyramidSpace(**{f.name: getattr(base, f.name) for f in fields(base)})
