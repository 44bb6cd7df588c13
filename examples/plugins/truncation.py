"""An example strategy plugin: (mu + lambda) with truncation selection.

    search:
      strategy: examples/plugins/truncation.py:truncation

The factory is called with (search settings, variation, seen) and returns an object of the
`evonas.strategies.Strategy` protocol: `name`, `offspring` (children per generation),
`initial_size`, `population`, and the lifecycle `start(evaluated)`, `ask(n) -> children`,
`tell(children) -> population`. `BaseStrategy` gives the settings, `self.variation` (which
breeds a child from the parents a selection function returns), `self.rng` (the run's: use no
other randomness) and `survive`.

An individual's `fitness.wvalues` puts better first on every objective (DEAP's weighted values);
failures and candidates outside `search.constraints` rank last.
"""

from evonas.strategies import BaseStrategy


class Truncation(BaseStrategy):
    """Parents drawn uniformly from the better half of the population; the best `population`
    of parents and children survive."""

    name = "truncation"

    def ask(self, n):
        ranked = sorted(self.population, key=lambda ind: ind.fitness.wvalues, reverse=True)
        better = ranked[: max(1, len(ranked) // 2)]
        return [
            self.variation.vary(lambda k: [self.rng.choice(better) for _ in range(k)])
            for _ in range(n)
        ]

    def tell(self, children):
        return self.survive("best", children)


def truncation(search, variation, seen):
    return Truncation(search, variation, seen)
