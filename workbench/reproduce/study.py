"""Studies: one notebook run once per seed, and paired statistics over the seeds.

``python -m workbench reproduce NAME --scale S --seeds 0-4`` runs the notebook once per seed, each
in its own process (:func:`workbench.reproduce.notebooks.reproduce`), into ``OUT/NAME/seed-S/``
(executed notebook, ``summary.json``, run directories), then writes ``OUT/NAME/study.json``::

    {"paper": "rho_loss", "scale": "tiny", "metric": "steps_to_target", "higher_is_better": false,
     "baseline_name": "uniform", "method_name": "rho_loss", "seeds": [0, 1, 2, 3, 4],
     "per_seed": [{"seed": 0, "baseline": 120, "method": 57, "diff": -63, "summary": "seed-0/summary.json"}, ...],
     "paired": {"n": 5, "n_excluded": 0, "excluded_seeds": [], "baseline_mean": ..., "method_mean": ...,
                "mean_diff": -58.2, "se": 4.1, "wins": 5, "losses": 0, "ties": 0,
                "p_value": 0.0002, "wilcoxon_p": 0.0625},
     "extras": {"speedup.rho_loss": {"values": [...], "mean": ..., "se": ..., "n": 5}, ...},
     "extras_paired": {"final_accuracy": {...paired, for extra numbers given per arm...}}, ...}

``extras_paired`` pairs every number ``extra`` gives per arm (``{"final_accuracy": {"uniform": ..,
"rho_loss": ..}}``) between the baseline and the method, and any other pair of arms the recipe names
in ``STUDY_PAIRS`` (:func:`study_pairs`; key ``"<extra key>: <method> - <baseline>"``).

``verdict`` ("holds" / "does not hold" / "inconclusive") and ``verdict_basis`` follow
:func:`workbench.recipes.base.verdict_study`: the paired t-test's p < 0.05 and the side the mean
difference favours. ``diff`` is method - baseline; a *win* is a seed where the method is better in the metric's
direction (``higher_is_better``, from the summary, else from the metric's name:
:func:`workbench.recipes.base.higher_is_better`). ``p_value`` is the two-sided paired t-test
(``scipy.stats.ttest_rel``), ``wilcoxon_p`` the Wilcoxon signed-rank test (``scipy.stats.wilcoxon``,
for five seeds or more). A seed where either arm has no value (None / NaN: e.g. never reached the
target) stays in ``per_seed`` and is left out of the paired statistics (``n_excluded``), except for
metrics "to a target" (``*_to_*``: steps or FLOPs to reach it), where None means *never reached within
the run*: worse than any value reached. There a seed where only the method never reached the target
counts as a loss, one where only the baseline never did as a win, one where neither did as a tie
(``censored``, ``never_reached``); the means and the t-test use the seeds where both arms reached it,
and ``sign_p`` (a two-sided sign test over every decided seed, ``scipy.stats.binomtest``) counts all.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import re
import warnings
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..recipes import ORDER
from ..recipes.base import higher_is_better as _name_says_higher
from ..recipes.base import verdict_study
from ..runs import atomic_write, dumps

MAX_SEEDS = 1000


# ------------------------------------------------------------------------------------- seeds
def parse_seeds(spec: str) -> list[int]:
    """``"0-4"`` -> [0, 1, 2, 3, 4]; ``"0,3,7"``; ``"0-2,5"``. Ranges are inclusive; order kept;
    a bad or repeated seed raises one-line :class:`ConfigError`."""
    text = str(spec).strip()
    if not text:
        raise ConfigError("--seeds needs seeds, like 0-4, 0,3,7 or 0-2,5")
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not m:
            raise ConfigError(f"--seeds {spec!r}: {part!r} is not a seed (a whole number >= 0) or a range "
                              "like 0-4")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise ConfigError(f"--seeds {spec!r}: the range {part!r} runs backwards")
        if len(out) + hi - lo + 1 > MAX_SEEDS:
            raise ConfigError(f"--seeds {spec!r}: more than {MAX_SEEDS} seeds")
        out += range(lo, hi + 1)
    dup = sorted({s for s in out if out.count(s) > 1})
    if dup:
        raise ConfigError(f"--seeds {spec!r}: seed {dup[0]} is given more than once")
    return out


def format_seeds(seeds: list[int]) -> str:
    """The inverse of :func:`parse_seeds`: [0, 1, 2, 5] -> ``"0-2,5"``."""
    parts, i = [], 0
    while i < len(seeds):
        j = i
        while j + 1 < len(seeds) and seeds[j + 1] == seeds[j] + 1:
            j += 1
        parts.append(str(seeds[i]) if j == i else f"{seeds[i]}-{seeds[j]}")
        i = j + 1
    return ",".join(parts)


def seed_dir(out: str | Path, name: str, seed: int) -> Path:
    return Path(out) / name / f"seed-{seed}"


# ------------------------------------------------------------------------------------- statistics
def _value(v) -> float | None:
    """A finite number, or None (None, NaN, inf, bools and strings are not values)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def _nan_to_none(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def mean_se(values) -> dict:
    """``{"n", "mean", "se"}`` of the finite values (se: sample standard deviation / sqrt(n); None below 2)."""
    xs = [v for v in (_value(v) for v in values) if v is not None]
    n = len(xs)
    if not n:
        return {"n": 0, "mean": None, "se": None}
    mean = sum(xs) / n
    se = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1) / n) if n >= 2 else None
    return {"n": n, "mean": mean, "se": se}


def paired_stats(baseline, method, higher_is_better: bool = False, seeds=None, censored: bool = False,
                 failed=()) -> dict:
    """Paired statistics of method - baseline over seeds (lists of equal length; None/NaN excluded,
    unless ``censored``: then None is "never reached", worse than any value, see the module's text;
    the seeds in ``failed`` are excluded either way).

    Returns ``n`` (pairs used), ``n_excluded`` and ``excluded_seeds``, ``baseline_mean``,
    ``method_mean``, ``mean_diff``, ``se`` (of the mean difference), ``wins`` / ``losses`` / ``ties``
    (a win: the method is better in the metric's direction), ``p_value`` (two-sided paired t-test,
    ``scipy.stats.ttest_rel``; None below 2 pairs or when every difference is the same) and
    ``wilcoxon_p`` (Wilcoxon signed-rank, ``scipy.stats.wilcoxon``; None below 5 pairs or when every
    difference is 0).
    """
    baseline, method = list(baseline), list(method)
    if len(baseline) != len(method):
        raise ConfigError(f"paired statistics need as many baseline values ({len(baseline)}) as method "
                          f"values ({len(method)})")
    seeds = list(seeds) if seeds is not None else list(range(len(baseline)))
    pairs, excluded, never_m, never_b, never_both = [], [], [], [], []
    failed = set(failed)
    for s, b, m in zip(seeds, baseline, method):
        b, m = _value(b), _value(m)
        if s in failed:
            excluded.append(s)
        elif b is not None and m is not None:
            pairs.append((b, m))
        elif not censored:
            excluded.append(s)
        elif b is not None:
            never_m.append(s)
        elif m is not None:
            never_b.append(s)
        else:
            never_both.append(s)
    n = len(pairs)
    bs, ms = [b for b, _ in pairs], [m for _, m in pairs]
    diffs = [m - b for b, m in pairs]
    sign = 1 if higher_is_better else -1
    d = mean_se(diffs)
    out = {"n": n, "n_excluded": len(excluded), "excluded_seeds": excluded,
           "higher_is_better": bool(higher_is_better),
           "baseline_mean": mean_se(bs)["mean"], "method_mean": mean_se(ms)["mean"],
           "mean_diff": d["mean"], "se": d["se"],
           "wins": sum(sign * x > 0 for x in diffs) + len(never_b),
           "losses": sum(sign * x < 0 for x in diffs) + len(never_m),
           "ties": sum(x == 0 for x in diffs) + len(never_both), "p_value": None, "wilcoxon_p": None}
    if censored:
        out.update(censored=True, n_censored=len(never_m) + len(never_b) + len(never_both),
                   never_reached={"method": never_m, "baseline": never_b, "both": never_both}, sign_p=None)
        if out["wins"] + out["losses"]:
            from scipy import stats
            out["sign_p"] = float(stats.binomtest(out["wins"], out["wins"] + out["losses"]).pvalue)
    if n >= 2 and len(set(diffs)) > 1:
        from scipy import stats
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out["p_value"] = _nan_to_none(stats.ttest_rel(ms, bs).pvalue)
    if n >= 5 and any(diffs):
        from scipy import stats
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                out["wilcoxon_p"] = _nan_to_none(stats.wilcoxon(ms, bs).pvalue)
            except ValueError:
                pass
    return out


def flat_numbers(d: Any, prefix: str = "") -> dict[str, float | None]:
    """Every number below a nested dict, by dotted key (``eval_loss.mates``); None/NaN kept as None,
    strings, bools and lists left out."""
    out: dict[str, float | None] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flat_numbers(v, f"{prefix}{k}."))
    elif d is None or (isinstance(d, (int, float)) and not isinstance(d, bool)):
        out[prefix[:-1]] = _value(d)
    return out


# ------------------------------------------------------------------------------------- study.json
def is_censored(metric: str | None) -> bool:
    """A metric "to a target" (``steps_to_target``, ``flops_to_target``, ...): None means never reached."""
    return "_to_" in str(metric or "")


def build_study(name: str, scale: str, seeds: list[int], summaries: dict[int, dict | None],
                failures: dict[int, str] | None = None, wall_s: float | None = None) -> dict:
    """The study of ``name`` from its seeds' summaries (``{seed: summary}``; a failed seed maps to
    None or a ``{"failed": ...}`` record, with its error in ``failures``). ``wall_s``: the seconds the
    command that wrote it took (0-ish when every seed was already complete); ``seeds_wall_s`` adds
    up the seeds' own notebook wall times."""
    failures = dict(failures or {})
    done = [s for s in seeds if summaries.get(s) and not summaries[s].get("failed")]
    first = summaries[done[0]] if done else {}
    metric = first.get("metric")
    hib = first.get("higher_is_better")
    hib = bool(hib) if isinstance(hib, bool) else _name_says_higher(metric or "")
    bname = (first.get("baseline") or {}).get("name")
    mname = (first.get("method") or {}).get("name")
    per_seed = []
    for s in seeds:
        sm = summaries.get(s)
        if not sm or sm.get("failed"):
            per_seed.append({"seed": s, "baseline": None, "method": None, "diff": None,
                             "failed": failures.get(s) or (sm or {}).get("failed") or "no summary"})
            continue
        b, m = _value((sm.get("baseline") or {}).get("value")), _value((sm.get("method") or {}).get("value"))
        per_seed.append({"seed": s, "baseline": b, "method": m, "diff": m - b if b is not None and m is not None
                         else None, "summary": f"seed-{s}/summary.json",
                         "wall_s": sm.get("notebook_wall_s", sm.get("wall_s"))})
        if sm.get("metric") != metric:
            per_seed[-1]["note"] = f"metric {sm.get('metric')!r} differs from {metric!r}"
    paired = paired_stats([p["baseline"] for p in per_seed], [p["method"] for p in per_seed], hib,
                          seeds=[p["seed"] for p in per_seed], censored=is_censored(metric),
                          failed=[p["seed"] for p in per_seed if p.get("failed")])
    # every number in `extra`, per seed (in the order of `seeds`; None where a seed has none)
    flats = {s: flat_numbers(summaries[s].get("extra") or {}) for s in done}
    keys: list[str] = []
    for s in done:
        keys += [k for k in flats[s] if k not in keys]
    extras = {}
    for k in keys:
        vals = [flats[s].get(k) for s in done]
        if all(v is None for v in vals):
            continue
        extras[k] = {"values": vals, **mean_se(vals)}
    # extra numbers given per arm ({"eval_loss": {"random": .., "mates": ..}}): paired like the metric
    extras_paired = {}
    # first the pairs of arms the recipe names (``STUDY_PAIRS``: e.g. budget_bert's recipe arms against each other)
    for head, base, meth in study_pairs(name):
        bk, mk = f"{head}.{base}", f"{head}.{meth}"
        if bk in extras and mk in extras:
            extras_paired[f"{head}: {meth} - {base}"] = paired_stats(
                [flats[s].get(bk) for s in done], [flats[s].get(mk) for s in done], _name_says_higher(head), seeds=done)
    if bname and mname:
        for k in keys:
            if not k.endswith("." + str(bname)):
                continue
            head = k[: -len(str(bname)) - 1]
            mk = f"{head}.{mname}"
            if mk in extras and k in extras:
                extras_paired[head] = paired_stats([flats[s].get(k) for s in done], [flats[s].get(mk) for s in done],
                                                   _name_says_higher(head), seeds=done)
    params = dict(first.get("params") or {})
    params.pop("seed", None)
    verdict, basis = verdict_study(paired)
    return {
        "paper": name, "scale": scale, "metric": metric, "higher_is_better": hib,
        "better": "higher" if hib else "lower", "verdict": verdict, "verdict_basis": basis,
        "baseline_name": bname, "method_name": mname, "claim": first.get("claim", ""),
        "paper_result": first.get("paper_result", ""),
        "seeds": list(seeds), "complete_seeds": done, "failed_seeds": sorted(set(seeds) - set(done)),
        "per_seed": per_seed, "paired": paired, "extras": extras, "extras_paired": extras_paired,
        "params": params, "wall_s": wall_s,
        "seeds_wall_s": sum(p.get("wall_s") or 0.0 for p in per_seed if not p.get("failed")),
        "generated": dt.datetime.now().isoformat(timespec="seconds"),
        "reproduce": reproduce_command(name, scale, params, f"--seeds {format_seeds(list(seeds))}"),
    }


def reproduce_command(name: str, scale: str, params: dict | None = None, tail: str = "") -> str:
    """The ``reproduce`` command line of a run of ``name`` at ``scale`` with ``params``: a ``-p key=value``
    for every parameter that differs from the scale's own values (``papers/NAME/SCALE.yaml`` over the
    defaults; ``seed``, ``scale`` and ``out_dir`` left out), so a study run with overrides says how."""
    cmd = f"python -m workbench reproduce {name} --scale {scale}"
    over = []
    if params:
        try:
            from ..recipes import scale_values
            base = scale_values(name, scale)
        except (ConfigError, ImportError, OSError):
            base = None
        if base is not None:
            norm = lambda v: ",".join(map(str, v)) if isinstance(v, (list, tuple)) else v
            over = [f"-p {k}={norm(v)}" for k, v in params.items()
                    if k not in ("seed", "scale", "out_dir") and k in base and norm(v) != norm(base[k])]
    return " ".join([cmd, *over, *([tail] if tail else [])])


def study_pairs(name: str) -> list[tuple[str, str, str]]:
    """The extra pairs of arms recipe ``name`` asks a study to compare: its module's optional
    ``STUDY_PAIRS``, ``[(extra key, baseline arm, method arm), ...]`` (``("recipes.eval_loss",
    "vanilla", "cramming")`` pairs ``extra["recipes"]["eval_loss"]["cramming"]`` with ``...["vanilla"]``
    per seed). The summary's own baseline and method are always paired; these come on top. A name that
    is not a registered recipe has none."""
    from ..recipes import REGISTRY, recipe
    if name not in REGISTRY:
        return []
    return [tuple(p) for p in getattr(recipe(name), "STUDY_PAIRS", ())]


def write_study(out: str | Path, study: dict) -> Path:
    path = Path(out) / study["paper"] / "study.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, dumps(study))
    return path


def load_studies(root: str | Path) -> list[tuple[Path, dict]]:
    """``[(path, study)]`` of every readable ``root/*/study.json``, in the recipes' order."""
    found = []
    for p in Path(root).glob("*/study.json"):
        try:
            st = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(st, dict) and st.get("paper"):
            found.append((p, st))
    key = lambda ps: (ORDER.index(ps[1]["paper"]) if ps[1]["paper"] in ORDER else len(ORDER), ps[1]["paper"])
    return sorted(found, key=key)


def representative_seed(study: dict) -> int | None:
    """The first complete seed of a study (its notebook stands for the study in the report)."""
    done = study.get("complete_seeds") or [p["seed"] for p in study.get("per_seed", []) if not p.get("failed")]
    return done[0] if done else None


# ------------------------------------------------------------------------------------- the table
def fmt(v, digits: int = 4) -> str:
    if v is None or isinstance(v, bool):
        return "–" if v is None else str(v)
    if isinstance(v, float):
        return f"{v:.{digits}g}" if math.isfinite(v) else "–"
    return str(v)


def fmt_p(p) -> str:
    if p is None:
        return "–"
    return f"{p:.2g}" if p >= 1e-4 else "<1e-4"


def study_verdict(st: dict) -> tuple[str, str]:
    """(verdict, why) of a study: its own, or computed from its paired statistics (an older study.json)."""
    if st.get("verdict"):
        return st["verdict"], st.get("verdict_basis", "")
    pr = dict(st.get("paired") or {})
    pr.setdefault("higher_is_better", bool(st.get("higher_is_better")))
    return verdict_study(pr)


def study_row(st: dict) -> dict:
    """One row of the study table: paper, scale, metric, n seeds, the means, mean diff ± se, wins/n, p."""
    pr = st.get("paired") or {}
    n, nx = pr.get("n", 0), pr.get("n_excluded", 0)
    diff = fmt(pr.get("mean_diff")) + (f" ± {fmt(pr.get('se'), 2)}" if pr.get("se") is not None else "")
    return {"paper": st.get("paper"), "scale": st.get("scale"), "verdict": study_verdict(st)[0],
            "metric": f"{st.get('metric')} ({'higher' if st.get('higher_is_better') else 'lower'} is better)",
            "seeds": f"{n}" + (f" (+{pr['n_censored']} never reached)" if pr.get("n_censored") else "")
            + (f" (+{nx} excluded)" if nx else ""),
            "baseline": f"{st.get('baseline_name')}={fmt(pr.get('baseline_mean'))}",
            "method": f"{st.get('method_name')}={fmt(pr.get('method_mean'))}",
            "method - baseline": diff, "wins": f"{pr.get('wins', 0)}/{n + (pr.get('n_censored') or 0)}",
            "p (paired t)": fmt_p(pr.get("p_value")), "p (Wilcoxon)": fmt_p(pr.get("wilcoxon_p"))}


def study_frame(studies: list[dict]):
    import pandas as pd
    return pd.DataFrame([study_row(st) for st in studies])
