"""The package's shape (DESIGN.md, Layout): every module imports by its dotted path, the import graph
has no cycle, imports point down the layers, and `import workbench` stays light."""
import ast
import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import workbench

PKG = Path(workbench.__file__).parent

#: the layers, bottom first: a module may import its own layer and those below it, never above
LAYERS = [
    {"errors", "config", "runs"},
    {"models"},                 # presets, FLOPs, heads: below data, whose tasks compute losses with the heads
    {"data"},
    {"training"},
    {"selection", "growth"},
    {"viz"},
    {"recipes"},
    {"reproduce", "bench", "cli", "__main__", ""},   # "" is the facade, workbench/__init__.py
]
#: the deliberate exceptions, each with its reason
ALLOWED_UP: dict[tuple[str, str], str] = {}


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages([str(PKG)], prefix="workbench."))


def _path(mod: str) -> Path:
    rel = mod.split(".")[1:]
    p = PKG.joinpath(*rel)
    return p / "__init__.py" if p.is_dir() else p.with_suffix(".py")


def _imports(mod: str, known: set[str]) -> set[str]:
    """Every workbench module ``mod`` imports, at the top or inside a function."""
    path = _path(mod)
    pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("workbench")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("workbench"):
                continue
            names = [f"{target}.{a.name}" if f"{target}.{a.name}" in known else target for a in node.names]
        else:
            continue
        for n in names:
            while n not in known and "." in n:
                n = n.rsplit(".", 1)[0]
            if n in known and n != mod:
                out.add(n)
    return out


def _graph():
    known = set(_modules()) | {"workbench"}
    return {m: _imports(m, known) for m in known}


def _layer(mod: str) -> int:
    top = mod.split(".")[1] if "." in mod else ""
    return next(i for i, layer in enumerate(LAYERS) if top in layer)


@pytest.mark.parametrize("mod", [m for m in _modules() if not m.endswith("__main__")])   # those run on import
def test_every_module_imports_by_its_dotted_path(mod):
    importlib.import_module(mod)


def test_import_graph_has_no_cycle():
    graph = _graph()
    # Tarjan's strongly connected components
    index, low, on, stack, sccs, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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
            sccs.append(comp)

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    # a package's __init__ importing its own submodules is not a cycle unless a submodule imports it back
    cycles = [sorted(c) for c in sccs if len(c) > 1]
    assert not cycles, f"import cycles: {cycles}"


def test_imports_point_down_the_layers():
    up = [(a, b) for a, deps in _graph().items() for b in deps
          if _layer(b) > _layer(a) and (a, b) not in ALLOWED_UP]
    assert not up, "imports pointing up the layers (DESIGN.md, Layout): " + ", ".join(f"{a} -> {b}" for a, b in up)


def test_import_workbench_loads_no_model_code():
    """`import workbench` (and so every one-line CLI error) must not pay for HF model classes, faiss,
    submodlib or plotly."""
    code = ("import sys, json, workbench, workbench.cli, workbench.recipes;"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('transformers.models.', 'faiss',"
            " 'submodlib', 'plotly', 'deepspeed', 'papermill')))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert not [m for m in loaded if "modeling" in m or not m.startswith("transformers.")], loaded


def test_every_method_object_is_exported_from_selection():
    import workbench.selection as sel
    for name in ("facility_location", "IngeniousSampler", "BatchSelector", "IrreducibleLosses",
                 "holdout_irreducible", "TokenExcessLoss", "MatesSampler", "InfluenceModel"):
        assert hasattr(sel, name), name
        assert name in sel.__all__, name
