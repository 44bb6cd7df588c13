"""Gradient-based architecture search as a session of the run (torch-free). `GradientSearch.run()`:

1. Train the supernet (`evonas.supernet`) epoch by epoch: each epoch is one job for a
   worker, continuing from the checkpoint the previous epoch left in `RUN_DIR/supernet/`;
   its derived genome, architecture weights and losses are journaled (table `supernet`) as
   it ends. A resumed run continues after the last journaled epoch, from that checkpoint.
2. Derive: the strongest op of each edge under the final architecture weights and, with
   `search.gradient.top` K > 1, the K - 1 next most probable cells (each differs from the
   strongest on one edge).
3. Evaluate the derived genomes with the run's own evaluator (training, a table lookup or a
   user's function) as generation 0, so they sit in the journal, analysis and report like any
   strategy's results, and `--seed-run` of this run seeds an evolutionary search with them.
4. Return how the session ended, as `evonas.evolve.Evolution` does (it is one, with another
   generation 0 and no generations after it).
"""

from __future__ import annotations

from typing import Any

from evonas.arch_weights import arch_weight_table, derived_operations
from evonas.evolve import Evolution
from evonas.records import OK, Job, Result, SupernetEpoch, evaluation_seed
from evonas.store import RunDirError


class GradientSearch(Evolution):
    """A gradient-based search session (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = self.config.search.gradient
        self.epochs = self.store.journaled_supernet()
        self.termination.generations = 0  # generation 0, the derived cells, is the last
        self.done = (f"supernet trained {self.settings.epochs} epochs ({self.settings.method}); "
                     "derived cell(s) evaluated")  # fmt: skip

    def start(self) -> bool:
        self.reporters.started(len(self.ledger.journal))
        gradient = self.settings
        if self.epochs:
            done = len(self.epochs)
            self.reporters.info(f"supernet: {done} of {gradient.epochs} epochs journaled")
        while len(self.epochs) < gradient.epochs:
            if self.stopping() or not self.train_epoch(len(self.epochs) + 1):
                return False
        space = self.variation.space
        cells = derived_operations(self.epochs[-1].arch, space.ops, gradient.top)
        origin = f"supernet:{gradient.method}"
        initial = [self.ledger.new(space.genome(ops), 0, operator="gradient", origin=origin)
                   for ops in cells]  # fmt: skip
        return self.generation_zero(initial)

    def has_next(self) -> bool:
        return False  # the derived cells are the whole search

    def train_epoch(self, epoch: int) -> bool:
        """Run one supernet epoch on a worker and journal it; False when it failed or a stop
        came before it started."""
        self.dispatcher.submit(self.epoch_job(epoch))
        results: list[Result] = []
        while not results:
            results = self.dispatcher.results(before_waiting=self.store.flush)
            if not results and not self.dispatcher.busy:
                return False  # stopped before it began
        result = results[0]
        if result.status != OK:
            self.failure = f"supernet epoch {epoch} {result.status}: {result.error}"
            self.reporters.info(self.failure)
            return False
        space = self.variation.space
        genome = space.genome(derived_operations(result.arch, space.ops)[0])
        record = SupernetEpoch(epoch, genome, result.arch, result.metrics, result.device,
                               result.worker, result.started_at, result.finished_at)  # fmt: skip
        self.store.record_supernet_epoch(record)
        if epoch > 1:
            self.store.supernet_path(epoch - 1).unlink(missing_ok=True)  # once this one is safe
        self.epochs.append(record)
        self.reporters.info(self.describe(record))
        if self.config.search.plot_every:
            self.draw()
        return True

    def draw(self) -> None:
        """plots/arch_weights.png: the architecture weights so far."""
        from evonas.plots import plot_arch_weights, save_figure, titled  # matplotlib: lazily

        figure = plot_arch_weights(arch_weight_table(self.epochs))
        save_figure(titled(figure, self.store.run_dir.name), self.store.run_dir / "plots" /
                    "arch_weights.png")  # fmt: skip

    def epoch_job(self, epoch: int) -> Job:
        gradient, training = self.settings, self.config.training
        previous = self.store.supernet_path(epoch - 1) if epoch > 1 else None
        if previous is not None and not previous.exists():
            raise RunDirError(f"{previous}: the supernet after epoch {epoch - 1} is missing; "
                              "the gradient search cannot continue without it")  # fmt: skip
        settings = {
            **gradient.model_dump(exclude={"task", "top"}),
            "ops": list(self.variation.space.ops),
        }
        task = gradient.task or self.config.task
        return Job(
            uid=-epoch,  # never an individual's
            genome={},
            seed=evaluation_seed(self.config.seed, -1),
            task=task.model_dump(),
            training={
                "threads": training.threads,
                "loader": training.loader,
                "loader_workers": training.loader_workers,
            },  # fmt: skip
            device=self.ledger.device,
            lease=self.ledger.lease,
            resume_from=str(previous) if previous else None,
            checkpoint=str(self.store.supernet_path(epoch)),
            supernet=settings,
        )

    def describe(self, record: SupernetEpoch) -> str:
        m = record.metrics
        cell = self.variation.space.key(record.genome)
        return (f"supernet epoch {record.epoch}/{self.settings.epochs}: train loss "
                f"{m['train_loss']:.4g}, arch loss {m['arch_loss']:.4g}, supernet val accuracy "
                f"{m['val_accuracy']:.4g} ({m['epoch_seconds']:.1f} s); cell {cell}")  # fmt: skip
