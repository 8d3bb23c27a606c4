"""The import graph of Darkroom's packages: layers, package edges, and file-level cycles.

``python -m tools.imports`` prints it; tests/test_layers.py holds the rules. Layers, bottom to top:
**contracts** (records, schemas, tensor names, photo decoding) ← **runtime** (``stream`` the worker, ``search``,
``trainer``) ← **tools** (this package: the CLI, the embedded stack, demo, bench). Imports point down (or
sideways within the runtime, without cycles); every import counts, those inside functions too.
"""

from __future__ import annotations

import argparse
import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: package → layer (higher may import lower, never the reverse)
LAYERS = {"contracts": 0, "stream": 1, "search": 1, "trainer": 1, "tools": 2}


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the layered packages: dotted name → file."""
    found = {}
    for package in LAYERS:
        for path in sorted((root / package).rglob("*.py")) if (root / package).is_dir() else []:
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module → the project modules it imports (anywhere in the file)."""
    known = modules(root)
    edges: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                    for alias in node.names
                ]
            for target in targets:
                while target and target not in known:  # `import a.b.c` depends on the deepest known module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges[name].add(target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


def package_edges(edges: dict[str, set[str]]) -> dict[tuple[str, str], int]:
    """(importing package, imported package) → how many module imports cross between them."""
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for source, targets in edges.items():
        for target in targets:
            a, b = source.split(".")[0], target.split(".")[0]
            if a != b:
                counts[(a, b)] += 1
    return dict(counts)


def upward(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Imports from a lower layer into a higher one."""
    return sorted(
        (s, t) for s, ts in edges.items() for t in ts if LAYERS[s.split(".")[0]] < LAYERS[t.split(".")[0]]
    )


def lines_per_layer(root: Path = ROOT) -> dict[str, int]:
    """Lines of code in each package."""
    counts: dict[str, int] = defaultdict(int)
    for name, path in modules(root).items():
        counts[name.split(".")[0]] += len(path.read_text().splitlines())
    return dict(counts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.imports", description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", action="store_true", help="print every module's imports too")
    args = parser.parse_args(argv)
    edges = graph()
    loc = lines_per_layer()
    print("packages (layer, lines):")
    for package, layer in sorted(LAYERS.items(), key=lambda kv: (kv[1], kv[0])):
        print(f"  {layer} {package:<10} {loc.get(package, 0):>6}")
    print("package imports (module edges):")
    for (a, b), n in sorted(package_edges(edges).items()):
        print(f"  {a} -> {b}  ({n})")
    if args.modules:
        for name in sorted(edges):
            print(f"{name} -> {', '.join(sorted(edges[name])) or '-'}")
    found = cycles(edges)
    print(f"file cycles: {len(found)}")
    for component in found:
        print("  " + " <-> ".join(component))
    bad = upward(edges)
    print(f"upward imports: {len(bad)}")
    for s, t in bad:
        print(f"  {s} -> {t}")
    return 1 if found or bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
