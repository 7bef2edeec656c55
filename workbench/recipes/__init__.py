"""The recipes: one module per paper notebook, all of one shape, and their registry.

Each recipe module (``quickstart``, ``ingenious``, ``rho_loss``, ``mates``, ``ligo``,
``budget_bert``) has ``Params`` (a :class:`~workbench.recipes.base.RecipeParams` dataclass),
``CLAIM``, ``PAPER_RESULT``, ``run(P) -> Result``, ``summary(P, result) -> Summary`` and
``write_summary(P, result)`` (:mod:`workbench.recipes.base`), and optionally ``STUDY_PAIRS``, more pairs
of arms a study over seeds compares (:func:`workbench.reproduce.study.study_pairs`). ``notebooks/NAME.ipynb`` runs the
recipe of the same name: its first code cell, tagged ``parameters``, is generated from ``Params``
with the ``smoke`` values (:func:`notebook_defaults`: a first Run All takes about a minute); the next
cell resolves it with :func:`notebook_params`, where ``scale`` selects that scale's values and any
value changed in the cell wins. ``reproduce`` validates the
parameter file ``papers/NAME/<scale>.yaml`` and the overrides with the same dataclass before it
starts a kernel, so a bad parameter fails in a second with one line.

Importing this package imports no recipe: :func:`recipe` loads one on demand.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
from pathlib import Path
from types import ModuleType

from ..errors import ConfigError
from .base import SCALES, RecipeParams, Summary, parameters_cell

#: the recipes, in the order ``reproduce all`` runs them
ORDER = ["quickstart", "ingenious", "rho_loss", "mates", "ligo", "budget_bert"]
REGISTRY = {name: f"workbench.recipes.{name}" for name in ORDER}

__all__ = ["ORDER", "REGISTRY", "SCALES", "RecipeParams", "Summary", "available", "notebook_cell", "notebook_defaults",
           "notebook_params", "notebook_path", "param_defaults", "parameters_cell", "params_class", "params_file",
           "recipe", "repo_root"]

#: set to "1" by ``reproduce`` for the kernels it starts: it injects every parameter, resolved
EXACT_ENV = "WORKBENCH_EXACT_PARAMS"


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def notebook_path(name: str) -> Path:
    return repo_root() / "notebooks" / f"{name}.ipynb"


def params_file(name: str, scale: str) -> Path:
    return repo_root() / "papers" / name / f"{scale}.yaml"


def available() -> list[str]:
    return [n for n in ORDER if n in REGISTRY and notebook_path(n).exists()]


def recipe(name: str) -> ModuleType:
    """The recipe module ``name`` (imported on first use)."""
    if name not in REGISTRY:
        raise ConfigError(f"unknown notebook {name!r}; available: {', '.join(available())} (or 'all')")
    return importlib.import_module(REGISTRY[name])


def params_class(name: str) -> type:
    """The ``Params`` dataclass of recipe ``name``."""
    return recipe(name).Params


def param_defaults(name: str) -> dict:
    """Every parameter's default in recipe ``name``'s ``Params`` (the dataclass fields, no scale file)."""
    return {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
            for f in dataclasses.fields(params_class(name))
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}


def scale_values(name: str, scale: str) -> dict:
    """Every parameter of ``name`` at ``scale``: the dataclass defaults, then ``papers/NAME/SCALE.yaml``."""
    from ..config import load_yaml
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    vals = param_defaults(name)
    pf = params_file(name, scale)
    if pf.exists():
        vals.update(load_yaml(pf))
    vals["scale"] = scale
    return vals


def notebook_defaults(name: str) -> dict:
    """The values a notebook's parameters cell shows: those of the ``smoke`` scale."""
    return scale_values(name, "smoke")


def notebook_cell(name: str) -> str:
    """The generated parameters cell of notebook ``name`` (``python -m workbench.recipes`` writes it)."""
    return parameters_cell(params_class(name), notebook_defaults(name))


def notebook_params(name: str, ns: dict):
    """The notebook's validated ``Params`` from its parameters cell (the namespace ``ns``, e.g. ``globals()``).

    ``scale`` selects that scale's values (``papers/NAME/SCALE.yaml``); a value changed in the cell
    (different from the smoke value it shows) wins over them. Under ``reproduce`` (which injects every
    parameter, resolved) the values are taken as they are. A relative ``out_dir`` (and the corpus
    cache) is placed under the repository's ``runs/`` when the notebook runs from ``notebooks/``, never
    beside the notebooks.
    """
    from ..config import parse
    cls = params_class(name)
    given = {f.name: ns[f.name] for f in dataclasses.fields(cls) if f.name in ns}
    if os.environ.get(EXACT_ENV) == "1":
        values = given
    else:
        shown = notebook_defaults(name)
        scale = given.get("scale", "smoke")
        changed = {k: v for k, v in given.items() if k != "scale" and v != shown.get(k)}
        values = {**scale_values(name, scale), **changed}
        if Path.cwd().resolve() == (repo_root() / "notebooks").resolve():
            os.environ.setdefault("WORKBENCH_CACHE", str(repo_root() / "runs" / "cache"))
            out = values.get("out_dir")
            if isinstance(out, str) and not Path(out).is_absolute():
                values["out_dir"] = str(repo_root() / out)
    return parse(cls, values)
