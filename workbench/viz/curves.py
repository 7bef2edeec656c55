"""Training curves across runs, against steps, tokens, FLOPs or wall time.

Every run's ``metrics.jsonl`` (see :mod:`workbench.runs`) holds two kinds of records that matter here:

* train records -- ``step, tokens, flops, loss, lr, elapsed_s, ...`` (one per logged step);
* eval records  -- ``step, tokens, flops, eval_loss, elapsed_s`` (every ``eval_every`` steps).

Which x-axis is fair depends on the question. Two methods that take different *steps* (RHO-LOSS
scores a large batch per small one; INGENIOUS pays for embeddings and facility location between
steps; LiGO trains an operator before the large model) compare honestly only against the cost
they really paid: **tokens** seen, **FLOPs** spent (the loop's count, ``flops_per_token x tokens``),
or **wall time** (``elapsed_s``, the budget clock: what a deadline is checked against). The same
curves re-plotted against each axis often tell different stories; that is the point of the switch.

Three layers, each usable alone:

* :func:`load_curves` -- run directories (or Run objects, or DataFrames of records) into one long
  DataFrame with a ``run`` column;
* :func:`curves_figure` -- a pure function of that DataFrame: one colour per run, the training loss
  as a thin line (optionally smoothed with a debiased exponential moving average, as TensorBoard
  does) and the held-out loss as markers joined by a thicker line;
* :class:`CurvesView` -- the figure as a live ``FigureWidget`` with a toggle for the x-axis and a
  smoothing slider; moving either updates the traces in place (no re-render).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from ..errors import ConfigError

#: x-axis key -> (metrics column, axis title, toggle label)
X_AXES = {
    "step": ("step", "optimizer step", "steps"),
    "tokens": ("tokens", "tokens seen", "tokens"),
    "flops": ("flops", "training FLOPs", "FLOPs"),
    "wall": ("elapsed_s", "wall time (budget clock), s", "wall time"),
}
COLUMNS = ("run", "step", "tokens", "flops", "elapsed_s", "loss", "eval_loss")
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")


# --------------------------------------------------------------------------------------- loading
def _records(src: Any) -> list[dict]:
    """Metric records of one source: a run directory, a Run, a DataFrame or a list of dicts."""
    import pandas as pd
    if isinstance(src, pd.DataFrame):
        return src.to_dict(orient="records")
    if isinstance(src, (list, tuple)):
        return [dict(r) for r in src]
    if hasattr(src, "metrics") and callable(src.metrics):          # a workbench.runs.Run
        return src.metrics()
    p = Path(src)
    mp = p / "metrics.jsonl" if p.is_dir() else p
    if not mp.exists():
        raise ConfigError(f"no metrics.jsonl in {p}")
    out = []
    for line in mp.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break                                                    # a torn last line, as Run.metrics
    return out


def _label(src: Any, i: int) -> str:
    if hasattr(src, "path"):
        return Path(src.path).name
    if isinstance(src, (str, Path)):
        return Path(src).name if Path(src).name != "metrics.jsonl" else Path(src).parent.name
    return f"run {i}"


def find_runs(root: str | Path) -> dict[str, Path]:
    """``{name: directory}`` of every run below ``root`` that has a ``metrics.jsonl`` (name = path
    relative to ``root``), sorted by name."""
    root = Path(root)
    found = {str(p.parent.relative_to(root)) or root.name: p.parent for p in root.rglob("metrics.jsonl")}
    return dict(sorted(found.items()))


def load_curves(runs: Any) -> "pd.DataFrame":
    """One long DataFrame of the training and eval records of several runs.

    ``runs`` is a mapping ``{label: source}``, a list of sources (labelled by directory name), or a
    directory that is searched for runs (:func:`find_runs`). A source is a run directory, a
    :class:`~workbench.runs.Run`, a DataFrame of records or a list of record dicts.

    Columns: ``run, step, tokens, flops, elapsed_s, loss, eval_loss`` (NaN where a record lacks
    one; event records such as budget time markers are dropped).
    """
    import pandas as pd
    if isinstance(runs, (str, Path)) and Path(runs).is_dir() and not (Path(runs) / "metrics.jsonl").exists():
        runs = find_runs(runs)
        if not runs:
            raise ConfigError("no run with a metrics.jsonl below the given directory")
    if not isinstance(runs, Mapping):
        runs = list(runs) if isinstance(runs, Iterable) and not isinstance(runs, (str, Path)) else [runs]
        labels = [_label(s, i) for i, s in enumerate(runs)]
        if len(set(labels)) < len(labels):                           # same directory names: number them
            labels = [f"{lab} ({i})" for i, lab in enumerate(labels)]
        runs = dict(zip(labels, runs))
    frames = []
    for label, src in runs.items():
        recs = [r for r in _records(src) if "event" not in r and ("loss" in r or "eval_loss" in r)]
        df = pd.DataFrame(recs)
        for c in COLUMNS[1:]:
            if c not in df.columns:
                df[c] = np.nan
        df = df[list(COLUMNS[1:])].astype(float)
        df.insert(0, "run", str(label))
        frames.append(df)
    if not frames:
        raise ConfigError("no runs given")
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------------------- figure
def ema(y: np.ndarray, smooth: float) -> np.ndarray:
    """Debiased exponential moving average: ``m_t = s*m_{t-1} + (1-s)*y_t``, divided by
    ``1 - s^t`` so the start is not pulled towards zero (TensorBoard's smoothing). ``smooth=0``
    returns ``y``; NaNs are skipped (they keep the running value)."""
    if not 0 <= smooth < 1:
        raise ConfigError(f"smoothing must be in [0, 1), got {smooth}")
    y = np.asarray(y, dtype=float)
    if smooth == 0 or len(y) == 0:
        return y
    out, m, w = np.empty_like(y), 0.0, 0.0
    for i, v in enumerate(y):
        if np.isfinite(v):
            m, w = smooth * m + (1 - smooth) * v, smooth * w + (1 - smooth)
        out[i] = m / w if w > 0 else np.nan
    return out


def x_column(x: str) -> str:
    if x not in X_AXES:
        raise ConfigError(f"x-axis {x!r} is not one of {', '.join(X_AXES)}")
    return X_AXES[x][0]


def available_axes(df) -> list[str]:
    """The x-axes every run can be drawn against (FLOPs only where the loop counted them)."""
    out = []
    for key, (col, _, _) in X_AXES.items():
        ok = True
        for _, g in df.groupby("run", sort=False):
            v = g[col].to_numpy(dtype=float)
            if not np.isfinite(v).any() or (col == "flops" and not (v > 0).any()):
                ok = False
        if ok:
            out.append(key)
    return out


def series(df, run: str, kind: str, x: str, smooth: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of one run's ``kind`` curve (``"loss"`` = train, smoothed; ``"eval_loss"``)."""
    g = df[(df["run"] == run) & df[kind].notna()].sort_values("step", kind="stable")
    xs, ys = g[x_column(x)].to_numpy(dtype=float), g[kind].to_numpy(dtype=float)
    return xs, (ema(ys, smooth) if kind == "loss" else ys)


def _trace_specs(df, y: str) -> list[tuple[str, str]]:
    kinds = {"both": ("loss", "eval_loss"), "train": ("loss",), "eval": ("eval_loss",)}
    if y not in kinds:
        raise ConfigError(f"y must be one of {', '.join(kinds)}, got {y!r}")
    specs = []
    for run in dict.fromkeys(df["run"]):
        for kind in kinds[y]:
            if df.loc[df["run"] == run, kind].notna().any():
                specs.append((run, kind))
    if not specs:
        raise ConfigError("no loss values to plot")
    return specs


def _title(x: str) -> str:
    return f"loss against {X_AXES[x][1].split(',')[0]}"


def curves_figure(df, x: str = "step", y: str = "both", smooth: float = 0.0, log_x: bool = False,
                  log_y: bool = False, title: str | None = None):
    """Loss curves of every run in ``df`` (from :func:`load_curves`) against ``x``.

    ``x``: ``step`` | ``tokens`` | ``flops`` | ``wall`` (``elapsed_s``). ``y``: ``both`` (train as
    a thin line, eval as markers + line), ``train`` or ``eval``. ``smooth`` in [0, 1) smooths the
    training loss (:func:`ema`). Trace names are ``"<run> train"`` / ``"<run> eval"``, grouped by
    run in the legend (clicking a legend entry hides that run's curves).
    """
    import plotly.graph_objects as go
    col = x_column(x)
    if x not in available_axes(df):
        raise ConfigError(f"not every run recorded {col!r}: cannot plot against {x}")
    fig = go.Figure()
    colors = {r: PALETTE[i % len(PALETTE)] for i, r in enumerate(dict.fromkeys(df["run"]))}
    for run, kind in _trace_specs(df, y):
        xs, ys = series(df, run, kind, x, smooth)
        if kind == "loss":
            fig.add_scatter(x=xs, y=ys, mode="lines", name=f"{run} train", legendgroup=run,
                            line=dict(color=colors[run], width=1.2), opacity=0.75,
                            hovertemplate=f"{run}<br>{X_AXES[x][2]} %{{x:.4g}}<br>train loss %{{y:.4f}}<extra></extra>")
        else:
            fig.add_scatter(x=xs, y=ys, mode="lines+markers", name=f"{run} eval", legendgroup=run,
                            line=dict(color=colors[run], width=2.5), marker=dict(size=7),
                            hovertemplate=f"{run}<br>{X_AXES[x][2]} %{{x:.4g}}<br>eval loss %{{y:.4f}}<extra></extra>")
    fig.update_layout(title=title or _title(x), xaxis_title=X_AXES[x][1], yaxis_title="loss",
                      template="plotly_white", height=420, legend=dict(groupclick="togglegroup"))
    fig.update_xaxes(type="log" if log_x else "linear")
    fig.update_yaxes(type="log" if log_y else "linear")
    return fig


# --------------------------------------------------------------------------------------- widget
_FILLED = None


def figure_widget(figure):
    """A plotly ``FigureWidget`` of ``figure`` whose traces and layout travel in the widget's
    *opening* message.

    ``go.FigureWidget(fig)`` opens its comm with an empty figure and sends the traces and layout
    in a second message. The front end can drop that second message while it is still loading
    plotly's 5 MB widget bundle (it attaches the message handler only once the model exists), and
    the view then renders an empty plot -- in a browser test on a busy machine, one run in two.
    Here the state is set before the comm opens, trace uids are fixed up front (so the front end
    and the kernel agree on them whichever messages arrive), and nothing needs re-sending. The
    views only restyle existing traces; traces added later get no uid from the kernel.
    """
    global _FILLED
    import copy
    import uuid

    import plotly.graph_objects as go
    if _FILLED is None:
        class FilledFigureWidget(go.FigureWidget):
            _set_trace_uid = False                      # keep the uids given below

            def __init__(self, fig):
                self._widget_data = copy.deepcopy(fig._data)          # part of the comm_open state
                self._widget_layout = copy.deepcopy(fig._layout_obj._props)
                super().__init__(fig)
        _FILLED = FilledFigureWidget
    fig = go.Figure(figure)
    for t in fig.data:
        if t.uid is None:
            t.uid = str(uuid.uuid4())
    return _FILLED(fig)


def static_bundle(widget, figure) -> dict:
    """A display bundle holding both the live widget and a static copy of ``figure``.

    JupyterLab shows the widget (its renderer outranks plotly's) while a kernel or saved widget
    state backs it; viewers without widget support fall back to the static plotly JSON (JupyterLab's
    plotly renderer, the workbench's report.html) or to the PNG drawn by
    :func:`workbench.viz.static.figure_png` (nbconvert without widget state, GitHub, nbviewer).
    """
    import plotly.io as pio
    data = widget._repr_mimebundle_() or {}
    fig = figure.to_dict() if hasattr(figure, "to_dict") else figure
    data["application/vnd.plotly.v1+json"] = json.loads(pio.to_json(fig, validate=False))
    data["application/vnd.plotly.v1+json"].setdefault("config", {"responsive": True})
    from .static import static_mimebundle      # a PNG: what nbconvert and code-hosting viewers show
    data.update(static_mimebundle(fig))
    return data


class CurvesView:
    """:func:`curves_figure` as a ``FigureWidget`` with an x-axis toggle and a smoothing slider.

    ``view.widget`` is the box to display (displaying ``view`` itself does the same and also
    embeds a static copy). ``view.axis`` (ToggleButtons: steps / tokens / FLOPs / wall time, only
    those every run recorded) and ``view.smooth`` (FloatSlider, 0 = raw) update the figure in place;
    ``view.set_x("flops")`` and ``view.set_smooth(0.8)`` do the same from code.
    """

    def __init__(self, runs_or_df: Any, x: str = "step", smooth: float = 0.6, y: str = "both", log_y: bool = False):
        import ipywidgets as w
        import pandas as pd
        self.df = runs_or_df if isinstance(runs_or_df, pd.DataFrame) and "run" in runs_or_df.columns \
            else load_curves(runs_or_df)
        axes = available_axes(self.df)
        if x not in axes:
            raise ConfigError(f"x-axis {x!r} is not available for these runs (available: {', '.join(axes)})")
        self.specs = _trace_specs(self.df, y)
        self.figure = figure_widget(curves_figure(self.df, x, y, smooth, log_y=log_y))
        self.axis = w.ToggleButtons(options=[(X_AXES[a][2], a) for a in axes], value=x, description="x-axis",
                                    style={"button_width": "90px"})
        self.smooth = w.FloatSlider(value=smooth, min=0.0, max=0.98, step=0.02, description="smoothing",
                                    continuous_update=False, readout_format=".2f", layout=w.Layout(width="360px"))
        self.axis.observe(lambda ch: self._update(), names="value")
        self.smooth.observe(lambda ch: self._update(), names="value")
        self.widget = w.VBox([w.HBox([self.axis, self.smooth]), self.figure])

    @property
    def x(self) -> str:
        return self.axis.value

    def set_x(self, x: str) -> None:
        x_column(x)
        self.axis.value = x                    # the observer redraws

    def set_smooth(self, smooth: float) -> None:
        self.smooth.value = smooth

    def _update(self) -> None:
        x, s = self.axis.value, self.smooth.value
        with self.figure.batch_update():
            for trace, (run, kind) in zip(self.figure.data, self.specs):
                xs, ys = series(self.df, run, kind, x, s)
                trace.x, trace.y = xs, ys
                trace.hovertemplate = trace.hovertemplate.split("<br>")[0] + \
                    f"<br>{X_AXES[x][2]} %{{x:.4g}}<br>{'train' if kind == 'loss' else 'eval'} loss %{{y:.4f}}<extra></extra>"
            self.figure.layout.xaxis.title.text = X_AXES[x][1]
            self.figure.layout.title.text = _title(x)

    def _repr_mimebundle_(self, **kwargs):
        return static_bundle(self.widget, self.figure)


def curves_view(runs: Any, x: str = "step", smooth: float = 0.6, y: str = "both", log_y: bool = False) -> CurvesView:
    """:class:`CurvesView` of ``runs`` (``{label: run dir}``, a list of run dirs, or a folder of runs)."""
    return CurvesView(runs, x=x, smooth=smooth, y=y, log_y=log_y)
