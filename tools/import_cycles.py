"""Import cycles among benchbox's own modules (core and first-party plugins), counting imports made
anywhere in a module (at the top or inside a function: a cycle hidden in a function is still one).

    python tools/import_cycles.py            # lists each cycle, exits 1 when there is one
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = [ROOT / "benchbox", *sorted(p for p in (ROOT / "plugins").iterdir() if (p / "__init__.py").exists())]


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT / "plugins" if "plugins" in path.parts else ROOT).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, known: set[str]) -> set[str]:
    """The known modules ``path`` imports (``from a.b import c`` counts a.b.c when that is a module)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                out.add(name)
    return out


def cycles() -> list[list[str]]:
    files = {module_name(p): p for pkg in PACKAGES for p in pkg.rglob("*.py")}
    graph = {m: imports(p, set(files)) - {m} for m, p in files.items()}
    # a package's __init__ importing its own submodules is not a cycle a reader trips over: drop parent -> child
    graph = {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in graph.items()}
    found, index, low, stack, on, counter = [], {}, {}, [], set(), [0]

    def strong(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
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
                found.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            strong(v)
    return found


if __name__ == "__main__":
    found = cycles()
    for comp in found:
        print("cycle:", " <-> ".join(comp))
    print(f"{len(found)} import cycle(s)")
    sys.exit(1 if found else 0)
