"""evonas: evolutionary neural-architecture search with a resumable, analysable journal."""

from evonas.genome import Gene, Genome, GenomeError, load_genome, parse_genome, save_genome
from evonas.objectives import Objective
from evonas.spaces import Nb201Space, SequentialSpace

__all__ = [
    "Gene",
    "Genome",
    "GenomeError",
    "Objective",
    "SequentialSpace",
    "Nb201Space",
    "load_genome",
    "parse_genome",
    "save_genome",
    "load_run",
    "compare",
    "Run",
    "search",
    "build",
    "load_model",
    "report_epoch",
    "Stopped",
]
__version__ = "0.1.0"

_LAZY = {
    "load_run": "evonas.analysis",
    "compare": "evonas.analysis",
    "Run": "evonas.analysis",
    "search": "evonas.launch",
    "build": "evonas.builder",
    "load_model": "evonas.export",
    "report_epoch": "evonas.fidelity",
    "Stopped": "evonas.fidelity",
}


def __getattr__(name: str):
    """Heavier parts (pandas, matplotlib, torch) load on first use, not on `import evonas`."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'evonas' has no attribute {name!r}")
