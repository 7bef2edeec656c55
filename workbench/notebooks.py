"""The notebook registry: each notebook's name, its parameter dataclass, and its paper.

A notebook ``notebooks/NAME.ipynb`` has a first code cell tagged ``parameters`` whose variables are
exactly the fields of its dataclass; the next cell validates them with
:func:`workbench.config.parse`. ``reproduce`` validates the parameter file and the overrides with the
same dataclass before it starts a kernel, so a bad parameter fails in a second with one line.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from .errors import ConfigError

# name -> "module:ParamsClass"
REGISTRY = {
    "quickstart": "workbench.quickstart:QuickstartParams",
    "ingenious": "workbench.selection.ingenious_recipe:IngeniousParams",
    "rho_loss": "workbench.selection.rho_recipe:RhoLossParams",
    "mates": "workbench.selection.mates_recipe:MatesParams",
    "ligo": "workbench.growth.recipe:LigoParams",
    "budget_bert": "workbench.train.budget_bert:BudgetBertParams",
}
ORDER = ["quickstart", "ingenious", "rho_loss", "mates", "ligo", "budget_bert"]
SCALES = ("smoke", "tiny", "small", "paper")


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def notebook_path(name: str) -> Path:
    return repo_root() / "notebooks" / f"{name}.ipynb"


def params_file(name: str, scale: str) -> Path:
    return repo_root() / "papers" / name / f"{scale}.yaml"


def available() -> list[str]:
    return [n for n in ORDER if n in REGISTRY and notebook_path(n).exists()]


def params_class(name: str):
    if name not in REGISTRY:
        raise ConfigError(f"unknown notebook {name!r}; available: {', '.join(available())} (or 'all')")
    mod, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(mod), cls)
