"""evonas: evolutionary neural-architecture search with a resumable, analysable journal."""

from evonas.genome import Gene, Genome, GenomeError, load_genome, parse_genome, save_genome
from evonas.spaces import SequentialSpace

__all__ = [
    "Gene",
    "Genome",
    "GenomeError",
    "SequentialSpace",
    "load_genome",
    "parse_genome",
    "save_genome",
]
__version__ = "0.1.0"
