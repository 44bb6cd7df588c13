"""The evolution loop (torch-free), resumable by replay. `Evolution.run()`:

    1. Generation 0: seeds first (with their weights), then samples or mutants of the seeds;
       evaluate them; the strategy starts from them.
    2. While the termination allows and no stop was requested:
       a. breed: ask the strategy for children, as many as the window allows (a generation at
          a time; in the steady state one child at a time, `async_window` of them in flight);
       b. evaluate: results stream back from the workers and each is journaled as it arrives
          (journaled results are replayed and identical work is reused: `Ledger`);
       c. join: once the window needs room (or nothing more will be bred), tell the strategy the
          oldest children, in breeding order, when all of them are evaluated; it selects;
       d. when a generation has joined: journal it, keep the weights worth keeping, report.
    3. Return how the session ended: finished, stopped (a run limit), interrupted (a signal) or
       failed (every recent evaluation failed: the run could not mean anything).

All randomness flows from one `random.Random(seed)`; evaluation seeds depend only on (seed, uid):
the same config and seed give the same history whatever the workers or the order results arrive
in. A resume runs the same loop, taking each journaled result instead of evaluating it.
"""

from __future__ import annotations

import random
import signal
import time
from collections import deque
from dataclasses import dataclass
from functools import partial

from evonas.config import Config
from evonas.devices import placement
from evonas.ledger import Ledger
from evonas.objectives import population_stats
from evonas.operators import Variation, operator_weights
from evonas.parallel import Dispatcher
from evonas.pools import close_pools, make_pool
from evonas.records import FAILURES, GenerationRecord, Individual
from evonas.reporters import GenerationSummary, Outcome, Reporters
from evonas.seeds import Seed, generation_zero
from evonas.spaces import Space
from evonas.store import Store
from evonas.strategies import make_strategy
from evonas.termination import Termination
from evonas.weights import WeightPolicy

FINISHED, STOPPED, INTERRUPTED, FAILED = "finished", "stopped", "interrupted", "failed"


@dataclass
class Batch:
    """Children bred by one `ask` (a generation, or one child in the steady state)."""

    children: list[Individual]
    closes: bool  # the last batch of its generation
    checked: int = 0  # children known to be resolved (they never go back to pending)

    def resolved(self) -> bool:
        while self.checked < len(self.children) and self.children[self.checked].resolved:
            self.checked += 1
        return self.checked == len(self.children)


class Evolution:
    """One session of a run (see the module docstring)."""

    def __init__(self, config: Config, store: Store, space: Space, seeds: list[Seed],
                 reporters: Reporters, elapsed_before: float = 0.0) -> None:  # fmt: skip
        search, parallel, objectives = config.search, config.parallel, config.search.objectives
        self.config, self.store, self.seeds, self.reporters = config, store, seeds, reporters
        weights = operator_weights(search.operators, space, config.training.inherit_weights)
        self.variation = Variation(space, weights, random.Random(config.seed))
        teacher = next(((s.genome, s.weights) for s in seeds if s.weights), None)
        self.weights = WeightPolicy(config, store.run_dir, space, teacher, objectives)
        where = placement(parallel)
        self.ledger = Ledger(config, space, store, self.weights, where.device, where.lease)
        self.strategy = make_strategy(config.strategy, search, self.variation, self.ledger.seen)
        self.offspring = self.strategy.offspring
        self.termination = Termination.of(search, self.offspring)
        self.done = f"all {self.termination.generations} generations done"  # how a finish reads
        chance = (store.meta().get("chance") or {}).get(objectives[0].name)  # for "best"
        self.statistics = partial(population_stats, objectives=objectives, chance=chance)
        pool = make_pool(parallel.backend, parallel.n_jobs, parallel.crash_retries,
                         parallel.address, where.resources)  # fmt: skip
        self.stopping = lambda: self.stop_signal is not None
        self.dispatcher = Dispatcher(pool, parallel.n_jobs, parallel.crash_retries, self.stopping)
        self.batch = 1 if search.async_window else self.offspring  # children per ask
        self.window = search.async_window or self.offspring
        self.asks_per_generation = self.offspring // self.batch
        self.journaled_generations = store.journaled_generations()
        self.batches: deque[Batch] = deque()  # bred, not joined, oldest first
        self.asked = self.outstanding = self.new_generations = 0  # asks, in `batches`, journaled
        self.joined: list[Individual] = []
        self.by_generation: dict[int, list[Individual]] = {}
        self.limit = self.failure = self.stop_signal = None  # why breeding stops, if it does
        self.started, self.elapsed_before = time.monotonic(), elapsed_before

    def run(self) -> Outcome:
        try:
            if self.start():
                while self.has_next():
                    self.next()
            return self.end()
        except BaseException as exc:
            self.dispatcher.close(kill=True)
            stopped = isinstance(exc, KeyboardInterrupt)  # a second Ctrl-C: stop at once
            state, reason = (INTERRUPTED, "stopped at once") if stopped else (FAILED, str(exc))
            self.store.note_end(state, reason)
            raise

    # 1. generation 0 ----------------------------------------------------------------------------

    def start(self) -> bool:
        self.reporters.started(len(self.ledger.journal))
        size, fill, seeds = self.strategy.initial_size, self.config.search.seed_fill, self.seeds
        initial = generation_zero(seeds, size, fill, self.ledger, self.variation, self.stopping)
        return not self.stopping() and self.generation_zero(initial)  # a signal while sampling

    def generation_zero(self, initial: list[Individual]) -> bool:
        """Evaluate generation 0 and start the strategy from it; False when a stop came first."""
        self.reporters.generation_started(0, len(initial))
        self.evaluate(initial)
        batch = Batch(initial, closes=True)
        while not batch.resolved() and self.collect():
            pass
        if not batch.resolved():
            return False
        self.strategy.start(initial)
        self.joined += initial
        self.finish_generation(0, initial, initial)
        return True

    # 2. breed, evaluate, join -------------------------------------------------------------------

    def has_next(self) -> bool:
        return self.stop_signal is None and bool(self.batches or self.may_breed())

    def may_breed(self) -> bool:
        more = self.asked < self.termination.generations * self.asks_per_generation
        return more and self.limit is None and self.failure is None

    def next(self) -> None:
        self.breed()
        while self.batches and not self.batches[0].resolved() and self.collect():
            pass
        self.join()

    def breed(self) -> None:
        """a. Children up to the window; a run limit is checked where a generation starts."""
        while self.may_breed() and self.outstanding + self.batch <= self.window:
            generation, nth = divmod(self.asked, self.asks_per_generation)
            generation += 1
            if nth == 0:
                if generation not in self.journaled_generations:
                    evaluations = len(self.ledger.by_uid)
                    self.limit = self.termination.limit(evaluations, self.offspring, self.elapsed())
                    if self.limit:
                        return
                self.reporters.generation_started(generation, self.offspring)
            children = [self.ledger.child(c, generation) for c in self.strategy.ask(self.batch)]
            self.by_generation.setdefault(generation, []).extend(children)
            self.evaluate(children)
            self.batches.append(Batch(children, closes=nth + 1 == self.asks_per_generation))
            self.asked += 1
            self.outstanding += len(children)

    def evaluate(self, individuals: list[Individual]) -> None:
        """b. Replayed, copied or queued for a worker (the ledger decides)."""
        for job in self.ledger.jobs(individuals, self.joined):
            self.dispatcher.submit(job)
        for ind in individuals:
            if ind.resolved:
                self.reporters.evaluated(ind, self.ledger.source(ind))

    def collect(self) -> bool:
        """b. Wait for results and journal them; False when nothing is left in flight."""
        results = self.dispatcher.results(before_waiting=self.store.flush)
        for result in results:
            for ind in self.ledger.record(result):  # the original (or those stopped), copies
                self.reporters.evaluated(ind, self.ledger.source(ind))
        for job in self.ledger.take_jobs():  # continued from a rung
            self.dispatcher.submit(job)
        return bool(results)

    def join(self) -> None:
        """c. and d. Tell the strategy the oldest evaluated children when the window needs room
        (or nothing more will be bred), and finish the generations that are complete."""
        while self.batches and self.batches[0].resolved():
            if self.outstanding + self.batch <= self.window and self.may_breed():
                return
            batch = self.batches.popleft()
            self.outstanding -= len(batch.children)
            population = self.strategy.tell(batch.children)
            self.joined += batch.children
            if batch.closes:
                generation = batch.children[-1].generation
                self.finish_generation(generation, population, self.by_generation[generation])

    def finish_generation(self, generation: int, population: list[Individual],
                          evaluated: list[Individual]) -> None:  # fmt: skip
        """d. Journal the generation (a replayed one must agree), retention, reporters."""
        failure = self.termination.failure(evaluated)
        uids = tuple(ind.uid for ind in population)
        if generation in self.journaled_generations:  # a resumed run goes on past a failure
            self.store.check_replay(generation, uids, self.journaled_generations[generation])
            return
        self.failure = self.failure or failure
        stats = self.statistics([i.metrics for i in population if i.counts])
        failed = sum(ind.status in FAILURES for ind in evaluated)
        record = GenerationRecord(generation, uids, len(evaluated), failed, stats)
        meta = {"elapsed_seconds": self.elapsed(), "generation": generation}
        self.store.record_generation(record, meta)
        self.new_generations += 1
        if self.weights.keeps:
            in_flight = [ind for batch in self.batches for ind in batch.children]
            keeping = self.weights.worth_keeping
            self.store.drop_weights(keeping(population, self.joined, in_flight,
                                            self.ledger.weights_uid))  # fmt: skip
        summary = GenerationSummary(generation, self.termination.generations, evaluated, failed,
                                    stats, self.elapsed())  # fmt: skip
        self.reporters.generation_finished(summary)

    # 3. the end ---------------------------------------------------------------------------------

    def end(self) -> Outcome:
        while self.dispatcher.busy:  # after a stop: what is in flight finishes and is journaled
            self.collect()
        self.dispatcher.close()
        close_pools()  # a cluster this run started (local loky workers stay warm)
        unmet = self.termination.unmet(self.ledger.by_uid.values())  # no feasible result
        if self.stop_signal is not None:
            state, reason = INTERRUPTED, signal.Signals(self.stop_signal).name
        elif self.failure or unmet:
            state, reason = FAILED, self.failure or unmet
        elif self.limit:
            state, reason = STOPPED, self.limit
        else:
            state, reason = FINISHED, self.done
            if not self.new_generations:
                self.reporters.info("the run was already finished; nothing to do")
        outcome = Outcome(state, reason, self.elapsed())
        self.store.set_meta({"state": state, "reason": reason, "elapsed_seconds": outcome.elapsed})
        self.reporters.ended(outcome)
        return outcome

    def request_stop(self, signum: int) -> None:
        """Stop dispatching; evaluations in flight finish and are journaled."""
        self.stop_signal = signum

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.started
