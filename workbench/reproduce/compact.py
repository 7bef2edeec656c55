"""Executed notebooks that render anywhere: every figure as a PNG, the live widgets left to a kernel.

An executed notebook as the kernel leaves it stores each widget view as a reference to saved widget
state, and each plotly ``FigureWidget`` in that state carries the whole plotly.js bundle (about
5 MB per view: executed notebooks of 5-10 MB); nbconvert draws those views only with scripts from a
CDN and draws plain plotly figures not at all. :func:`compact_notebook`, run by ``reproduce`` on
every executed notebook, makes each figure output static:

* an output holding a widget view *and* a static copy of its figure (the plotly JSON and/or a PNG:
  every view of :mod:`workbench.viz` displays both) keeps the static copy and drops the view;
* every output with a plotly figure gets an ``image/png`` (:func:`workbench.viz.static.figure_png`)
  when it has none, so nbconvert, code-hosting viewers and a JupyterLab without a kernel show it;
* the saved widget state keeps only the models that views still displayed need (none, for the
  workbench's own views), so plotly.js is stored at most once per remaining view, usually never;
* the figures' float64 arrays (plotly's base64 ``{"dtype": "f8", "bdata": ...}``) are stored as
  float32: seven significant digits for hover text and colour, half the bytes (the LiGO width heatmaps
  are most of that notebook).

Rerunning the notebook in a kernel brings the live views back (sliders, toggles, clicks); the
executed file is the record, small (well under 2 MB) and readable anywhere.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..runs import atomic_write
from .report import PLOTLY_MIME, WIDGET_STATE, WIDGET_VIEW, _strings

PNG = "image/png"


def _reachable(state: dict, roots: list[str]) -> set[str]:
    seen, todo = set(), list(roots)
    while todo:
        m = todo.pop()
        if m in seen or m not in state:
            continue
        seen.add(m)
        todo += [v[len("IPY_MODEL_"):] for v in _strings(state[m].get("state", {})) if v.startswith("IPY_MODEL_")]
    return seen


def float32_arrays(x) -> int:
    """Re-encode, in place, every float64 typed array (``{"dtype": "f8", "bdata": base64}``) found in
    ``x`` (a plotly figure's JSON) as float32; returns how many were."""
    import base64

    import numpy as np
    n = 0
    if isinstance(x, dict):
        if x.get("dtype") == "f8" and isinstance(x.get("bdata"), str):
            a = np.frombuffer(base64.b64decode(x["bdata"]), dtype="<f8").astype("<f4")
            x["bdata"], x["dtype"] = base64.b64encode(a.tobytes()).decode("ascii"), "f4"
            return 1
        for v in x.values():
            n += float32_arrays(v)
    elif isinstance(x, list):
        for v in x:
            n += float32_arrays(v)
    return n


def compact(nb: dict) -> dict:
    """Make ``nb`` (a loaded notebook) static in place; returns counts: ``figures`` (outputs with a
    figure), ``png_added``, ``views_made_static``, ``views_kept``, ``models_dropped``,
    ``arrays_float32``."""
    from ..viz.static import static_mimebundle
    counts = {"figures": 0, "png_added": 0, "views_made_static": 0, "views_kept": 0, "models_dropped": 0,
              "arrays_float32": 0}
    kept_views = []
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        for o in cell.get("outputs", []):
            data = o.get("data")
            if not isinstance(data, dict):
                continue
            fig = data.get(PLOTLY_MIME)
            if isinstance(fig, dict) and "data" in fig and PNG not in data:
                extra = static_mimebundle(fig)
                if extra:
                    data.update(extra)
                    counts["png_added"] += 1
            if isinstance(fig, dict):
                counts["arrays_float32"] += float32_arrays(fig)
            if WIDGET_VIEW in data:
                if PNG in data or PLOTLY_MIME in data:
                    del data[WIDGET_VIEW]
                    counts["views_made_static"] += 1
                else:
                    kept_views.append((data[WIDGET_VIEW] or {}).get("model_id"))
                    counts["views_kept"] += 1
            if PNG in data or PLOTLY_MIME in data:
                counts["figures"] += 1
    widgets = (nb.get("metadata") or {}).get("widgets") or {}
    state = (widgets.get(WIDGET_STATE) or {}).get("state")
    if isinstance(state, dict):
        keep = _reachable(state, kept_views)
        counts["models_dropped"] = len(state) - len(keep)
        if keep:
            widgets[WIDGET_STATE]["state"] = {k: v for k, v in state.items() if k in keep}
        else:
            nb["metadata"].pop("widgets", None)
    return counts


def compact_notebook(path: str | Path) -> dict:
    """:func:`compact` the notebook file at ``path`` (rewritten atomically); returns the counts plus
    ``bytes_before`` and ``bytes_after``."""
    path = Path(path)
    raw = path.read_text(encoding="utf-8")
    nb = json.loads(raw)
    counts = compact(nb)
    text = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
    atomic_write(path, text)
    return {**counts, "bytes_before": len(raw.encode("utf-8")), "bytes_after": len(text.encode("utf-8"))}
