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


#: a single run's verdict needs the method ahead of (or behind) the baseline by more than this
#: fraction of the larger of the two values (one run carries no error bar: a closer call is inconclusive)
SINGLE_RUN_MARGIN = 0.05
#: a study's verdict: the paired t-test's two-sided p below this, the mean difference deciding the side
STUDY_ALPHA = 0.05
VERDICTS = ("holds", "does not hold", "inconclusive")


def _number(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if v == v and abs(v) != float("inf") else None


def none_is_worst(metric: str) -> bool:
    """Whether a missing value means "the worst": for ``*_to_*`` metrics (steps / FLOPs / seconds
    to a target) None means the target was never reached."""
    return "_to_" in f"_{metric}_"


def better_of(a, b, higher: bool, metric: str = "") -> int:
    """+1 when ``a`` is better than ``b``, -1 when worse, 0 when equal or not comparable."""
    a, b = _number(a), _number(b)
    if a is None or b is None:
        if not none_is_worst(metric) or (a is None and b is None):
            return 0
        return 1 if b is None else -1
    if a == b:
        return 0
    return 1 if (a > b) == higher else -1


def other_arms(metric: str, extra: dict | None, baseline: str | None, method: str | None) -> dict:
    """``{arm: value}`` of the other arms a recipe reports for its metric: ``extra[metric]`` when it
    is a dict of numbers by arm name (e.g. LiGO's ``flops_to_target`` of scratch, bert2BERT,
    StackBERT, interpolation), without the method and the baseline."""
    arms = (extra or {}).get(metric)
    if not isinstance(arms, dict):
        return {}
    return {str(k): v for k, v in arms.items()
            if k not in (baseline, method) and (v is None or _number(v) is not None)}


def verdict_single(metric: str, baseline, method, higher: bool,
                   margin: float = SINGLE_RUN_MARGIN) -> tuple[str, str]:
    """(verdict, why) of one run: "holds" when the method beats the baseline by more than
    ``margin`` of the larger magnitude, "does not hold" when the baseline wins by that much,
    "inconclusive" otherwise (or without values)."""
    b, m = _number(baseline), _number(method)
    if b is None or m is None:
        side = better_of(method, baseline, higher, metric)
        if side > 0:
            return "holds", "single run: the baseline never reached the target, the method did"
        if side < 0:
            return "does not hold", "single run: the method never reached the target, the baseline did"
        return "inconclusive", "single run: no value to compare"
    scale = max(abs(b), abs(m))
    rel = abs(m - b) / scale if scale else 0.0
    side = better_of(m, b, higher, metric)
    pct = f"{rel:.0%}" if rel >= 0.01 else f"{rel:.1%}"
    if rel <= margin or side == 0:
        return "inconclusive", f"single run: method and baseline within {margin:.0%} ({pct})"
    if side > 0:
        return "holds", f"single run: the method is better by {pct} (margin {margin:.0%})"
    return "does not hold", f"single run: the baseline is better by {pct} (margin {margin:.0%})"


def verdict_study(paired: dict, alpha: float = STUDY_ALPHA) -> tuple[str, str]:
    """(verdict, why) of a study from its paired statistics (:func:`workbench.reproduce.study.paired_stats`):
    "holds" when the mean difference favours the method with paired t-test p < ``alpha``, "does not
    hold" when it favours the baseline with p < ``alpha``, else "inconclusive"."""
    n, p, d = paired.get("n") or 0, paired.get("p_value"), _number(paired.get("mean_diff"))
    higher = bool(paired.get("higher_is_better"))
    nx = paired.get("n_excluded") or 0
    tail = f" ({nx} seed(s) without a value left out)" if nx else ""
    if paired.get("n_censored"):
        return _verdict_censored(paired, alpha, tail)
    if p is None or d is None or d == 0:
        if n >= 2 and d is not None and paired.get("wins") in (0, n) and d != 0:
            p = 0.0     # every seed the same difference: the t-test is undefined, the sign is not
        else:
            return "inconclusive", f"study over {n} seeds: no paired test possible{tail}"
    favours = (d > 0) == higher
    pt = f"{p:.2g}" if p >= 1e-4 else "<1e-4"
    if p < alpha:
        return (("holds", f"study over {n} seeds: the method is better, paired t p = {pt}{tail}") if favours else
                ("does not hold", f"study over {n} seeds: the baseline is better, paired t p = {pt}{tail}"))
    return "inconclusive", f"study over {n} seeds: p = {pt} >= {alpha}{tail}"


def _verdict_censored(paired: dict, alpha: float, tail: str) -> tuple[str, str]:
    """:func:`verdict_study` for a metric "to a target" with seeds where an arm never reached it: the
    t-test over the seeds where both did decides when the never-reached seeds do not contradict it
    (they count against the arm that never got there); else the sign test over every decided seed."""
    never = paired.get("never_reached") or {}
    nm, nb = len(never.get("method") or []), len(never.get("baseline") or [])
    n, p, d = paired.get("n") or 0, paired.get("p_value"), _number(paired.get("mean_diff"))
    higher = bool(paired.get("higher_is_better"))
    wins, losses, sp = paired.get("wins") or 0, paired.get("losses") or 0, paired.get("sign_p")
    seeds = n + (paired.get("n_censored") or 0)
    said = (f"; never reached the target: the method in {nm} seed(s), the baseline in {nb} (counted against the "
            f"arm; {wins} wins, {losses} losses over {seeds} seeds, sign test p = {_fmt_p(sp)}){tail}")
    if p is not None and d is not None and d != 0 and p < alpha:
        favours = (d > 0) == higher
        if (favours and nb >= nm) or (not favours and nm >= nb):
            return (("holds", f"study over {seeds} seeds: the method is better where both reached the target "
                              f"({n} seeds, paired t p = {_fmt_p(p)}){said}") if favours else
                    ("does not hold", f"study over {seeds} seeds: the baseline is better where both reached the "
                                      f"target ({n} seeds, paired t p = {_fmt_p(p)}){said}"))
    if sp is not None and sp < alpha:
        return (("holds", f"study over {seeds} seeds: the method is better by the sign test{said}") if wins > losses
                else ("does not hold", f"study over {seeds} seeds: the baseline is better by the sign test{said}"))
    pt = "none" if p is None else _fmt_p(p)
    return "inconclusive", f"study over {seeds} seeds: paired t p = {pt} over {n} seeds where both reached it{said}"


def _fmt_p(p) -> str:
    return "n/a" if p is None else (f"{p:.2g}" if p >= 1e-4 else "<1e-4")


def beaten_by(metric: str, baseline: dict | None, method: dict | None, extra: dict | None, higher: bool) -> list[dict]:
    """Every arm that beat the method: the baseline when it is better, and each of
    :func:`other_arms` that is better (``[{"name", "value"}]``, best first)."""
    baseline, method = baseline or {}, method or {}
    mv = method.get("value")
    arms = {}
    if baseline.get("name") is not None:
        arms[str(baseline["name"])] = baseline.get("value")
    arms.update(other_arms(metric, extra, baseline.get("name"), method.get("name")))
    out = [{"name": k, "value": v} for k, v in arms.items() if better_of(v, mv, higher, metric) > 0]
    key = lambda a: (_number(a["value"]) is None, -(_number(a["value"]) or 0) if higher else (_number(a["value"]) or 0))
    return sorted(out, key=key)


def judge(s: dict) -> dict:
    """``{"better", "verdict", "verdict_basis", "beaten_by"}`` of a summary dict (a single run),
    for a summary.json written before these keys existed as well as a new one."""
    metric = str(s.get("metric") or "")
    hib = s.get("higher_is_better")
    hib = bool(hib) if isinstance(hib, bool) else higher_is_better(metric)
    b, m = s.get("baseline") or {}, s.get("method") or {}
    v, why = verdict_single(metric, b.get("value"), m.get("value"), hib)
    return {"better": "higher" if hib else "lower", "verdict": v, "verdict_basis": why,
            "beaten_by": beaten_by(metric, b, m, s.get("extra"), hib)}


@dataclass
class Summary:
    """The ``summary.json`` contract: what one notebook run tested and found.

    ``ratio`` (method / baseline) is what the comparison table prints; ``extra`` holds any other
    numbers the card quotes (plain JSON values).

    **Verdict** (``verdict``, ``verdict_basis``; filled in from the numbers, :func:`judge`): one run
    has no error bar, so it says "holds" only when the method beats the baseline by more than
    :data:`SINGLE_RUN_MARGIN` (5 %) of the larger value, "does not hold" when the baseline wins by
    that much, else "inconclusive"; its basis starts with "single run". A study over seeds
    (``reproduce NAME --seeds 0-4``) decides instead (:func:`verdict_study`): "holds" when the mean
    paired difference favours the method with a paired t-test p < 0.05, "does not hold" when it
    favours the baseline with p < 0.05, else "inconclusive". For ``*_to_*`` metrics (steps / FLOPs to
    a target) a missing value means "never reached", the worst. ``better`` is "lower" or "higher";
    ``beaten_by`` lists every arm better than the method: the baseline, and the other arms a recipe
    gives for its metric in ``extra[metric]`` (``{arm: value}``).
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
    better: str = ""                    # "lower" | "higher": which way the metric is better
    verdict: str = ""                   # "holds" | "does not hold" | "inconclusive" (this run, this scale)
    verdict_basis: str = ""             # why: "single run: ..." (a study's verdict is in its study.json)
    beaten_by: list = field(default_factory=list)  # [{"name", "value"}]: every arm better than the method

    def __post_init__(self):
        if self.higher_is_better is None:
            self.higher_is_better = higher_is_better(self.metric)
        if not self.verdict:
            j = judge({"metric": self.metric, "higher_is_better": self.higher_is_better, "extra": self.extra,
                       "baseline": dataclasses.asdict(self.baseline), "method": dataclasses.asdict(self.method)})
            self.better, self.verdict, self.verdict_basis, self.beaten_by = (
                j["better"], j["verdict"], j["verdict_basis"], j["beaten_by"])

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def write(self, out_dir: str | Path) -> Path:
        path = Path(out_dir) / "summary.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        from ..runs import atomic_write, dumps      # here: importing the recipes' contract stays light
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


def parameters_cell(cls: type, defaults: dict | None = None) -> str:
    """The text of a notebook's tagged ``parameters`` cell for the params dataclass ``cls``.

    One line per field, ``name: type = default  # comment``, in field order, the comments aligned:
    the dataclass is the single source, the cell is generated from it. ``defaults`` replaces some
    fields' values (a notebook shows its ``smoke`` values: see :func:`workbench.recipes.notebook_defaults`).
    """
    hints = typing.get_type_hints(cls)
    comments = _field_comments(cls)
    defaults = defaults or {}
    heads = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        default = defaults.get(f.name, default)
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


def write_parameters_cell(path: str | Path, cls: type, defaults: dict | None = None) -> bool:
    """Replace the tagged parameters cell of the notebook at ``path`` with :func:`parameters_cell`
    of ``cls`` (and ``defaults``); returns whether the file changed."""
    path = Path(path)
    nb = json.loads(path.read_text(encoding="utf-8"))
    cell = notebook_parameters_cell(nb)
    if cell is None:
        raise ValueError(f"{path} has no code cell tagged 'parameters'")
    text = parameters_cell(cls, defaults)
    old = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
    if old == text:
        return False
    cell["source"] = text.splitlines(keepends=True)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return True


# ----------------------------------------------------------------------- read from the source
# The CLI's help and its quick checks read a recipe's parameters from the recipe's source file, so
# `train --help`, `reproduce --help` and a misspelt parameter answer without importing torch.
_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "tuple": tuple, "dict": dict,
          "None": None, "Any": Any, "Optional": typing.Optional, "Literal": typing.Literal}


def _module_ast(module: str) -> ast.Module | None:
    import importlib.util
    try:
        spec = importlib.util.find_spec(module)
        return ast.parse(Path(spec.origin).read_text(encoding="utf-8")) if spec and spec.origin else None
    except (ImportError, OSError, SyntaxError, ValueError):
        return None


def source_constant(module: str, name: str) -> str | None:
    """The value of the module-level string constant ``name`` of ``module``, read from its source."""
    tree = _module_ast(module)
    for node in tree.body if tree else []:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets) and node.value is not None:
                try:
                    v = ast.literal_eval(node.value)
                except ValueError:
                    return None
                return v if isinstance(v, str) else None
    return None


def _class_fields(tree: ast.Module, src: str, cls: str, depth: int = 0) -> list[tuple[str, str, Any, str]] | None:
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    aliases = {t.id: n.value.id for n in tree.body if isinstance(n, ast.Assign) and isinstance(n.value, ast.Name)
               for t in n.targets if isinstance(t, ast.Name)}
    cls = aliases.get(cls, cls)
    node = classes.get(cls)
    if node is None or depth > 5:
        return None
    out: list = []
    for b in node.bases:
        name = b.id if isinstance(b, ast.Name) else None
        if name == "RecipeParams":
            base_src = inspect.getsource(RecipeParams)
            out += _class_fields(ast.parse(textwrap.dedent(base_src)), textwrap.dedent(base_src), "RecipeParams",
                                 depth + 1) or []
        elif name in classes:
            out += _class_fields(tree, src, name, depth + 1) or []
    lines = src.splitlines()
    for n in node.body:
        if not (isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)):
            continue
        tail = lines[n.end_lineno - 1][n.end_col_offset:]
        comment = tail.split("#", 1)[1].strip() if "#" in tail else ""
        default: Any = dataclasses.MISSING
        v = n.value
        if v is not None:
            if isinstance(v, ast.Call) and getattr(v.func, "id", "") == "field":
                kw = {k.arg: k.value for k in v.keywords}
                if "default_factory" in kw and getattr(kw["default_factory"], "id", "") in ("list", "dict", "tuple"):
                    default = {"list": [], "dict": {}, "tuple": ()}[kw["default_factory"].id]
                elif "default" in kw:
                    v = kw["default"]
            if default is dataclasses.MISSING:
                try:
                    default = ast.literal_eval(v)
                except ValueError:
                    default = ast.get_source_segment(src, v)    # an expression: shown, not evaluated
        row = (n.target.id, ast.get_source_segment(src, n.annotation) or "", default, comment)
        at = [k for k, f in enumerate(out) if f[0] == n.target.id]     # a redefined field keeps its place
        if at:
            out[at[0]] = row
        else:
            out.append(row)
    return out


def source_fields(module: str, cls: str) -> list[tuple[str, str, Any, str]] | None:
    """``[(name, type, default, meaning)]`` of the dataclass ``cls`` (or an alias such as ``Params``)
    of ``module``, bases first, read from the source file without importing it; None when it cannot
    be read. A default that is not a literal is its source text."""
    import importlib.util
    try:
        spec = importlib.util.find_spec(module)
        src = Path(spec.origin).read_text(encoding="utf-8")
        return _class_fields(ast.parse(src), src, cls)
    except (ImportError, OSError, SyntaxError, ValueError, AttributeError):
        return None


def fields_help(fields: list[tuple[str, str, Any, str]], title: str) -> str:
    """A help text listing ``fields`` (from :func:`source_fields`): name, type, default and meaning."""
    rows = [(n, t.replace(" ", ""), _literal(d) if d is not dataclasses.MISSING else "(required)", c)
            for n, t, d, c in fields]
    w = [max(len(r[i]) for r in rows) for i in range(3)] if rows else [0, 0, 0]
    lines = [title]
    lines += [f"  {n:<{w[0]}}  {t:<{w[1]}}  {d:<{w[2]}}  {c}".rstrip() for n, t, d, c in rows]
    return "\n".join(lines)


def _annotation(node):
    """A type annotation rebuilt from its syntax tree (names from ``_TYPES``, ``X[...]``, ``X | Y``,
    ``None``, ``...``); anything else raises, and the caller skips the quick check."""
    if isinstance(node, ast.Name):
        return _TYPES[node.id]
    if isinstance(node, ast.Constant) and (node.value is None or node.value is Ellipsis or isinstance(node.value, str)):
        return node.value
    if isinstance(node, ast.Tuple):
        return tuple(_annotation(e) for e in node.elts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        a, b = _annotation(node.left), _annotation(node.right)
        return typing.Union[a, b]
    if isinstance(node, ast.Subscript):
        base, arg = _annotation(node.value), _annotation(node.slice)
        return base[arg]
    raise ValueError(f"unsupported annotation {ast.dump(node)}")


def light_params(module: str, cls: str) -> type | None:
    """A plain dataclass with the fields, types and defaults of ``cls`` in ``module``, built from the
    source (no import of the recipe, no range checks): enough for :func:`workbench.config.parse` to
    refuse unknown keys and ill-typed values at once. None when a type or default is not plain."""
    fs = source_fields(module, cls)
    if not fs:
        return None
    spec = []
    for name, tp, default, _ in fs:
        try:
            t = _annotation(ast.parse(tp, mode="eval").body)
        except Exception:   # noqa: BLE001 -- a type we cannot rebuild: no quick check
            return None
        if default is dataclasses.MISSING or (isinstance(default, str) and default == tp):
            return None
        f = field(default_factory=lambda d=default: type(d)(d)) if isinstance(default, (list, dict)) else field(default=default)
        spec.append((name, t, f))
    return dataclasses.make_dataclass(cls, spec, frozen=True)


def suggest(word: str, choices) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` to ``word`` (difflib), else ``""``."""
    import difflib
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
