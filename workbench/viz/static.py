"""Static renderings of plotly figures: a PNG that every viewer shows.

A plotly figure in a notebook is stored as ``application/vnd.plotly.v1+json``, which JupyterLab
draws but ``jupyter nbconvert``, code-hosting viewers and a JupyterLab without the plotly
extension do not; a widget view is stored as a widget reference that needs a kernel (or saved
widget state and scripts from a CDN). So every figure the workbench displays also carries an
``image/png`` copy, drawn here with matplotlib from the figure's JSON (no browser, no kaleido):

* :func:`figure_png` -- the PNG bytes of a figure (scatter / scattergl lines and markers, bars,
  histograms, heatmaps, subplots, log axes, horizontal and vertical lines, titles, legends);
* :func:`static_mimebundle` -- ``{"image/png": base64, "text/plain": ...}`` for a figure;
* :func:`install_renderer` -- makes plotly's default renderer in a notebook emit the plotly JSON
  *and* the PNG (``pio.renderers.default = "workbench"``), so a plain ``fig`` at the end of a cell
  survives nbconvert. :mod:`workbench.viz` calls it on import.

Why PNG and not SVG: a scatter of thousands of embedded documents is thousands of SVG elements
(hundreds of KB), a PNG of the same figure at 80 dpi about 30-60 KB whatever the number of
points; why not plotly.js in a ``text/html`` output: that is 4.8 MB per notebook and code-hosting
viewers strip scripts anyway. The PNG is an approximation of the figure (same traces, axes, titles
and colours; no hover): the live figure is one kernel away.
"""
from __future__ import annotations

import base64
import io
import re

#: plotly's default colour cycle (plotly's own default template)
COLORWAY = ["#636efa", "#EF553B", "#00cc96", "#ab63fa", "#FFA15A", "#19d3f3", "#FF6692", "#B6E880", "#FF97FF",
            "#FECB52"]
DPI = 80
MAX_LEGEND = 14
_DASH = {"dash": "--", "dot": ":", "dashdot": "-.", "longdash": "--", "longdashdot": "-."}


def _text(v) -> str:
    """A plotly title / label (a string or ``{"text": ...}``) as plain text, HTML tags dropped."""
    if isinstance(v, dict):
        v = v.get("text", "")
    s = str(v or "")
    s = re.sub(r"<br\s*/?>", "\n", s, flags=re.I)
    return re.sub(r"<[^>]+>", "", s)


def _color(c, default=None):
    """A plotly colour ('rgba(1,2,3,0.5)', '#abc', 'red') as a matplotlib colour, or ``default``."""
    if not isinstance(c, str):
        return default
    m = re.fullmatch(r"\s*rgba?\(([^)]*)\)\s*", c)
    if m:
        parts = [float(x) for x in m.group(1).split(",")]
        rgb = [min(max(p / 255.0, 0.0), 1.0) for p in parts[:3]]
        return (*rgb, min(max(parts[3], 0.0), 1.0)) if len(parts) > 3 else tuple(rgb)
    return c


def _axis_key(ref: str, kind: str) -> str:
    """'x' -> 'xaxis', 'x2' -> 'xaxis2'."""
    ref = ref or kind
    return f"{kind}axis{ref[1:]}"


def _seq(v):
    if v is None:
        return None
    if isinstance(v, dict) and "bdata" in v:        # plotly's base64 typed arrays
        import numpy as np
        arr = np.frombuffer(base64.b64decode(v["bdata"]), dtype=v.get("dtype", "f8"))
        shape = v.get("shape")
        if shape:
            arr = arr.reshape([int(s) for s in str(shape).split(",")])
        return arr.tolist()
    return list(v) if not isinstance(v, (str, bytes)) else None


def _frame(layout, size) -> tuple[float, float, float, float]:
    """The plot area (left, right, bottom, top) as fractions of the page, from ``layout.margin``."""
    w, h = size
    m = layout.get("margin") or {}
    num = lambda k, d: float(m[k]) if isinstance(m.get(k), (int, float)) else d   # noqa: E731
    title = 45 if _text(layout.get("title")) else 20
    return (min(max(num("l", 70), 50), w / 3) / w, 1 - min(num("r", 20), w / 3) / w,
            min(max(num("b", 55), 45), h / 3) / h, 1 - min(max(num("t", title), 20), h / 3) / h)


def _axes(fig, layout, data, size):
    """One matplotlib Axes per (xaxis, yaxis) pair the traces use, placed at the axes' domains."""
    w, h = size
    left, right, bottom, top = _frame(layout, size)
    pairs = []
    for t in data:
        p = (t.get("xaxis", "x") or "x", t.get("yaxis", "y") or "y")
        if p not in pairs:
            pairs.append(p)
    pairs = pairs or [("x", "y")]
    axes = {}
    for xr, yr in pairs:
        xa, ya = layout.get(_axis_key(xr, "x"), {}) or {}, layout.get(_axis_key(yr, "y"), {}) or {}
        dx, dy = xa.get("domain", [0, 1]), ya.get("domain", [0, 1])
        x0, x1 = left + dx[0] * (right - left), left + dx[1] * (right - left)
        y0, y1 = bottom + dy[0] * (top - bottom), bottom + dy[1] * (top - bottom)
        gap_x = 0.04 if dx != [0, 1] else 0.0           # room for tick labels between subplots
        gap_y = 0.05 if dy != [0, 1] else 0.0
        ax = fig.add_axes([x0 + gap_x / 2, y0 + gap_y, max(x1 - x0 - gap_x, 0.05), max(y1 - y0 - gap_y * 1.5, 0.05)])
        for a, spec, kind in ((ax, xa, "x"), (ax, ya, "y")):
            typ = spec.get("type")
            if typ == "log":
                (a.set_xscale if kind == "x" else a.set_yscale)("log")
            title = _text(spec.get("title"))
            if title:
                (a.set_xlabel if kind == "x" else a.set_ylabel)(title, fontsize=9)
            rng = spec.get("range")
            if isinstance(rng, (list, tuple)) and len(rng) == 2 and all(isinstance(r, (int, float)) for r in rng):
                lo, hi = (10 ** rng[0], 10 ** rng[1]) if typ == "log" else rng
                (a.set_xlim if kind == "x" else a.set_ylim)(lo, hi)
            if spec.get("autorange") == "reversed":
                (a.invert_xaxis if kind == "x" else a.invert_yaxis)()
        ax.tick_params(labelsize=8)
        ax.grid(True, color="#e5e5e5", linewidth=0.6)
        ax.set_axisbelow(True)
        for s in ("top", "right"):
            ax.spines[s].set_visible(False)
        axes[(xr, yr)] = ax
    return axes


def _draw_trace(ax, t, k, cmaps, stack=None):
    typ = t.get("type", "scatter")
    name = _text(t.get("name")) if t.get("showlegend", True) is not False else ""
    label = name or None
    color = _color((t.get("line") or {}).get("color")) or _color((t.get("marker") or {}).get("color")) \
        or COLORWAY[k % len(COLORWAY)]
    if t.get("visible") in (False, "legendonly"):
        return
    if typ in ("scatter", "scattergl"):
        y = _seq(t.get("y"))
        x = _seq(t.get("x"))
        if y is None:
            return
        x = x if x is not None else list(range(len(y)))
        mode = t.get("mode") or ("lines+markers" if len(y) < 20 else "lines")
        line, marker = t.get("line") or {}, t.get("marker") or {}
        if "lines" in mode:
            ax.plot(x, y, color=color, linewidth=min(float(line.get("width", 2) or 2), 3) * 0.75,
                    linestyle=_DASH.get(line.get("dash"), "-"), label=label)
            label = None
        if "markers" in mode:
            mc = marker.get("color")
            size = marker.get("size", 6)
            s = [max(float(v), 1.0) ** 2 * 0.5 for v in _seq(size)] if isinstance(size, (list, dict)) else \
                max(float(size or 6), 1.0) ** 2 * 0.5
            if isinstance(mc, (list, dict)):
                vals = _seq(mc)
                if vals and all(isinstance(v, (int, float)) for v in vals):
                    ax.scatter(x, y, c=vals, s=s, cmap=cmaps(marker.get("colorscale")), alpha=0.85,
                               linewidths=0, label=label)
                else:
                    ax.scatter(x, y, c=[_color(v, color) for v in vals], s=s, alpha=0.85, linewidths=0, label=label)
            else:
                ax.scatter(x, y, color=_color(mc, color), s=s, alpha=float(marker.get("opacity", 0.85) or 0.85),
                           linewidths=0, label=label)
        if t.get("fill") in ("tozeroy", "tonexty"):
            ax.fill_between(x, y, 0, color=color, alpha=0.15)
    elif typ == "bar":
        x, y = _seq(t.get("x")), _seq(t.get("y"))
        mc = (t.get("marker") or {}).get("color")
        c = [_color(v, color) for v in _seq(mc)] if isinstance(mc, list) else _color(mc, color)
        kw = dict(color=c, label=label, alpha=float(t.get("opacity", 1.0) or 1.0))
        width = t.get("width")
        horizontal = t.get("orientation") == "h"
        cats, vals = (y, x) if horizontal else (x, y)
        vals = [v if isinstance(v, (int, float)) else 0.0 for v in (vals or [])]
        cats = cats if cats is not None else list(range(len(vals)))
        cats = [str(v) for v in cats] if cats and isinstance(cats[0], str) else cats
        if isinstance(width, (int, float)):
            kw["height" if horizontal else "width"] = width
        if stack is not None:                           # barmode stack: each bar starts where the last ended
            base = [stack.get(cv, 0.0) for cv in cats]
            for cv, v in zip(cats, vals):
                stack[cv] = stack.get(cv, 0.0) + v
            kw["left" if horizontal else "bottom"] = base
        if horizontal:
            ax.barh(cats, vals, **kw)
        else:
            ax.bar(cats, vals, **kw)
            if x and isinstance(x[0], str) and len(x) > 6:
                ax.tick_params(axis="x", labelrotation=45)
    elif typ == "histogram":
        x = _seq(t.get("x"))
        if x is None:
            return
        x = [v for v in x if isinstance(v, (int, float))]
        bins = t.get("nbinsx") or "auto"
        density = t.get("histnorm") in ("probability density", "density")
        weights = None
        if t.get("histnorm") in ("probability", "percent") and x:
            weights = [(100.0 if t["histnorm"] == "percent" else 1.0) / len(x)] * len(x)
        ax.hist(x, bins=bins, color=color, alpha=float(t.get("opacity", 0.75) or 0.75), density=density,
                weights=weights, label=label)
    elif typ == "heatmap":
        import numpy as np
        z = np.array(_seq(t.get("z")) or [[0]], dtype=float)
        x, y = _seq(t.get("x")), _seq(t.get("y"))
        im = ax.imshow(z, aspect="auto", origin="lower", cmap=cmaps(t.get("colorscale")), interpolation="nearest")
        if x is not None and len(x) == z.shape[1] and len(x) <= 30:
            ax.set_xticks(range(len(x)), [str(v) for v in x], rotation=45 if len(x) > 6 else 0)
        if y is not None and len(y) == z.shape[0] and len(y) <= 30:
            ax.set_yticks(range(len(y)), [str(v) for v in y])
        if t.get("showscale", True) is not False:
            ax.figure.colorbar(im, ax=ax, fraction=0.04, pad=0.02).ax.tick_params(labelsize=7)


def _cmaps(scale):
    """A matplotlib colormap for a plotly colorscale (a name, or [[0, c0], ..., [1, c1]])."""
    import matplotlib.colors as mcolors
    if isinstance(scale, list) and scale and isinstance(scale[0], (list, tuple)):
        try:
            return mcolors.LinearSegmentedColormap.from_list(
                "plotly", [(float(p), _color(c, "grey")) for p, c in scale])
        except (ValueError, TypeError):
            return "viridis"
    names = {"viridis": "viridis", "blues": "Blues", "reds": "Reds", "rdbu": "RdBu", "greys": "Greys",
             "plasma": "plasma", "magma": "magma", "inferno": "inferno", "cividis": "cividis", "ylgnbu": "YlGnBu"}
    return names.get(str(scale or "").lower().removesuffix("_r"), "viridis")


def _shapes(axes, layout):
    for sh in layout.get("shapes") or []:
        if sh.get("type", "line") != "line":
            continue
        xr = str(sh.get("xref", "x")).split(" ")[0]
        yr = str(sh.get("yref", "y")).split(" ")[0]
        ax = next((a for (x, y), a in axes.items() if x == xr or y == yr), next(iter(axes.values())))
        line = sh.get("line") or {}
        kw = dict(color=_color(line.get("color"), "#444"), linestyle=_DASH.get(line.get("dash"), "-"), linewidth=1)
        if sh.get("y0") == sh.get("y1") and ("domain" in str(sh.get("xref", "")) or sh.get("xref") == "paper"):
            ax.axhline(sh["y0"], **kw)
        elif sh.get("x0") == sh.get("x1") and ("domain" in str(sh.get("yref", "")) or sh.get("yref") == "paper"):
            ax.axvline(sh["x0"], **kw)
        elif all(isinstance(sh.get(k), (int, float)) for k in ("x0", "x1", "y0", "y1")):
            ax.plot([sh["x0"], sh["x1"]], [sh["y0"], sh["y1"]], **kw)


def figure_png(figure, width: int | None = None, height: int | None = None, dpi: int = DPI) -> bytes | None:
    """The PNG bytes of a plotly figure (a ``go.Figure``, a ``FigureWidget`` or its dict), drawn with
    matplotlib; None when matplotlib is missing or the figure cannot be drawn (never raises)."""
    try:
        import matplotlib
        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure
    except Exception:   # noqa: BLE001 -- no matplotlib: no static copy, the figure itself still shows
        return None
    try:
        fig_dict = figure.to_dict() if hasattr(figure, "to_dict") else dict(figure)
        layout, data = fig_dict.get("layout") or {}, list(fig_dict.get("data") or [])
        w = int(width or layout.get("width") or 860)
        h = int(height or layout.get("height") or 440)
        fig = Figure(figsize=(w / dpi, h / dpi), dpi=dpi)
        fig.patch.set_facecolor("white")
        size = (w, h)
        axes = _axes(fig, layout, data, size)
        stacks: dict = {}
        for k, t in enumerate(data):
            ax = axes.get((t.get("xaxis", "x") or "x", t.get("yaxis", "y") or "y")) or next(iter(axes.values()))
            stack = stacks.setdefault(id(ax), {}) if layout.get("barmode") in ("stack", "relative") else None
            _draw_trace(ax, t, k, _cmaps, stack)
        _shapes(axes, layout)
        title = _text(layout.get("title"))
        if title:
            fig.suptitle(title, fontsize=11, x=_frame(layout, size)[0], ha="left", y=1 - 12 / h, va="top")
        left, right, bottom, top = _frame(layout, size)
        for an in layout.get("annotations") or []:     # subplot titles and notes placed on the page
            if an.get("xref") == "paper" and an.get("yref") == "paper" and an.get("text"):
                x = left + float(an.get("x", 0.5)) * (right - left)
                y = bottom + float(an.get("y", 1.0)) * (top - bottom)
                fig.text(x, min(y, 0.99), _text(an["text"]), fontsize=9,
                         ha={"left": "left", "right": "right"}.get(an.get("xanchor"), "center"),
                         va={"top": "top", "middle": "center"}.get(an.get("yanchor"), "bottom"))
        if layout.get("showlegend", True) is not False:
            for ax in axes.values():
                handles, labels = ax.get_legend_handles_labels()
                if labels and (len(labels) > 1 or layout.get("showlegend")):
                    ax.legend(handles[:MAX_LEGEND], labels[:MAX_LEGEND], fontsize=7, frameon=False,
                              loc="best")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
        return buf.getvalue()
    except Exception:   # noqa: BLE001 -- a static copy must never break the display of the figure
        return None


def static_mimebundle(figure) -> dict:
    """``{"image/png": <base64>}`` for ``figure`` (empty when it cannot be drawn)."""
    png = figure_png(figure)
    return {"image/png": base64.b64encode(png).decode("ascii")} if png else {}


_INSTALLED = False


def install_renderer() -> None:
    """Register plotly renderer ``"workbench"`` (the plotly JSON plus :func:`static_mimebundle`) and
    make it the default where plotly's default is a notebook one; safe to call more than once."""
    global _INSTALLED
    if _INSTALLED:
        return
    try:
        import plotly.io as pio
        from plotly.io._base_renderers import MimetypeRenderer
    except ImportError:
        return

    class WorkbenchRenderer(MimetypeRenderer):
        """plotly's JSON (JupyterLab draws it) and a PNG (nbconvert, code-hosting viewers draw it)."""

        def to_mimebundle(self, fig_dict):
            import json
            bundle = {"application/vnd.plotly.v1+json": json.loads(pio.to_json(fig_dict, validate=False))}
            bundle["application/vnd.plotly.v1+json"].setdefault("config", {"responsive": True})
            bundle.update(static_mimebundle(fig_dict))
            return bundle

    pio.renderers["workbench"] = WorkbenchRenderer()
    if pio.renderers.default in ("plotly_mimetype", "plotly_mimetype+notebook", "notebook", "notebook_connected",
                                 "jupyterlab", "nteract", "vscode", "plotly_mimetype+notebook_connected"):
        pio.renderers.default = "workbench"
    _INSTALLED = True
