"""The recipes: one module per paper notebook, all of one shape, and their registry.

Each recipe module (``quickstart``, ``ingenious``, ``rho_loss``, ``mates``, ``ligo``,
``budget_bert``) has ``Params`` (a :class:`~workbench.recipes.base.RecipeParams` dataclass),
``CLAIM``, ``PAPER_RESULT``, ``run(P) -> Result``, ``summary(P, result) -> Summary`` and
``write_summary(P, result)`` (:mod:`workbench.recipes.base`). ``notebooks/NAME.ipynb`` runs the
recipe of the same name: its first code cell, tagged ``parameters``, is generated from ``Params``;
the next cell validates it with :func:`workbench.config.parse`. ``reproduce`` validates the
parameter file ``papers/NAME/<scale>.yaml`` and the overrides with the same dataclass before it
starts a kernel, so a bad parameter fails in a second with one line.

Importing this package imports no recipe: :func:`recipe` loads one on demand.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from ..errors import ConfigError
from .base import SCALES, RecipeParams, Summary, parameters_cell

#: the recipes, in the order ``reproduce all`` runs them
ORDER = ["quickstart", "ingenious", "rho_loss", "mates", "ligo", "budget_bert"]
REGISTRY = {name: f"workbench.recipes.{name}" for name in ORDER}

__all__ = ["ORDER", "REGISTRY", "SCALES", "RecipeParams", "Summary", "available", "notebook_path", "parameters_cell",
           "params_class", "params_file", "recipe", "repo_root"]


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
