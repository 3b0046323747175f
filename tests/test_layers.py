"""The packages stand in layers, and an import never points up (docs: common/__init__.py):

    common -> data -> models -> diffusion -> training -> evaluation -> the programs

A package imports only from itself and the layers below it; the programs (the stage scripts,
sample.py, evaluate.py, explore.py with explorer/, docs/, benchmarks/) may import any layer.
The check reads every import statement, those inside functions too.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["common", "data", "models", "diffusion", "training", "evaluation"]
PROGRAMS = ["explorer", "docs"]  # packages of programs: the top, like the scripts


def packages() -> list[str]:
    return sorted(p.name for p in ROOT.iterdir()
                  if (p / "__init__.py").is_file() and p.name not in ("tests", ".venv"))


def imported_packages(path: Path) -> set[str]:
    """The project packages that a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        found |= {name.split(".")[0] for name in names}
    return found & set(packages())


def test_every_package_has_a_place_in_the_layers():
    assert sorted(LAYERS + PROGRAMS) == packages(), \
        "a new package: give it a place in LAYERS (a layer) or PROGRAMS (the top)"


@pytest.mark.parametrize("package", LAYERS)
def test_a_package_imports_only_from_the_layers_below_it(package):
    allowed = set(LAYERS[:LAYERS.index(package) + 1])
    wrong = {f"{path.relative_to(ROOT)} imports {sorted(imported_packages(path) - allowed)}"
             for path in (ROOT / package).rglob("*.py") if imported_packages(path) - allowed}
    assert not wrong, f"{package} may import only from {sorted(allowed)}: {sorted(wrong)}"


def test_there_is_no_import_cycle_between_packages():
    edges = {p: set() for p in packages()}
    for package in edges:
        for path in (ROOT / package).rglob("*.py"):
            edges[package] |= imported_packages(path) - {package}

    def reaches(start: str, goal: str, seen: set) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n}))
                   for n in edges[start])

    cycles = sorted(p for p in edges if reaches(p, p, {p}))
    assert not cycles, f"packages on an import cycle: {cycles}"
