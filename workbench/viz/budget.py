"""Budget BERT's figures: the simulated-clock comparison (:func:`sim_figure`, the headline) and loss
and LR against the real budget clock (:func:`loss_figure`), one colour per schedule.

:func:`sim_figure` takes ``Result.sim`` (one row per arm and seed: ``arm, seed, eval_loss, lr_end``)
and ``Result.sim_curves`` (a curves frame of the first seed, ``schedule`` = the arm).

:func:`loss_figure` is a pure function of the long DataFrame the recipe returns as
``Result.curves`` (:func:`workbench.recipes.budget_bert.curves_frame`): one row per logged record,
columns ``schedule, elapsed_s, step, loss, eval_loss, lr`` (train records carry ``loss`` and ``lr``,
eval records ``eval_loss``).
"""
from __future__ import annotations

#: one colour per schedule of the comparison (others get plotly's default cycle)
COLORS = {"step-linear": "#7f7f7f", "time-linear": "#1f77b4", "triangle": "#d62728", "oracle": "#2ca02c",
          "step-20%": "#9467bd", "step+20%": "#8c564b"}


def sim_figure(sim, sim_curves, budget_s: float, peak_lr: float, title: str = ""):
    """Left: held-out loss at the simulated deadline per arm, one dot per seed and the mean. Right:
    LR / peak against simulated seconds for the first seed's runs, the deadline dashed."""
    from plotly.subplots import make_subplots
    fig = make_subplots(rows=1, cols=2, column_widths=[0.45, 0.55], horizontal_spacing=0.1,
                        subplot_titles=("loss at the deadline (dots: seeds, bar: mean)", "LR / peak, first seed"))
    for arm, g in sim.groupby("arm", sort=False):
        c = COLORS.get(arm)
        fig.add_bar(x=[arm], y=[g["eval_loss"].mean()], marker=dict(color=c, opacity=0.35), name=arm,
                    legendgroup=arm, row=1, col=1)
        fig.add_scatter(x=[arm] * len(g), y=g["eval_loss"], mode="markers", marker=dict(color=c, size=7),
                        legendgroup=arm, showlegend=False, hovertext=[f"seed {s}" for s in g["seed"]], row=1, col=1)
    for arm, g in sim_curves.groupby("schedule", sort=False):
        tr = g[g["lr"].notna()].sort_values("elapsed_s")
        fig.add_scatter(x=tr["elapsed_s"], y=tr["lr"] / peak_lr, mode="lines", line=dict(color=COLORS.get(arm)),
                        legendgroup=arm, showlegend=False, name=arm, row=1, col=2)
    fig.add_vline(x=budget_s, line=dict(color="black", dash="dash"), row=1, col=2)
    lo, hi = sim["eval_loss"].min(), sim["eval_loss"].max()
    pad = max(hi - lo, 1e-3) * 0.3
    fig.update_yaxes(title_text="held-out MLM loss", range=[lo - pad, hi + pad], row=1, col=1)
    fig.update_yaxes(title_text="LR / peak", range=[0, 1.05], row=1, col=2)
    fig.update_xaxes(title_text="simulated seconds (dashed: the deadline)", row=1, col=2)
    fig.update_layout(title=title, template="plotly_white", height=420, legend=dict(font=dict(size=10)))
    return fig


def loss_figure(df, budget_s: float, peak_lr: float, title: str = "", smooth: float = 0.2):
    """Train loss (exponential moving average with weight ``smooth`` on the newest record), held-out
    loss and LR / peak LR against wall-clock seconds of training, with the deadline ``budget_s``
    dashed; one colour per schedule."""
    from plotly.subplots import make_subplots
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.68, 0.32], vertical_spacing=0.06)
    for name, g in df.groupby("schedule", sort=False):
        c = COLORS.get(name)
        tr = g[g["loss"].notna()].sort_values("elapsed_s")
        ev = g[g["eval_loss"].notna()].sort_values("elapsed_s")
        ema = tr["loss"].ewm(alpha=smooth).mean()
        fig.add_scatter(x=tr["elapsed_s"], y=ema, mode="lines", name=f"{name}: train (EMA)", line=dict(color=c),
                        legendgroup=name, row=1, col=1)
        fig.add_scatter(x=ev["elapsed_s"], y=ev["eval_loss"], mode="markers+lines", name=f"{name}: held-out",
                        line=dict(color=c, dash="dot"), legendgroup=name, row=1, col=1)
        fig.add_scatter(x=tr["elapsed_s"], y=tr["lr"] / peak_lr, mode="lines", name=f"{name}: LR / peak",
                        line=dict(color=c), legendgroup=name, showlegend=False, row=2, col=1)
    for row in (1, 2):
        fig.add_vline(x=budget_s, line=dict(color="black", dash="dash"), row=row, col=1)
    fig.update_yaxes(title_text="MLM loss", row=1, col=1)
    fig.update_yaxes(title_text="LR / peak", range=[0, 1.05], row=2, col=1)
    fig.update_xaxes(title_text="wall-clock seconds of training (dashed: the deadline)", row=2, col=1)
    fig.update_layout(title=title, template="plotly_white", height=560, legend=dict(font=dict(size=10)))
    return fig
