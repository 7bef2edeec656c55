"""The comparison table of ``reproduce`` and ``report``: one row per notebook summary (or run), fitted
to the terminal's width (120 columns by default), numbers formatted, empty columns left out.

Columns of a notebook row: paper, scale, verdict (with its basis: "1 run" or "N seeds"), the metric
with its direction (``↓`` lower is better, ``↑`` higher is better), baseline and method values, the
ratio method / baseline, every arm that beat the method ("beaten by") and the wall time. The claims
and what each paper reported follow the table, one wrapped paragraph per paper.
"""
from __future__ import annotations

import math
import textwrap

from ..recipes import REGISTRY, recipe
from ..recipes.base import judge

WIDTH = 120
#: columns cut only when cutting every other one is not enough
CUT_FIRST = {"beaten by", "claim"}
KEEP = {"paper", "scale", "verdict", "ratio", "wall", "wins", "p (t-test)", "metric"}
ARROW = {"lower": "↓", "higher": "↑"}


def fmt_seconds(s) -> str:
    """Seconds as ``12s`` / ``3m05s`` (empty for a missing value)."""
    if not isinstance(s, (int, float)) or isinstance(s, bool) or not math.isfinite(s):
        return ""
    s = int(round(s))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def fmt_num(v, digits: int = 4) -> str:
    """A number for a table: ``3.592e9`` not ``3592421376.000001``, ``0.277``, ``12``; "–" for None/NaN."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v) if abs(v) < 10 ** 7 else fmt_num(float(v), digits)
    if isinstance(v, float):
        if not math.isfinite(v):
            return "–"
        if v == int(v) and abs(v) < 10 ** 7:
            return str(int(v))
        t = f"{v:.{digits}g}"
        if "e" in t:
            mant, exp = t.split("e")
            t = f"{mant}e{int(exp)}"
        return t
    return str(v)


def paper_result(summary: dict) -> str:
    """What the paper reported: the summary's own ``paper_result``, else its recipe's ``PAPER_RESULT``."""
    if summary.get("paper_result"):
        return summary["paper_result"]
    name = summary.get("paper") or ""
    return getattr(recipe(name), "PAPER_RESULT", "") if name in REGISTRY else ""


def _short(text, n: int) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= n else text[: max(n - 1, 0)] + "…"


def ratio(s: dict):
    """method value / baseline value of a summary (None when either is missing or zero)."""
    bv, mv = (s.get("baseline") or {}).get("value"), (s.get("method") or {}).get("value")
    ok = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    return mv / bv if ok(bv) and ok(mv) and bv else None


def judged(s: dict, study: dict | None = None) -> dict:
    """The summary's ``better`` / ``verdict`` / ``verdict_basis`` / ``beaten_by`` (its own, else
    computed: a summary.json from before they existed), the verdict taken from ``study`` when given."""
    j = judge(s)
    for k in ("better", "verdict", "verdict_basis", "beaten_by"):
        if s.get(k):
            j[k] = s[k]
    if study:
        from .study import study_verdict
        j["verdict"], j["verdict_basis"] = study_verdict(study)
    return j


def verdict_label(j: dict) -> str:
    """``holds (1 run)`` / ``inconclusive (5 seeds)``."""
    basis = j.get("verdict_basis", "")
    if basis.startswith("study over "):
        n = basis[len("study over "):].split(" ", 1)[0]
        return f"{j['verdict']} ({n} seeds)"
    return f"{j['verdict']} (1 run)" if j.get("verdict") else ""


def beaten_text(j: dict) -> str:
    return ", ".join(f"{a['name']}={fmt_num(a.get('value'), 3)}" for a in j.get("beaten_by") or []) or "none"


def summary_row(s: dict, width: int = 48, study: dict | None = None) -> dict:
    """One row of the comparison table for a notebook's summary (or a failure record)."""
    b, m = s.get("baseline") or {}, s.get("method") or {}
    wall = s.get("notebook_wall_s", s.get("wall_s"))
    if s.get("failed"):
        return {"paper": s.get("paper"), "scale": s.get("scale"), "verdict": "FAILED", "metric": "",
                "baseline": _short(s["failed"], width), "method": "", "ratio": "", "beaten by": "",
                "wall": fmt_seconds(wall)}
    j = judged(s, study)
    r = ratio(s)
    return {"paper": s.get("paper"), "scale": s.get("scale"), "verdict": verdict_label(j),
            "metric": f"{s.get('metric')} {ARROW.get(j['better'], '')}".strip(),
            "baseline": f"{_short(b.get('name'), 12)}={fmt_num(b.get('value'))}",
            "method": f"{_short(m.get('name'), 12)}={fmt_num(m.get('value'))}",
            "ratio": fmt_num(r, 4) if r is not None else "–", "beaten by": beaten_text(j),
            "wall": fmt_seconds(wall)}


def claims_text(summaries: list[dict], width: int = WIDTH) -> str:
    """The claims tested and what each paper reported, one wrapped paragraph per paper."""
    out, seen = [], set()
    for s in summaries:
        if s.get("failed") or not s.get("claim") or s.get("paper") in seen:
            continue
        seen.add(s.get("paper"))
        claim = str(s.get("claim")).strip()
        text = f"{s.get('paper')}: claim tested: {claim}{'' if claim.endswith(('.', ')')) else '.'}"
        pr = paper_result(s)
        if pr:
            text += f" The paper reports: {pr}{'' if pr.strip().endswith('.') else '.'}"
        out.append(textwrap.fill(" ".join(text.split()), width, subsequent_indent="    "))
    return "\n".join(out)


LEGEND = ("verdict: 1 run = the method ahead by more than 5% to hold; N seeds = paired t-test p < 0.05; "
          "↓ lower is better, ↑ higher; ratio = method / baseline")


def format_rows(rows: list[dict], width: int = WIDTH) -> str:
    """Rows (dicts with the same keys) as a plain-text table at most ``width`` columns wide: columns
    whose cells are all empty are left out, and the widest columns are cut (with "…") until it fits."""
    if not rows:
        return "(no runs)"
    cols = [c for c in rows[0] if any(str(r.get(c, "") or "").strip() not in ("", "nan") for r in rows)]
    cells = [[" ".join(str(r.get(c, "") if r.get(c) is not None else "").split()) for c in cols] for r in rows]
    w = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    sep = 2
    # cut "beaten by" first, then the other free-text columns, the short ones only if need be
    for stage in ("first", "free", "all"):
        while sum(w) + sep * (len(w) - 1) > width:
            cand = [k for k in range(len(w)) if w[k] > max(len(cols[k]), {"first": 12, "free": 14}.get(stage, 6))
                    and (cols[k] in CUT_FIRST if stage == "first" else stage == "all" or cols[k] not in KEEP)]
            if not cand:
                break
            w[max(cand, key=lambda k: w[k])] -= 1
    line = lambda vals: (" " * sep).join(_short(v, w[i]).ljust(w[i]) for i, v in enumerate(vals)).rstrip()
    return "\n".join([line(cols), line(["-" * x for x in w])] + [line(r) for r in cells])


def same_scale(rows: list[dict]) -> tuple[list[dict], str]:
    """Rows without their ``scale`` column when every row has the same one, and that scale ("" if not)."""
    scales = {r.get("scale") for r in rows}
    if len(scales) == 1 and None not in scales and len(rows) > 0:
        return [{k: v for k, v in r.items() if k != "scale"} for r in rows], str(scales.pop())
    return rows, ""


def print_table(df, width: int = WIDTH) -> None:
    """Print a table (a DataFrame or a list of row dicts) fitted to ``width`` columns."""
    if df is None or len(df) == 0:
        print("(no runs)")
        return
    rows = df if isinstance(df, list) else df.to_dict(orient="records")
    print(format_rows(rows, width))


def print_comparison(summaries: list[dict], studies: dict | None = None, width: int = WIDTH) -> None:
    """The comparison table of notebook summaries, its legend and the claims below it."""
    studies = studies or {}
    rows, scale = same_scale([summary_row(s, study=studies.get(s.get("paper"))) for s in summaries])
    if scale:
        print(f"at scale {scale}:")
    print_table(rows, width)
    print(textwrap.fill(LEGEND, width))
    claims = claims_text(summaries, width)
    if claims:
        print("\n" + claims)


def study_line(st: dict) -> dict:
    """A study's row in a table that fits 120 columns (the full row: :func:`workbench.reproduce.study.study_row`)."""
    from .study import fmt_p, study_verdict
    pr = st.get("paired") or {}
    n, nx = pr.get("n", 0), pr.get("n_excluded", 0)
    diff = fmt_num(pr.get("mean_diff")) + (f" ± {fmt_num(pr.get('se'), 2)}" if pr.get("se") is not None else "")
    return {"paper": st.get("paper"), "scale": st.get("scale"),
            "verdict": f"{study_verdict(st)[0]} ({n + (pr.get('n_censored') or 0)} seeds)",
            "metric": f"{st.get('metric')} {'↑' if st.get('higher_is_better') else '↓'}",
            "baseline": f"{_short(st.get('baseline_name'), 12)}={fmt_num(pr.get('baseline_mean'))}",
            "method": f"{_short(st.get('method_name'), 12)}={fmt_num(pr.get('method_mean'))}",
            "method - base": diff, "wins": f"{pr.get('wins', 0)}/{n + (pr.get('n_censored') or 0)}"
            + (f" +{nx} excl." if nx else ""),
            "p (t-test)": fmt_p(pr.get("p_value"))}


def print_studies(studies: list[dict], width: int = WIDTH) -> None:
    """The studies' table (one row per study, fitted to ``width``) under a heading."""
    rows, scale = same_scale([study_line(st) for st in studies])
    print(f"studies over seeds ({'scale ' + scale + '; ' if scale else ''}method - baseline paired by seed)")
    print_table(rows, width)


# ------------------------------------------------------------------------------------- report DIR
#: what a run's summary.json (written by ``wb.train`` / a recipe's run) shows, first found wins
_RUN_COLS = [("recipe", ("recipe",)), ("arm", ("selector", "schedule", "name", "method")), ("seed", ("seed",)),
             ("steps", ("steps", "step")), ("tokens", ("tokens",)),
             ("eval loss", ("final_eval_loss", "eval_loss", "final_test_loss", "final_loss")),
             ("stop", ("stop_reason",)), ("train", ("train_s", "wall_s")), ("complete", ("complete",))]


def run_row(s: dict, rel: str) -> dict:
    """One row for a run directory's summary.json (not a notebook's)."""
    row = {"run": rel}
    for col, keys in _RUN_COLS:
        v = next((s[k] for k in keys if k in s and s[k] is not None), None)
        row[col] = (fmt_seconds(v) if col == "train" else ("yes" if v else "no") if col == "complete"
                    else fmt_num(v) if v is not None else "")
    return row


def report_text(root, width: int = WIDTH) -> str:
    """What ``python -m workbench report ROOT`` prints: the papers (notebook summaries, with verdicts
    and the studies' verdicts) and the runs below ``root``, each table fitted to ``width``."""
    import io
    import json
    from contextlib import redirect_stdout
    from pathlib import Path
    from .study import load_studies
    root = Path(root)
    papers, runs = [], []
    for p in sorted(root.rglob("summary.json")):
        try:
            s = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(s, dict):
            continue
        rel = p.parent.relative_to(root).as_posix() or "."
        (papers if s.get("metric") and "baseline" in s else runs).append((rel, s))
    studies = {st["paper"]: st for _, st in load_studies(root)}
    found = bool(papers or runs or studies)
    # a study's seeds are summed up by its row in the studies' table
    papers = [(rel, s) for rel, s in papers
              if not (s.get("paper") in studies and rel.startswith(f"{s.get('paper')}/seed-"))]
    buf = io.StringIO()
    with redirect_stdout(buf):
        if not found:
            print(f"(no summary.json below {root})")
        if papers:
            rows = []
            for rel, s in papers:
                st = studies.get(s.get("paper")) if rel == s.get("paper") else None
                rows.append({"folder": rel, **summary_row(s, study=st)})
            if all(r["folder"] == r["paper"] for r in rows):
                rows = [{k: v for k, v in r.items() if k != "folder"} for r in rows]
            rows, scale = same_scale(rows)
            print(f"papers ({len(rows)} notebook summaries{', scale ' + scale if scale else ''})")
            print_table(rows, width)
            print(textwrap.fill(LEGEND, width))
        if studies:
            print()
            print_studies(list(studies.values()), width)
        if runs:
            print(f"\nruns ({len(runs)} run directories)")
            print_table([run_row(s, rel) for rel, s in runs], width)
        if papers or studies:
            claims = claims_text([s for _, s in papers] + [st for st in studies.values()], width)
            if claims:
                print("\n" + claims)
    return buf.getvalue().strip("\n")
