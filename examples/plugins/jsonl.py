"""An example reporter plugin: every result and generation as a line of JSON.

    reporters: [examples/plugins/jsonl.py:jsonl]

The factory is called with (run directory, config) and returns an `evonas.reporters.Reporter`;
override the hooks you need: `started(replayed)`, `generation_started(generation, size)`,
`evaluated(individual, source)` (source: worker, cache, or journal when a resumed run replays),
`generation_finished(summary)`, `info(line)`, `ended(outcome)`. Hooks run in the search's process
between evaluations: keep them quick, and do not raise.
"""

import json

from evonas.reporters import Reporter


class JsonLines(Reporter):
    def __init__(self, path):
        self.path = path

    def write(self, record):
        with open(self.path, "a") as out:
            out.write(json.dumps(record) + "\n")

    def evaluated(self, individual, source):
        if source != "journal":  # a resumed run replays what this file already has
            self.write({"uid": individual.uid, "status": individual.status,
                        "metrics": individual.metrics, "source": source})  # fmt: skip

    def generation_finished(self, summary):
        self.write({"generation": summary.generation, "stats": summary.stats})


def jsonl(run_dir, config):
    return JsonLines(run_dir / "events.jsonl")
