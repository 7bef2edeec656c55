"""The one shape every recipe has, and the notebook parameters cell generated from it.

A recipe is a module in :mod:`workbench.recipes` with

* ``Params``: a frozen dataclass deriving from :class:`RecipeParams` (``scale``, ``out_dir``,
  ``seed`` first, then the recipe's own knobs, each with its unit in a trailing comment);
* ``CLAIM``: the sentence the notebook tests; ``PAPER_RESULT``: what the paper itself reported;
* ``run(P) -> Result``: everything the notebook computes (a dataclass of models, runs and numbers);
* ``summary(P, result) -> Summary``: the headline numbers, the ``summary.json`` contract;
* ``write_summary(P, result)``: writes ``P.out_dir/summary.json`` and returns the :class:`Summary`.

A notebook is then: the tagged parameters cell (generated from ``Params`` by
:func:`parameters_cell`; a test fails when a notebook's cell differs), ``P = parse(...)``,
``result = recipe.run(P)``, the views, ``recipe.write_summary(P, result)``.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import re
import textwrap
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import check
from ..runs import atomic_write, dumps

SCALES = ("smoke", "tiny", "cpu", "small", "paper")


@dataclass(frozen=True)
class RecipeParams:
    """The parameters every recipe has; subclasses add theirs after these three."""
    scale: str = "tiny"                 # smoke | tiny | cpu | small | paper
    out_dir: str = "runs/recipe"        # run directories and summary.json go here
    seed: int = 0                       # seeds model init, data order, masking and sampling

    def __post_init__(self):
        check(self.scale in SCALES, f"scale {self.scale!r} is not one of {SCALES}")
        check(bool(str(self.out_dir).strip()), "out_dir must name a folder, got an empty string")
        check(self.seed >= 0, f"seed must be >= 0, got {self.seed}")


@dataclass(frozen=True)
class Arm:
    """One side of a comparison: its name and its value of the summary's metric."""
    name: str
    value: float | None


#: words of a metric's name (split at ``_``, ``.``, ``-``, spaces) that make it higher-better
_HIGHER = {"acc", "accuracy", "saved", "speedup", "spearman", "pearson", "f1", "auc", "score", "reward",
           "throughput", "quality", "wins"}


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better, read from its name: accuracies, saved
    fractions, speed-ups, rank correlations and rates (``*_per_s``) are higher-better; everything
    else -- losses, errors, steps / FLOPs / seconds to a target, costs, fractions of waste -- is
    lower-better."""
    m = str(metric).lower()
    words = set(re.split(r"[^a-z0-9]+", m))
    return bool(words & _HIGHER) or "per_s" in m


@dataclass
class Summary:
    """The ``summary.json`` contract: what one notebook run tested and found.

    ``ratio`` (method / baseline) is what the comparison table prints; ``extra`` holds any other
    numbers the card quotes (plain JSON values).
    """
    paper: str                          # the recipe's registry name
    scale: str                          # the scale's label
    claim: str                          # what this notebook tests, in one sentence
    metric: str                         # the name of the compared quantity
    baseline: Arm
    method: Arm
    paper_result: str = ""              # what the paper itself reported
    extra: dict = field(default_factory=dict)
    wall_s: float | None = None         # seconds the recipe ran
    higher_is_better: bool | None = None    # the metric's direction; None: derived from its name

    def __post_init__(self):
        if self.higher_is_better is None:
            self.higher_is_better = higher_is_better(self.metric)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def write(self, out_dir: str | Path) -> Path:
        path = Path(out_dir) / "summary.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, dumps(self.to_dict()))
        return path


# ----------------------------------------------------------------------- the parameters cell
def _field_comments(cls: type) -> dict[str, str]:
    """The trailing ``# comment`` of each field, read from the class bodies of ``cls`` and its bases."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass is object:
            continue
        src = textwrap.dedent(inspect.getsource(klass))
        lines = src.splitlines()
        for node in ast.parse(src).body[0].body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                line = lines[node.end_lineno - 1]
                tail = line[node.end_col_offset:]
                if "#" in tail:
                    out[node.target.id] = tail.split("#", 1)[1].strip()
    return out


def _type_text(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (list, tuple, dict):
        return origin.__name__
    if origin is not None:                  # Union / Optional / Literal: the notebook keeps it simple
        return "object"
    return getattr(tp, "__name__", str(tp))


_ALIGN_MAX = 48     # characters of `name: type = default` up to which comments share one column


def _literal(v: Any) -> str:
    """``v`` as Python source, strings in double quotes (the notebooks' style)."""
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(_literal(x) for x in v) + "]"
    if isinstance(v, tuple):
        return "(" + ", ".join(_literal(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    return repr(v)


def parameters_cell(cls: type) -> str:
    """The text of a notebook's tagged ``parameters`` cell for the params dataclass ``cls``.

    One line per field, ``name: type = default  # comment``, in field order, the comments aligned:
    the dataclass is the single source, the cell is generated from it.
    """
    hints = typing.get_type_hints(cls)
    comments = _field_comments(cls)
    heads = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        heads.append(f"{f.name}: {_type_text(hints[f.name])} = {_literal(default)}")
    # comments aligned in one column, except after a long default (a list), which would push it far right
    width = max((len(h) for h in heads if len(h) <= _ALIGN_MAX), default=0) + 2
    lines = []
    for f, head in zip(dataclasses.fields(cls), heads):
        c = comments.get(f.name)
        lines.append((f"{head:<{width}}# {c}" if len(head) < width else f"{head}  # {c}") if c else head)
    return "\n".join(lines)


def notebook_parameters_cell(nb: dict) -> dict | None:
    """The code cell tagged ``parameters`` of a notebook (as loaded JSON), or None."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            return cell
    return None


def write_parameters_cell(path: str | Path, cls: type) -> bool:
    """Replace the tagged parameters cell of the notebook at ``path`` with :func:`parameters_cell`
    of ``cls``; returns whether the file changed."""
    path = Path(path)
    nb = json.loads(path.read_text(encoding="utf-8"))
    cell = notebook_parameters_cell(nb)
    if cell is None:
        raise ValueError(f"{path} has no code cell tagged 'parameters'")
    text = parameters_cell(cls)
    old = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
    if old == text:
        return False
    cell["source"] = text.splitlines(keepends=True)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return True
