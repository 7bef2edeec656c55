"""The irreducible-loss view: what RHO-LOSS sees when it picks a batch.

One point per training example: its *training* loss under the current model (y) against its
*irreducible* loss under the holdout model (x). RHO-LOSS picks the points with the largest
difference ``train_loss - irreducible_loss``, i.e. those highest above the diagonal: not yet learnt,
but learnable. Noisy labels sit in the upper *right* (hard for both models), so a selector by
training loss alone (highest points) picks them and RHO-LOSS does not.

:func:`irreducible_figure` is a pure figure builder (a DataFrame in, a ``plotly`` Figure out);
:class:`IrreducibleLossView` wraps it in a ``FigureWidget`` with a slider for the selection
fraction (``n_b / n_B``) that re-highlights the selected points as it moves.

The DataFrame needs columns ``train_loss``, ``irreducible_loss`` and ``noisy`` (bool); ``id`` and
``label`` are shown on hover when present. Selection and the title's counts use every row; the
scatter draws at most ``max_points`` of them (default 3,000, a fixed seeded sample; ``None``: all),
so a training set of tens of thousands of points stays a light figure. Language-model data has no label noise: pass
``labelled=False`` (no ``noisy`` column needed; one group of points, and the title compares the
selection with the top by training loss instead of counting noisy picks).

The RHO-LOSS notebook's other two figures are pure builders here too:
:func:`irreducible_histogram` (irreducible loss of clean and noisy training examples) and
:func:`accuracy_curves_figure` (test accuracy against steps per selector, with target lines).
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError

_NEEDED = ("train_loss", "irreducible_loss", "noisy")


def _check(df, fraction: float, needed=_NEEDED) -> None:
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ConfigError(f"irreducible-loss view needs column(s) {missing}")
    if not 0 < fraction <= 1:
        raise ConfigError(f"selection fraction must be in (0, 1], got {fraction}")


def selected_mask(df, fraction: float, by: str = "reducible") -> np.ndarray:
    """Bool mask of the top ``ceil(fraction * n)`` rows by reducible loss (``by="reducible"``) or by
    training loss (``by="train"``); ties go to the earlier row, as in the batch filters."""
    _check(df, fraction, needed=("train_loss", "irreducible_loss"))
    tl = df["train_loss"].to_numpy(dtype=float)
    score = tl - df["irreducible_loss"].to_numpy(dtype=float) if by == "reducible" else tl
    k = int(np.ceil(fraction * len(df) - 1e-9))
    order = np.argsort(-score, kind="stable")[:k]
    mask = np.zeros(len(df), dtype=bool)
    mask[order] = True
    return mask


def _title(df, fraction: float, sel: np.ndarray, labelled: bool = True) -> str:
    by_loss = selected_mask(df, fraction, by="train")
    if not labelled:
        both = int((sel & by_loss).sum())
        return (f"fraction {fraction:.2f}: {int(sel.sum())} of {len(df)} selected by reducible loss, "
                f"{both / max(int(sel.sum()), 1):.0%} of them also in the top by training loss")
    noisy = df["noisy"].to_numpy(dtype=bool)
    share = lambda m: noisy[m].mean() if m.any() else 0.0
    return (f"fraction {fraction:.2f}: {int(sel.sum())} of {len(df)} selected by reducible loss, "
            f"{share(sel):.0%} noisy (by training loss: {share(by_loss):.0%}; all: {noisy.mean():.0%})")


def _hover(df, rows) -> list[str]:
    ids = df["id"].astype(str).to_numpy() if "id" in df.columns else np.arange(len(df)).astype(str)
    lab = df["label"].astype(str).to_numpy() if "label" in df.columns else np.full(len(df), "")
    return [f"{ids[r]} label {lab[r]}" for r in rows]


def shown_rows(n: int, max_points: int | None = 3000) -> np.ndarray:
    """The rows the scatter draws: all of them, or a fixed seeded sample of ``max_points`` (sorted)."""
    if max_points is None or n <= max_points:
        return np.arange(n)
    if max_points < 1:
        raise ConfigError(f"max_points must be >= 1 or None, got {max_points}")
    return np.sort(np.random.default_rng(0).choice(n, max_points, replace=False))


def irreducible_figure(df, fraction: float = 0.1, title: str | None = None, labelled: bool = True,
                       max_points: int | None = 3000):
    """Scatter of training loss against irreducible loss: clean points (dots), noisy points
    (crosses), the selected ``fraction`` by reducible loss (rings, trace ``"selected"``), and the
    diagonal ``train_loss = irreducible_loss`` (reducible loss 0). ``labelled=False`` (language
    models): one trace ``"examples"`` and an empty ``"no label noise"`` in place of the two groups.
    ``max_points``: the most points drawn (see the module doc); the selection is over all rows."""
    import plotly.graph_objects as go
    _check(df, fraction, needed=_NEEDED if labelled else ("train_loss", "irreducible_loss"))
    x = df["irreducible_loss"].to_numpy(dtype=float)
    y = df["train_loss"].to_numpy(dtype=float)
    noisy = df["noisy"].to_numpy(dtype=bool) if labelled else np.zeros(len(df), dtype=bool)
    sel = selected_mask(df, fraction)
    shown = np.zeros(len(df), dtype=bool)
    shown[shown_rows(len(df), max_points)] = True
    fig = go.Figure()
    names = ("clean", "noisy label") if labelled else ("examples", "no label noise")
    for name, m, marker in ((names[0], ~noisy, dict(color="#7f8c8d", size=5, opacity=0.6)),
                            (names[1], noisy, dict(color="#c0392b", size=7, symbol="x"))):
        rows = np.flatnonzero(m & shown)
        fig.add_scatter(x=x[rows], y=y[rows], mode="markers", name=name, marker=marker, text=_hover(df, rows),
                        hovertemplate="%{text}<br>IL %{x:.3f}<br>train %{y:.3f}<extra></extra>")
    rows = np.flatnonzero(sel & shown)
    fig.add_scatter(x=x[rows], y=y[rows], mode="markers", name="selected (RHO-LOSS)",
                    marker=dict(size=11, color="rgba(0,0,0,0)", line=dict(color="#2471a3", width=2)),
                    hoverinfo="skip")
    hi = float(np.nanmax(np.concatenate([x, y]))) if len(df) else 1.0
    fig.add_scatter(x=[0, hi], y=[0, hi], mode="lines", name="reducible loss = 0",
                    line=dict(color="black", dash="dot", width=1), hoverinfo="skip")
    if title is None:
        title = _title(df, fraction, sel, labelled) + (f" (drawn: {int(shown.sum())})" if not shown.all() else "")
    fig.update_layout(title=title, xaxis_title="irreducible loss (holdout model)",
                      yaxis_title="training loss (current model)", template="plotly_white", height=460,
                      legend=dict(orientation="h", y=-0.2))
    return fig


def irreducible_histogram(df, bins: int = 40, title: str = "irreducible loss of the training examples",
                          group: str = "noisy"):
    """Overlaid histograms (share of each group per bin) of the ``irreducible_loss`` of the clean
    and the noisy-label rows of ``df`` (columns ``irreducible_loss``, ``noisy``); ``group`` another
    column (language models: ``"domain"``): one histogram per value of it."""
    import plotly.graph_objects as go
    _check(df, 1.0, needed=("irreducible_loss", group))
    il = df["irreducible_loss"].to_numpy(dtype=float)
    fig = go.Figure()
    if group == "noisy":
        noisy = df["noisy"].to_numpy(dtype=bool)
        groups = (("clean", ~noisy), ("noisy label", noisy))
    else:
        vals = df[group].astype(str).to_numpy()
        groups = tuple((v, vals == v) for v in dict.fromkeys(vals))
    for name, m in groups:
        fig.add_histogram(x=il[m], name=name, opacity=0.7, nbinsx=bins, histnorm="probability")
    fig.update_layout(barmode="overlay", title=title, xaxis_title="irreducible loss", yaxis_title="share",
                      template="plotly_white", height=330)
    return fig


def accuracy_curves_figure(curves, targets: dict | None = None, highlight=("rho_loss", "uniform"),
                           title: str = "", value: str = "accuracy"):
    """Test accuracy against optimizer steps, one line per ``selector`` of ``curves`` (columns
    ``selector``, ``step``, ``accuracy``; in order of appearance), the ``highlight`` ones drawn
    thicker, and a dotted / dashed horizontal line per entry of ``targets`` (``{"low": acc,
    "high": acc}``: name -> accuracy). ``value="loss"``: held-out loss curves (column ``loss``)."""
    import plotly.graph_objects as go
    missing = [c for c in ("selector", "step", value) if c not in curves.columns]
    if missing:
        raise ConfigError(f"{value} curves need column(s) {missing}")
    fig = go.Figure()
    for sel, g in curves.groupby("selector", sort=False):
        fig.add_scatter(x=g["step"], y=g[value], mode="lines", name=sel,
                        line=dict(width=3 if sel in highlight else 1.5))
    for (k, v), dash in zip((targets or {}).items(), ("dot", "dash", "dashdot", "longdash")):
        fig.add_hline(y=v, line=dict(dash=dash, color="gray"), annotation_text=f"target {k} {v:.3f}")
    fig.update_layout(title=title, xaxis_title="optimizer step", yaxis_title=f"test {value}", template="plotly_white",
                      height=430)
    return fig


class IrreducibleLossView:
    """``irreducible_figure`` as a live ``FigureWidget`` with a selection-fraction slider.

    ``view.widget`` is the ipywidgets box to display (displaying ``view`` itself does the same and
    embeds a static copy of the figure for viewers without widgets); moving ``view.slider`` (or
    calling ``view.set_fraction(f)``) updates the ``selected`` trace and the title in place.
    """

    def __init__(self, df, fraction: float = 0.1, labelled: bool = True, max_points: int | None = 3000):
        import ipywidgets as w
        import plotly.graph_objects as go
        self.df = df.reset_index(drop=True)
        self.labelled = labelled
        self.shown = np.zeros(len(self.df), dtype=bool)
        self.shown[shown_rows(len(self.df), max_points)] = True
        self.figure = go.FigureWidget(irreducible_figure(self.df, fraction, labelled=labelled, max_points=max_points))
        self.slider = w.FloatSlider(value=fraction, min=0.01, max=1.0, step=0.01, description="fraction n_b/n_B",
                                    continuous_update=False, readout_format=".2f",
                                    style={"description_width": "initial"}, layout=w.Layout(width="420px"))
        self.slider.observe(lambda ch: self.set_fraction(ch["new"]), names="value")
        self.widget = w.VBox([self.slider, self.figure])

    @property
    def selected(self) -> np.ndarray:
        return selected_mask(self.df, self.slider.value)

    def set_fraction(self, fraction: float) -> None:
        if self.slider.value != fraction:
            self.slider.value = fraction       # the observer calls back here
            return
        sel = selected_mask(self.df, fraction)
        rows = np.flatnonzero(sel & self.shown)
        drawn = "" if self.shown.all() else f" (drawn: {int(self.shown.sum())})"
        with self.figure.batch_update():
            self.figure.data[2].x = self.df["irreducible_loss"].to_numpy(dtype=float)[rows]
            self.figure.data[2].y = self.df["train_loss"].to_numpy(dtype=float)[rows]
            self.figure.layout.title.text = _title(self.df, fraction, sel, self.labelled) + drawn

    def _repr_mimebundle_(self, **kwargs):
        """The live widget plus a static copy of the figure as it is now: JupyterLab renders the
        widget; viewers without widget support (nbviewer, GitHub, report.html) show the copy."""
        import json

        import plotly.io as pio
        data = dict(self.widget._repr_mimebundle_(**kwargs) or {})
        data["application/vnd.plotly.v1+json"] = json.loads(pio.to_json(self.figure, validate=False))
        return data
