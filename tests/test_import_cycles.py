"""No import cycles inside `qallegro/` and `experiments/`.

A cycle works until someone imports the modules in a different order, then fails with "cannot import name X
from partially initialized module". The checker reads the source with `ast` (nothing is imported, so the test is
fast and cannot itself be broken by a cycle) and builds a graph of modules of the checked packages:

* A module is a ``.py`` file; a package ``qallegro.x`` is its ``qallegro/x/__init__.py``.
* There is an edge M -> N for every ``import N`` / ``from N import ...`` in M that names a module N of the
  checked packages, wherever it is written: at module level, or lazily inside a function or method (a lazy
  import only postpones the cycle to the first call).
* ``from P import name`` is an edge to the submodule ``P.name`` when ``P/name.py`` (or ``P/name/__init__.py``)
  exists, otherwise to ``P`` itself (``name`` is then an attribute of P, e.g. a re-export of its
  ``__init__``). Relative imports are resolved against M's package first.
* Importing ``a.b.c`` also executes ``a/__init__`` and ``a/b/__init__``, but those parent edges are NOT added:
  every submodule would otherwise point at its package's ``__init__``, and every ``__init__`` that re-exports
  its submodules would then form a cycle with each of them, which is the normal, working layout. So a
  package's ``__init__`` importing its own submodules is not a cycle; a submodule that *explicitly* imports its
  package (``from qallegro.data import X`` inside ``qallegro/data/structure.py``) while that ``__init__``
  imports the submodule is one, and is reported.
* A module importing itself counts as a cycle.
* Imports under ``if TYPE_CHECKING:`` are skipped: they never run. Dynamic imports
  (``importlib.import_module``, as in experiments/run.py) are invisible to the checker.

A cycle is a strongly connected component (Tarjan) of more than one module, or a self-import. Each is printed
as readable chains ``a -> b -> a`` with the file:line of every import on the way.
"""

from __future__ import annotations

import ast
import dataclasses
from collections import deque
from pathlib import Path
from typing import Dict, List, Sequence, Set, Tuple

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("qallegro", "experiments")


@dataclasses.dataclass(frozen=True)
class ImportSite:
    """Where an import is written: file relative to the root, 1-based line, and whether it runs lazily."""

    path: str
    line: int
    lazy: bool

    def __str__(self) -> str:
        return f"{self.path}:{self.line}" + (" (inside a function)" if self.lazy else "")


Graph = Dict[str, Dict[str, List[ImportSite]]]


def discover_modules(root: Path, packages: Sequence[str]) -> Dict[str, Path]:
    """Dotted module name -> file for every ``.py`` file under ``root/<package>`` (packages as ``__init__``)."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if any(p == "__pycache__" or p.startswith(".") for p in parts):
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _ImportCollector(ast.NodeVisitor):
    """(imported module name, line, lazy) for every import statement of one file, relative ones resolved."""

    def __init__(self, module: str, is_package: bool, modules: Set[str]):
        self.package = module.split(".") if is_package else module.split(".")[:-1]
        self.modules = modules
        self.depth = 0  # > 0 inside a function body
        self.found: List[Tuple[str, int, bool]] = []

    def _add(self, name: str, line: int) -> None:
        if name in self.modules:
            self.found.append((name, line, self.depth > 0))

    def _function(self, node) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            if node.level - 1 > len(self.package):
                return  # beyond the top-level package: Python refuses it, nothing to resolve
            base = self.package[:len(self.package) - (node.level - 1)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        for alias in node.names:
            submodule = f"{source}.{alias.name}" if source else alias.name
            self._add(submodule if submodule in self.modules else source, node.lineno)


def import_graph(root: Path, packages: Sequence[str]) -> Graph:
    """module -> {imported module -> the import sites}, over the modules of `packages` under `root`."""
    modules = discover_modules(root, packages)
    names = set(modules)
    graph: Graph = {m: {} for m in modules}
    for module, path in modules.items():
        collector = _ImportCollector(module, path.name == "__init__.py", names)
        collector.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        for target, line, lazy in collector.found:
            sites = graph[module].setdefault(target, [])
            site = ImportSite(str(path.relative_to(root)), line, lazy)
            if site not in sites:  # `from m import a, b` is one import of m
                sites.append(site)
    return graph


def strongly_connected_components(graph: Graph) -> List[List[str]]:
    """Tarjan's algorithm (iterative, so deep chains cannot hit the recursion limit); components sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    components = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return sorted(components)


def _shortest_cycle(graph: Graph, start: str, members: Set[str]) -> List[str]:
    """[start, ..., start]: a shortest cycle through `start` that stays inside `members` (breadth first)."""
    parent = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph[node]):
            if child == start:
                path = [node]
                while parent[path[-1]] is not None:
                    path.append(parent[path[-1]])
                return path[::-1] + [start]
            if child in members and child not in parent:
                parent[child] = node
                queue.append(child)
    raise AssertionError(f"{start} is on no cycle inside {sorted(members)}")


def find_import_cycles(root: Path, packages: Sequence[str]) -> List[List[str]]:
    """Readable cycles: one list of chains per cyclic component (or self-import), e.g.

    ``["a -> b -> a", "    a -> b  at a.py:3 (inside a function)", "    b -> a  at b.py:1"]``.
    Every module of a component lies on at least one of its printed chains. Empty when there is no cycle.
    """
    graph = import_graph(root, packages)
    report = []
    for component in strongly_connected_components(graph):
        if len(component) == 1 and component[0] not in graph[component[0]]:
            continue
        members, covered, lines = set(component), set(), []
        for node in component:
            if node in covered:
                continue
            cycle = _shortest_cycle(graph, node, members)
            covered.update(cycle)
            lines.append(" -> ".join(cycle))
            for a, b in zip(cycle, cycle[1:]):
                lines.append(f"    {a} -> {b}  at " + ", ".join(map(str, graph[a][b])))
        report.append(lines)
    return report


def format_cycles(cycles: List[List[str]]) -> str:
    return "\n\n".join("\n".join(lines) for lines in cycles)


def test_no_import_cycles():
    graph = import_graph(REPO, PACKAGES)
    # Guard against passing vacuously (wrong root, renamed package): the known layout must be seen.
    assert {"qallegro", "qallegro.data.structure", "experiments.train"} <= set(graph)
    assert "qallegro.data.neighbors" in graph["qallegro.data.graphs"]
    cycles = find_import_cycles(REPO, PACKAGES)
    assert not cycles, f"{len(cycles)} import cycle(s) in {', '.join(PACKAGES)}:\n\n{format_cycles(cycles)}"


def _write_package(root: Path, files: Dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_checker_finds_a_lazy_cycle_and_passes_an_acyclic_package(tmp_path):
    _write_package(tmp_path / "cyclic", {
        "pkg/__init__.py": "",
        "pkg/a.py": "import os\n\n\ndef f():\n    from pkg import b\n    return b\n",
        "pkg/b.py": "import pkg.a\n",
    })
    cycles = find_import_cycles(tmp_path / "cyclic", ["pkg"])
    assert cycles == [["pkg.a -> pkg.b -> pkg.a",
                       "    pkg.a -> pkg.b  at pkg/a.py:5 (inside a function)",
                       "    pkg.b -> pkg.a  at pkg/b.py:1"]]

    _write_package(tmp_path / "acyclic", {
        "pkg/__init__.py": "from pkg.a import f\nfrom . import b\n",  # an __init__ re-exporting submodules
        "pkg/a.py": "from .sub import c\n\n\ndef f():\n    from pkg.sub.c import g\n    return g\n",
        "pkg/b.py": "from pkg import a\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import b\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/c.py": "import json\n\n\ndef g():\n    return json\n",
    })
    graph = import_graph(tmp_path / "acyclic", ["pkg"])
    assert {m: sorted(t) for m, t in graph.items()} == {
        "pkg": ["pkg.a", "pkg.b"], "pkg.a": ["pkg.sub.c"], "pkg.b": ["pkg.a"], "pkg.sub": [], "pkg.sub.c": []}
    assert find_import_cycles(tmp_path / "acyclic", ["pkg"]) == []


def test_checker_finds_package_init_cycles_self_imports_and_relative_imports(tmp_path):
    _write_package(tmp_path, {
        "pkg/__init__.py": "from pkg.a import f\n",
        "pkg/a.py": "from pkg import helper\n\n\ndef f():\n    pass\n",  # helper is an attribute of pkg
        "pkg/sub/__init__.py": "",
        "pkg/sub/x.py": "from ..sub import y\n",
        "pkg/sub/y.py": "from . import x\n",
        "pkg/selfish.py": "import pkg.selfish\n",
    })
    chains = [lines[0] for lines in find_import_cycles(tmp_path, ["pkg"])]
    assert chains == ["pkg -> pkg.a -> pkg", "pkg.selfish -> pkg.selfish", "pkg.sub.x -> pkg.sub.y -> pkg.sub.x"]
