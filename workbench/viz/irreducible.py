"""The irreducible-loss view: what RHO-LOSS sees when it picks a batch.

One point per training example: its *training* loss under the current model (y) against its
*irreducible* loss under the holdout model (x). RHO-LOSS picks the points with the largest
difference ``train_loss - irreducible_loss``, i.e. those highest above the diagonal: not yet learnt,
but learnable. Noisy labels sit in the upper *right* (hard for both models), so a selector by
training loss alone (highest points) picks them and RHO-LOSS does not.

:func:`irreducible_figure` is a pure figure builder (a DataFrame in, a ``plotly`` Figure out);
:class:`IrreducibleLossView` wraps it in a ``FigureWidget`` with a slider for the selection ratio
that re-highlights the selected points as it moves.

The DataFrame needs columns ``train_loss``, ``irreducible_loss`` and ``noisy`` (bool); ``id`` and
``label`` are shown on hover when present.
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError

_NEEDED = ("train_loss", "irreducible_loss", "noisy")


def _check(df, ratio: float) -> None:
    missing = [c for c in _NEEDED if c not in df.columns]
    if missing:
        raise ConfigError(f"irreducible-loss view needs column(s) {missing}")
    if not 0 < ratio <= 1:
        raise ConfigError(f"selection ratio must be in (0, 1], got {ratio}")


def selected_mask(df, ratio: float, by: str = "reducible") -> np.ndarray:
    """Bool mask of the top ``ceil(ratio * n)`` rows by reducible loss (``by="reducible"``) or by
    training loss (``by="train"``); ties go to the earlier row, as in the batch filters."""
    _check(df, ratio)
    tl = df["train_loss"].to_numpy(dtype=float)
    score = tl - df["irreducible_loss"].to_numpy(dtype=float) if by == "reducible" else tl
    k = int(np.ceil(ratio * len(df) - 1e-9))
    order = np.argsort(-score, kind="stable")[:k]
    mask = np.zeros(len(df), dtype=bool)
    mask[order] = True
    return mask


def _title(df, ratio: float, sel: np.ndarray) -> str:
    noisy = df["noisy"].to_numpy(dtype=bool)
    by_loss = selected_mask(df, ratio, by="train")
    share = lambda m: noisy[m].mean() if m.any() else 0.0
    return (f"ratio {ratio:.2f}: {int(sel.sum())} of {len(df)} selected by reducible loss, "
            f"{share(sel):.0%} noisy (by training loss: {share(by_loss):.0%}; all: {noisy.mean():.0%})")


def _hover(df, rows) -> list[str]:
    ids = df["id"].astype(str).to_numpy() if "id" in df.columns else np.arange(len(df)).astype(str)
    lab = df["label"].astype(str).to_numpy() if "label" in df.columns else np.full(len(df), "")
    return [f"{ids[r]} label {lab[r]}" for r in rows]


def irreducible_figure(df, ratio: float = 0.1, title: str | None = None):
    """Scatter of training loss against irreducible loss: clean points (dots), noisy points
    (crosses), the selected ``ratio`` by reducible loss (rings, trace ``"selected"``), and the
    diagonal ``train_loss = irreducible_loss`` (reducible loss 0)."""
    import plotly.graph_objects as go
    _check(df, ratio)
    x = df["irreducible_loss"].to_numpy(dtype=float)
    y = df["train_loss"].to_numpy(dtype=float)
    noisy = df["noisy"].to_numpy(dtype=bool)
    sel = selected_mask(df, ratio)
    fig = go.Figure()
    for name, m, marker in (("clean", ~noisy, dict(color="#7f8c8d", size=5, opacity=0.6)),
                            ("noisy label", noisy, dict(color="#c0392b", size=7, symbol="x"))):
        rows = np.flatnonzero(m)
        fig.add_scatter(x=x[rows], y=y[rows], mode="markers", name=name, marker=marker, text=_hover(df, rows),
                        hovertemplate="%{text}<br>IL %{x:.3f}<br>train %{y:.3f}<extra></extra>")
    rows = np.flatnonzero(sel)
    fig.add_scatter(x=x[rows], y=y[rows], mode="markers", name="selected (RHO-LOSS)",
                    marker=dict(size=11, color="rgba(0,0,0,0)", line=dict(color="#2471a3", width=2)),
                    hoverinfo="skip")
    hi = float(np.nanmax(np.concatenate([x, y]))) if len(df) else 1.0
    fig.add_scatter(x=[0, hi], y=[0, hi], mode="lines", name="reducible loss = 0",
                    line=dict(color="black", dash="dot", width=1), hoverinfo="skip")
    fig.update_layout(title=title or _title(df, ratio, sel), xaxis_title="irreducible loss (holdout model)",
                      yaxis_title="training loss (current model)", template="plotly_white", height=460,
                      legend=dict(orientation="h", y=-0.2))
    return fig


class IrreducibleLossView:
    """``irreducible_figure`` as a live ``FigureWidget`` with a selection-ratio slider.

    ``view.widget`` is the ipywidgets box to display (displaying ``view`` itself does the same and
    embeds a static copy of the figure for viewers without widgets); moving ``view.slider`` (or
    calling ``view.set_ratio(r)``) updates the ``selected`` trace and the title in place.
    """

    def __init__(self, df, ratio: float = 0.1):
        import ipywidgets as w
        import plotly.graph_objects as go
        self.df = df.reset_index(drop=True)
        self.figure = go.FigureWidget(irreducible_figure(self.df, ratio))
        self.slider = w.FloatSlider(value=ratio, min=0.01, max=1.0, step=0.01, description="ratio n_b/n_B",
                                    continuous_update=False, readout_format=".2f",
                                    style={"description_width": "initial"}, layout=w.Layout(width="420px"))
        self.slider.observe(lambda ch: self.set_ratio(ch["new"]), names="value")
        self.widget = w.VBox([self.slider, self.figure])

    @property
    def selected(self) -> np.ndarray:
        return selected_mask(self.df, self.slider.value)

    def set_ratio(self, ratio: float) -> None:
        if self.slider.value != ratio:
            self.slider.value = ratio          # the observer calls back here
            return
        sel = selected_mask(self.df, ratio)
        rows = np.flatnonzero(sel)
        with self.figure.batch_update():
            self.figure.data[2].x = self.df["irreducible_loss"].to_numpy(dtype=float)[rows]
            self.figure.data[2].y = self.df["train_loss"].to_numpy(dtype=float)[rows]
            self.figure.layout.title.text = _title(self.df, ratio, sel)

    def _repr_mimebundle_(self, **kwargs):
        """The live widget plus a static copy of the figure as it is now: JupyterLab renders the
        widget; viewers without widget support (nbviewer, GitHub, report.html) show the copy."""
        import json

        import plotly.io as pio
        data = dict(self.widget._repr_mimebundle_(**kwargs) or {})
        data["application/vnd.plotly.v1+json"] = json.loads(pio.to_json(self.figure, validate=False))
        return data
