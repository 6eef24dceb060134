"""The package's shape: no import cycle, small modules, the core independent of the harness.

Imports are read statically (every ``import``/``from ... import`` anywhere in a module, function
bodies included), so a cycle hidden behind a lazy import is still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import energylens

ROOT = Path(energylens.__file__).parent
MAX_LINES = 600
# Modules that may import the measurement harness: the harness itself, its CLI and the calibration
# package (which fits profiles to harness records). Nothing else — the core runs without it.
HARNESS_USERS = ("energylens.measure", "energylens.cli.measure_cmd", "energylens.calibration")


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        name = ".".join(rel.parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text())
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            # ``from pkg import sub`` runs pkg/__init__ and imports the submodule: both are dependencies
            targets = [base] + [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {m: _imports(m, p, known) for m, p in mods.items()}


def test_no_import_cycle():
    graph = _graph()
    edges = graph
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_no_module_over_600_lines():
    big = {m: n for m, p in _modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def test_core_never_imports_the_measurement_harness():
    bad = {m: sorted(t for t in ts if t.startswith("energylens.measure"))
           for m, ts in _graph().items() if not m.startswith(HARNESS_USERS)}
    bad = {m: ts for m, ts in bad.items() if ts}
    assert not bad, f"core modules importing energylens.measure: {bad}"


# Modules allowed to turn watts into joules: the cost model, and the hardware profiles / harness /
# calibration that read or fit the coefficients themselves.
POWER_OWNERS = ("energylens.cost", "energylens.hardware", "energylens.measure", "energylens.calibration")
POWER_ARITHMETIC = r"idle_power_w\s*[*+-]|[*+-]\s*[\w.]*idle_power_w\b|power_limit_w\s*-|\*\s*[\w.]*power_limit_w\b"


def test_power_is_computed_in_cost_only():
    import re

    bad = []
    for name, path in _modules().items():
        if name.startswith(POWER_OWNERS):
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(POWER_ARITHMETIC, line.split("#")[0]):
                bad.append(f"{name}:{i}: {line.strip()}")
    assert not bad, "power arithmetic outside energylens/cost (use energylens.cost.power):\n" + "\n".join(bad)
