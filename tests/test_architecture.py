"""The house rules that keep evonas simple, checked on the source itself."""

import ast
import subprocess
import sys

from tests.conftest import ROOT

PACKAGE = ROOT / "evonas"
# The evolution loop and everything it stands on never import torch (workers do).
TORCH_FREE = ["evonas.evolve", "evonas.launch", "evonas.ledger", "evonas.strategies",
              "evonas.operators", "evonas.spaces", "evonas.genome", "evonas.store",
              "evonas.records", "evonas.objectives", "evonas.weights", "evonas.config",
              "evonas.reporters", "evonas.parallel", "evonas.pools", "evonas.seeds",
              "evonas.graph", "evonas.channels", "evonas.graph_operators", "evonas.fidelity",
              "evonas.halving", "evonas.constraints", "evonas.trackers",
              "evonas.encodings", "evonas.predictors", "evonas.surrogate", "evonas.gradient",
              "evonas.arch_weights",
              "evonas.dashboard"]  # fmt: skip


def imports_of(path) -> set[str]:
    """Every evonas module a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("evonas"):
            if node.module == "evonas":
                found |= {f"evonas.{alias.name}" for alias in node.names}
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("evonas.")}
    modules = {f"evonas.{p.stem}" for p in PACKAGE.glob("*.py")}
    return found & modules


def test_no_two_modules_import_each_other_and_no_cycles():
    graph = {f"evonas.{p.stem}": imports_of(p) for p in PACKAGE.glob("*.py")}
    graph.pop("evonas.__init__")  # re-exports load lazily
    state: dict[str, int] = {}

    def visit(module, trail):
        if state.get(module) == 1:
            raise AssertionError("import cycle: " + " -> ".join([*trail, module]))
        if state.get(module) == 2:
            return
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            visit(target, [*trail, module])
        state[module] = 2

    for module in sorted(graph):
        visit(module, [])


def test_the_loop_is_torch_free():
    code = ("import sys; " + "; ".join(f"import {m}" for m in TORCH_FREE)
            + "; heavy = [m for m in ('torch',) if m in sys.modules]; print(heavy)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_loop_reads_like_its_docstring():
    assert len((PACKAGE / "evolve.py").read_text().splitlines()) <= 250


def test_no_file_names_a_path_of_the_development_machine():
    tracked = subprocess.run(["git", "ls-files"], capture_output=True, text=True, cwd=ROOT)
    if tracked.returncode != 0:  # not a git checkout (an unpacked sdist): read what is here
        files = [p for p in ROOT.rglob("*") if p.is_file() and ".venv" not in p.parts]
    else:
        files = [ROOT / name for name in tracked.stdout.splitlines()]
    # the shared folder beside a checkout, and where this checkout and that folder live
    shared = "/".join(["..", "shared"])  # spelled apart so that this file does not match itself
    needles = (shared, str(ROOT), str(ROOT.parent / "shared"))
    for path in files:
        if path.suffix in (".gz", ".png", ".pt") or not path.exists():
            continue
        text = path.read_text(errors="ignore")
        for needle in needles:
            assert needle not in text, f"{path.relative_to(ROOT)} names {needle}"
