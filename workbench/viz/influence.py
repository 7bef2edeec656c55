"""Influence scores: what MATES' data-influence model predicts, and what Gumbel top-k keeps.

MATES (``workbench.selection.mates``) probes the *oracle* influence of a few candidates on the
current checkpoint -- the change of a reference loss after one optimizer step on that candidate,
negative = useful -- fits a small model to predict it for the whole pool, and draws the next
stage's data with **Gumbel top-k** on ``scores = -predicted``::

    keep = top-k of  scores / temperature + Gumbel(0, 1) noise

which samples ``k`` items without replacement from ``softmax(scores / temperature)``. ``temperature`` is the one
knob: near 0 it keeps the deterministic top-k (most negative predicted influence); large, it keeps
a uniform random subset. The views show that trade-off and how much to trust the predictions:

* :func:`influence_histogram` -- the predicted influence of the pool (grey) with the kept samples
  overlaid (blue), on shared bins; the title compares the kept mean with the pool's and says how
  much of the deterministic top-k survived the noise;
* :func:`oracle_figure` -- predicted against oracle influence for the probed candidates, kept ones
  ringed, with the **Spearman** rank correlation (what matters for selection: only the order of
  the scores is used) in the title;
* :class:`InfluenceView` -- both, with a log-scale ``temperature`` slider and a ``fraction`` slider that
  re-draw the kept set in place (same seed: moving temperature back restores the same draw);
  :func:`influence_view` builds it from arrays (its ``temperature`` starts the slider);
* :func:`reference_loss_figure` and :func:`domain_share_figure` -- the MATES notebook's curves of
  the reference loss per stage and the domain composition of each stage's selection.

Data: aligned arrays ``predicted`` (every candidate), ``oracle`` (NaN where not probed) and
``domains`` (optional), as built by :func:`influence_frame`.
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..selection.mates import gumbel_topk
from .curves import PALETTE, figure_widget, static_bundle

KEPT, POOL = "#1f5fa8", "#b9b9b9"


def influence_frame(predicted, oracle=None, domains=None):
    """DataFrame with columns ``predicted``, ``oracle`` (NaN = not probed) and ``domain``."""
    import pandas as pd
    p = np.asarray(predicted, dtype=np.float64).reshape(-1)
    if p.size == 0 or not np.isfinite(p).all():
        raise ConfigError("predicted influence must be a non-empty array of finite numbers")
    o = np.full_like(p, np.nan) if oracle is None else np.asarray(oracle, dtype=np.float64).reshape(-1)
    if o.shape != p.shape:
        raise ConfigError(f"oracle has {o.size} values for {p.size} predictions")
    d = np.full(p.size, "all") if domains is None else np.asarray(domains, dtype=str).reshape(-1)
    if d.shape != p.shape:
        raise ConfigError(f"{d.size} domains for {p.size} predictions")
    return pd.DataFrame({"predicted": p, "oracle": o, "domain": d})


def selection_scores(predicted, standardize: bool = False) -> np.ndarray:
    """What Gumbel top-k ranks: ``-predicted`` (higher = more wanted), z-scored if ``standardize``
    (then ``temperature`` is in units of the scores' standard deviation)."""
    s = -np.asarray(predicted, dtype=np.float64)
    if standardize:
        sd = s.std()
        s = (s - s.mean()) / (sd if sd > 0 else 1.0)
    return s


def n_keep(n: int, fraction: float) -> int:
    if not 0 < fraction <= 1:
        raise ConfigError(f"fraction must be in (0, 1], got {fraction}")
    return max(1, int(round(fraction * n)))


def kept_mask(df, fraction: float, temperature: float, seed: int = 0, standardize: bool = False) -> np.ndarray:
    """Bool mask of the candidates ``gumbel_topk(-predicted, k, temperature, seed=seed)`` keeps."""
    s = selection_scores(df["predicted"].to_numpy(), standardize)
    idx = gumbel_topk(s, n_keep(len(s), fraction), float(temperature), seed=seed)
    m = np.zeros(len(s), dtype=bool)
    m[idx] = True
    return m


def _bins(values: np.ndarray, bins: int) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, bins + 1)


def _hist_title(df, kept: np.ndarray, fraction: float, temperature: float, standardize: bool) -> str:
    p = df["predicted"].to_numpy()
    k = int(kept.sum())
    top = np.zeros(len(p), dtype=bool)
    top[np.argsort(p, kind="stable")[:k]] = True          # deterministic top-k: most negative
    unit = " (std units)" if standardize else ""
    return (f"τ={temperature:.3g}{unit}: kept {k} of {len(p)} ({fraction:.0%}); mean predicted influence "
            f"kept {p[kept].mean():.3g} vs pool {p.mean():.3g}; {np.mean(top[kept]):.0%} of them from the top-k")


def influence_histogram(df, kept: np.ndarray, bins: int = 40, title: str | None = None, fraction: float | None = None,
                        temperature: float | None = None, standardize: bool = False):
    """Histogram of predicted influence: the pool (grey bars) and the kept samples (blue, overlaid).

    Bars are precomputed on shared bins (one ``go.Bar`` each), so a widget updates the kept counts
    alone. Negative influence (left) is what MATES wants: the kept histogram leans left as ``temperature``
    falls.
    """
    import plotly.graph_objects as go
    p = df["predicted"].to_numpy(dtype=float)
    edges = _bins(p, bins)
    centers, width = (edges[:-1] + edges[1:]) / 2, float(edges[1] - edges[0])
    pool, _ = np.histogram(p, edges)
    kc, _ = np.histogram(p[kept], edges)
    fig = go.Figure()
    fig.add_bar(x=centers, y=pool, width=width, name="pool", marker=dict(color=POOL),
                hovertemplate="influence %{x:.3g}<br>%{y} candidates<extra>pool</extra>")
    fig.add_bar(x=centers, y=kc, width=width, name="kept (Gumbel top-k)", marker=dict(color=KEPT), opacity=0.85,
                hovertemplate="influence %{x:.3g}<br>%{y} kept<extra>kept</extra>")
    fig.add_vline(x=0, line=dict(color="black", width=1, dash="dot"))
    if title is None and fraction is not None and temperature is not None:
        title = _hist_title(df, kept, fraction, temperature, standardize)
    fig.update_layout(barmode="overlay", template="plotly_white", height=380, title=title or "predicted influence",
                      xaxis_title="predicted influence (Δ reference loss; negative = helps)", yaxis_title="candidates",
                      legend=dict(orientation="h", y=-0.25), title_font_size=13)
    return fig


def spearman(df) -> tuple[float, int]:
    """(Spearman rank correlation of predicted vs oracle over the probed rows, number of rows)."""
    from scipy.stats import spearmanr
    m = df["oracle"].notna().to_numpy()
    if m.sum() < 3:
        return float("nan"), int(m.sum())
    r = spearmanr(df.loc[m, "predicted"], df.loc[m, "oracle"]).statistic
    return float(r), int(m.sum())


def oracle_figure(df, kept: np.ndarray | None = None, title: str | None = None):
    """Predicted (x) against oracle (y) influence of the probed candidates, one colour per domain,
    the kept ones ringed (trace ``"kept"``); Spearman's rho in the title."""
    import plotly.graph_objects as go
    m = df["oracle"].notna().to_numpy()
    if not m.any():
        raise ConfigError("no oracle influence to compare with (all NaN)")
    rho, n = spearman(df)
    fig = go.Figure()
    scatter = go.Scattergl if m.sum() > 10_000 else go.Scatter      # SVG where WebGL may be missing
    for i, (d, g) in enumerate(df[m].groupby("domain", sort=False)):
        fig.add_trace(scatter(x=g["predicted"], y=g["oracle"], mode="markers", name=str(d), text=g.index.astype(str),
                              marker=dict(size=6, color=PALETTE[i % len(PALETTE)], opacity=0.7),
                              hovertemplate="#%{text}<br>predicted %{x:.3g}<br>oracle %{y:.3g}<extra>" + str(d)
                                            + "</extra>"))
    k = m & (kept if kept is not None else np.zeros(len(df), dtype=bool))
    fig.add_trace(scatter(x=df.loc[k, "predicted"], y=df.loc[k, "oracle"], mode="markers", name="kept",
                          marker=dict(size=11, color="rgba(0,0,0,0)", line=dict(color=KEPT, width=2)),
                          hoverinfo="skip"))
    fig.update_layout(title=title or f"predicted vs. oracle influence: Spearman ρ = {rho:.3f} over {n} probed candidates",
                      xaxis_title="predicted influence", yaxis_title="oracle influence (probed)",
                      template="plotly_white", height=420, legend=dict(orientation="h", y=-0.25), title_font_size=13)
    return fig


class InfluenceView:
    """The histogram and the oracle scatter side by side, with ``temperature`` and ``fraction`` sliders.

    Args:
        df: from :func:`influence_frame` (or anything with ``predicted``/``oracle``/``domain``).
        fraction: share of the pool kept (``k = round(fraction * n)``).
        temperature: Gumbel temperature, in the units of ``-predicted`` (or of its standard deviation with
            ``standardize=True``); the slider spans four decades around the scores' spread.
        seed: the Gumbel noise seed (fixed: a given temperature always shows the same draw).

    ``view.temperature`` (FloatLogSlider) and ``view.fraction`` (FloatSlider) re-draw the kept set in
    place; ``view.kept`` is the current bool mask; ``view.figure`` the one FigureWidget.
    """

    def __init__(self, df, fraction: float = 0.25, temperature: float = 1.0, seed: int = 0, standardize: bool = False,
                 bins: int = 40):
        import ipywidgets as w
        self.df, self.seed, self.standardize, self.bins = df.reset_index(drop=True), seed, standardize, bins
        spread = float(np.std(selection_scores(self.df["predicted"].to_numpy(), standardize))) or 1.0
        mid = int(np.floor(np.log10(spread)))
        lo, hi = mid - 2, mid + 2
        if not 10 ** lo <= temperature <= 10 ** hi:
            lo, hi = min(lo, int(np.floor(np.log10(temperature)))), max(hi, int(np.ceil(np.log10(temperature))))
        self.temperature = w.FloatLogSlider(value=temperature, base=10, min=lo, max=hi, step=0.05,
                                            description="temperature",
                                    continuous_update=False, readout_format=".3g", layout=w.Layout(width="420px"))
        self.fraction = w.FloatSlider(value=fraction, min=0.01, max=1.0, step=0.01, description="fraction kept",
                                      continuous_update=False, readout_format=".2f",
                                      style={"description_width": "initial"}, layout=w.Layout(width="360px"))
        self.has_oracle = bool(self.df["oracle"].notna().any())
        self.figure = figure_widget(self._figure(self.kept))
        self.temperature.observe(lambda ch: self._update(), names="value")
        self.fraction.observe(lambda ch: self._update(), names="value")
        self.widget = w.VBox([w.HBox([self.temperature, self.fraction]), self.figure])

    def _figure(self, kept):
        from plotly.subplots import make_subplots
        hist = influence_histogram(self.df, kept, self.bins, fraction=self.fraction.value,
                                   temperature=self.temperature.value,
                                   standardize=self.standardize)
        if not self.has_oracle:
            return hist
        sc = oracle_figure(self.df, kept)
        fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                            subplot_titles=["pool (grey) and kept (blue)", sc.layout.title.text])
        for t in hist.data:
            fig.add_trace(t.to_plotly_json(), row=1, col=1)
        for t in sc.data:
            fig.add_trace(t.to_plotly_json(), row=1, col=2)
        fig.add_vline(x=0, line=dict(color="black", width=1, dash="dot"), row=1, col=1)
        fig.update_layout(barmode="overlay", template="plotly_white", height=440, title=hist.layout.title.text,
                          title_font_size=13, legend=dict(orientation="h", y=-0.22))
        fig.update_xaxes(title_text="predicted influence (negative = helps)", row=1, col=1)
        fig.update_yaxes(title_text="candidates", row=1, col=1)
        fig.update_xaxes(title_text="predicted influence", row=1, col=2)
        fig.update_yaxes(title_text="oracle influence (probed)", row=1, col=2)
        return fig

    @property
    def kept(self) -> np.ndarray:
        return kept_mask(self.df, self.fraction.value, self.temperature.value, self.seed, self.standardize)

    def set_temperature(self, temperature: float) -> None:
        self.temperature.value = temperature

    def _update(self) -> None:
        kept = self.kept
        p = self.df["predicted"].to_numpy(dtype=float)
        kc, _ = np.histogram(p[kept], _bins(p, self.bins))
        with self.figure.batch_update():
            self.figure.data[1].y = kc                      # trace 1: the kept histogram
            self.figure.layout.title.text = _hist_title(self.df, kept, self.fraction.value, self.temperature.value,
                                                        self.standardize)
            if self.has_oracle:                            # last trace: the rings of the kept probed points
                k = kept & self.df["oracle"].notna().to_numpy()
                self.figure.data[-1].x = p[k]
                self.figure.data[-1].y = self.df.loc[k, "oracle"].to_numpy(dtype=float)

    def _repr_mimebundle_(self, **kwargs):
        return static_bundle(self.widget, self.figure)


def influence_view(predicted, oracle=None, domains=None, fraction: float = 0.25, temperature: float = 1.0,
                   seed: int = 0, standardize: bool = False) -> InfluenceView:
    """:class:`InfluenceView` of aligned arrays ``predicted``, ``oracle`` (NaN = not probed), ``domains``;
    ``temperature`` is the Gumbel top-k temperature the slider starts at."""
    return InfluenceView(influence_frame(predicted, oracle, domains), fraction=fraction, temperature=temperature,
                         seed=seed, standardize=standardize)


def reference_loss_figure(frame, reference: str = "reference"):
    """Reference loss (y) against step (x), one line per method; ``frame`` has columns
    ``step``, ``reference_loss`` and ``method`` (``recipes.mates.Result.reference_curves``)."""
    import plotly.express as px
    return px.line(frame, x="step", y="reference_loss", color="method", markers=True, template="plotly_white",
                   title=f"loss on the held-out package {reference!r}")


def domain_share_figure(frame):
    """Stacked bars of each stage's selection by domain, one panel per method; ``frame`` has columns
    ``method``, ``stage``, ``domain`` and ``share`` (``recipes.mates.Result.composition``)."""
    import plotly.express as px
    return px.bar(frame, x="stage", y="share", color="domain", facet_col="method", template="plotly_white")
