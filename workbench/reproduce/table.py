"""The comparison table of ``reproduce`` and ``report``: one row per notebook summary."""
from __future__ import annotations

from ..recipes import REGISTRY, recipe


def fmt_seconds(s) -> str:
    """Seconds as ``12s`` / ``3m05s`` (empty for a missing value)."""
    if not isinstance(s, (int, float)):
        return ""
    s = int(round(s))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def paper_result(summary: dict) -> str:
    """What the paper reported: the summary's own ``paper_result``, else its recipe's ``PAPER_RESULT``."""
    if summary.get("paper_result"):
        return summary["paper_result"]
    name = summary.get("paper") or ""
    return getattr(recipe(name), "PAPER_RESULT", "") if name in REGISTRY else ""


def print_table(df) -> None:
    if df is None or len(df) == 0:
        print("(no runs)")
        return
    import pandas as pd
    with pd.option_context("display.max_columns", 20, "display.width", 200, "display.max_colwidth", 48):
        print(df.to_string(index=False))


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return v


def _short(text, n: int) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def ratio(s: dict):
    """method value / baseline value of a summary (None when either is missing or zero)."""
    bv, mv = (s.get("baseline") or {}).get("value"), (s.get("method") or {}).get("value")
    ok = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    return mv / bv if ok(bv) and ok(mv) and bv else None


def summary_row(s: dict, width: int = 48) -> dict:
    """One row of the comparison table for a notebook's summary (or a failure record)."""
    b, m = s.get("baseline") or {}, s.get("method") or {}
    wall = s.get("notebook_wall_s", s.get("wall_s"))
    if s.get("failed"):
        return {"paper": s.get("paper"), "scale": s.get("scale"), "claim": "FAILED: " + _short(s["failed"], width - 8),
                "paper reports": "", "metric": "", "baseline": "", "method": "", "ratio": "",
                "wall": fmt_seconds(wall) if wall else ""}
    r = ratio(s)
    return {"paper": s.get("paper"), "scale": s.get("scale"), "claim": _short(s.get("claim"), width),
            "paper reports": _short(paper_result(s), 36), "metric": s.get("metric"),
            "baseline": f"{b.get('name')}={_fmt(b.get('value'))}", "method": f"{m.get('name')}={_fmt(m.get('value'))}",
            "ratio": _fmt(r) if r is not None else "-", "wall": fmt_seconds(wall) if wall else ""}
