"""The embedded ``pydocs`` corpus: docstrings of installed Python packages, read with ``ast``.

Every machine that installs the workbench holds this text: real English technical prose that no one
here wrote. A document is one docstring (module, class or function) of at least ``min_chars``
characters; its domain is the top-level package; its id ``pkg/rel/path.py:Qual.name`` is stable
across runs and machines with the same package versions. Packages are never imported: their source
files are located through ``importlib`` metadata and parsed.
"""
from __future__ import annotations

import ast
import importlib.metadata as md
import importlib.util
import os
import warnings
from pathlib import Path
from typing import Iterator

from ..errors import CorpusError

#: Packages read by ``pydocs`` without an explicit list: installed with the workbench, large and
#: varied enough for the tiny scale, yet cheap to parse (about 30 s once on 2 cores, then cached).
#: ``plotly`` brings the natural redundancy (templated docstrings of its many figure classes).
DEFAULT_PACKAGES = ("numpy", "sklearn", "datasets", "deepspeed", "plotly")

_DIST_ALIASES = {"sklearn": "scikit-learn", "faiss": "faiss-cpu", "submodlib": "submodlib-py",
                 "yaml": "PyYAML", "PIL": "pillow", "attr": "attrs", "dateutil": "python-dateutil"}


def package_dir(pkg: str) -> Path:
    """Source directory (or single module file) of an installed top-level package, without importing it."""
    if not pkg.isidentifier():
        raise CorpusError(f"{pkg!r} is not a package name")
    try:
        spec = importlib.util.find_spec(pkg)
    except (ImportError, ValueError):
        spec = None
    if spec is None or (spec.origin is None and not spec.submodule_search_locations):
        raise CorpusError(f"package {pkg!r} is not installed")
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(spec.origin)


def package_version(pkg: str) -> str:
    for name in (_DIST_ALIASES.get(pkg), pkg, pkg.replace("_", "-")):
        if not name:
            continue
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            continue
    dists = md.packages_distributions().get(pkg, [])
    for d in dists:
        try:
            return md.version(d)
        except md.PackageNotFoundError:
            continue
    # no metadata (e.g. a source checkout): fall back to the newest mtime of its files
    root = package_dir(pkg)
    return "mtime-%d" % int(max((p.stat().st_mtime for p in _py_files(root)), default=0))


def _py_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__")
        out.extend(Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py"))
    return out


def _walk(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, str]]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            qual = f"{prefix}{node.name}"
            doc = ast.get_docstring(node, clean=True)
            if doc:
                yield qual, doc
            yield from _walk(node, qual + ".")
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            yield from _walk(node, prefix)


def iter_docstrings(pkg: str, min_chars: int = 200) -> Iterator[dict]:
    """Yield ``{"id", "text", "domain"}`` for every docstring of ``pkg`` with at least ``min_chars``."""
    root = package_dir(pkg)
    base = root.parent
    for path in _py_files(root):
        try:
            src = path.read_text(encoding="utf-8")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tree = ast.parse(src, filename=str(path))
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue
        rel = path.relative_to(base).as_posix()
        seen: dict[str, int] = {}
        mod_doc = ast.get_docstring(tree, clean=True)
        items = ([("<module>", mod_doc)] if mod_doc else []) + list(_walk(tree))
        for qual, doc in items:
            n = seen.get(qual, 0)
            seen[qual] = n + 1
            if len(doc) < min_chars:
                continue
            ident = f"{rel}:{qual}" + (f"#{n}" if n else "")
            yield {"id": ident, "text": doc, "domain": pkg}
