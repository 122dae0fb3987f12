"""The package's import graph has no circle: every module of ``novelty/`` imports only modules that do not
import it back, directly or through others. Imports under ``if TYPE_CHECKING:`` are left out (never run);
function-local imports count, so a circle cannot hide inside a function.

Also the command that prints the graph's numbers: ``python tests/project/test_import_graph.py``."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "novelty"


def _modules(root: Path) -> dict[str, Path]:
    out = {}
    for p in sorted(root.rglob("*.py")):
        parts = p.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def import_graph(root: Path = PACKAGE) -> tuple[dict[str, set[str]], int]:
    """``(edges, n_local)``: each module's imports of other ``novelty`` modules, and how many ``novelty``
    imports sit inside functions."""
    mods = _modules(root)

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = {m: set() for m in mods}
    n_local = 0
    for m, p in mods.items():
        tree = ast.parse(p.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                node.body = []
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n_local += sum(
                    1
                    for node in ast.walk(fn)
                    if (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("novelty"))
                    or (
                        isinstance(node, ast.Import) and any(a.name.startswith("novelty") for a in node.names)
                    )
                )
        for node in ast.walk(tree):
            targets: list[str] = []
            if (
                isinstance(node, ast.ImportFrom)
                and node.level == 0
                and (node.module or "").startswith("novelty")
            ):
                targets = [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("novelty")]
            for t in targets:
                r = resolve(t)
                if r is not None and r != m:
                    edges[m].add(r)
    return edges, n_local


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_the_package_has_no_import_circle():
    edges, _ = import_graph()
    assert len(edges) > 100
    assert circles(edges) == []


def local_imports(root: Path = PACKAGE) -> list[tuple[str, int, str]]:
    """``(file, line, text)`` of every ``novelty`` import written inside a function (outside TYPE_CHECKING)."""
    out = []
    for p in _modules(root).values():
        src = p.read_text(encoding="utf-8")
        lines = src.splitlines()
        for fn in ast.walk(ast.parse(src)):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("novelty")) or (
                        isinstance(node, ast.Import) and any(a.name.startswith("novelty") for a in node.names)
                    ):
                        text = " ".join(lines[node.lineno - 1 : node.end_lineno])
                        out.append((str(p.relative_to(root.parent)), node.lineno, text))
    return out


def test_every_import_inside_a_function_says_why_it_is_lazy():
    """An import stays inside a function only to keep something heavy or optional out of an import (torch,
    faiss, FastAPI, MLflow…), and says so on its line (``# lazy: …``); never to dodge a circle."""
    unexplained = [f"{f}:{n}: {t.strip()}" for f, n, t in local_imports() if "# lazy:" not in t]
    assert unexplained == []


def test_no_module_is_over_600_lines():
    sizes = {n: sum(1 for _ in p.open(encoding="utf-8")) for n, p in _modules(PACKAGE).items()}
    assert {n: k for n, k in sizes.items() if k > 600} == {}


def test_a_circle_is_found():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


if __name__ == "__main__":
    e, local = import_graph()
    sizes = sorted(
        ((sum(1 for _ in p.open(encoding="utf-8")), n) for n, p in _modules(PACKAGE).items()), reverse=True
    )
    print(f"{len(e)} modules, {sum(map(len, e.values()))} imports between them, {local} inside functions")
    print(f"circles: {circles(e) or 'none'}")
    print("largest:", ", ".join(f"{n} {lines}" for lines, n in sizes[:8]))
    sys.exit(1 if circles(e) else 0)
