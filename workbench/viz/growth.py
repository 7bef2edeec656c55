"""Growth views: what a fitted LiGO operator learned, and eval loss against cumulative cost.

LiGO (``workbench.growth.LiGO``) builds large layer ``l`` of module type ``m`` as
``sum_j w^m[l, j] * (width-expanded small layer j)``, and widens every small weight with expansion
matrices ``M = [I; M_new]`` (rows = large units, columns = small units).  Both are small enough to
look at:

* :func:`depth_figure` -- one heatmap per module type (q, k, v, o, fi, fo, ln1, ln2) of the
  ``(L_large, L_small)`` depth coefficients, weights in the top row and biases below.  At the
  StackBERT init each row is one-hot on ``l mod L_small`` (the stack repeated); a fitted operator
  shows which small layers each large layer ended up mixing.
* :func:`width_figure` -- heatmaps of the expansion matrices: the residual stream's (shared by
  every layer) and, for one small layer, those of the Q, K, V and FFN outputs.  At the Net2Net
  init every new row is one-hot (a copy of an old unit, whole heads for Q/K/V); training spreads them.
* :func:`loss_vs_cost_figure` -- eval loss of every method against cumulative FLOPs (or wall
  time, or steps), with the target line, from the recipe's ``curves`` DataFrame.
* :func:`operator_loss_figure` -- the operator's training loss per step.

Every builder is a pure function: a LiGO module, or a plain mapping of its ``state_dict`` arrays
(``width.res``, ``width.q`` ..., ``depth_w.q`` ..., ``depth_b.q`` ...; e.g. loaded from
``operator/ligo.safetensors``), or a DataFrame in, a ``plotly`` Figure out.  Pass ``reference=``
(the operator's initial state) to plot what training *changed* instead of the values.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..errors import ConfigError

MODULES = ("q", "k", "v", "o", "fi", "fo", "ln1", "ln2")
COST_AXES = {"flops": "FLOPs (operator + large training)", "flops_total": "FLOPs (small + operator + large)",
             "wall_s": "training wall time, s (operator + large)", "wall_total_s": "training wall time, s (incl. small)",
             "step": "large-model step", "tokens": "large-model tokens"}


def operator_arrays(ligo_or_state: Any) -> dict[str, np.ndarray]:
    """``{name: float64 array}`` of a LiGO module's state (or of a mapping of tensors / arrays)."""
    state = ligo_or_state.state_dict() if hasattr(ligo_or_state, "state_dict") else ligo_or_state
    if not isinstance(state, Mapping):
        raise ConfigError(f"expected a LiGO module or a mapping of its arrays, got {type(ligo_or_state).__name__}")
    out = {}
    for k, v in state.items():
        if hasattr(v, "detach"):
            v = v.detach().cpu().float().numpy()
        out[k] = np.asarray(v, dtype=np.float64)
    if not any(k.startswith("depth_w.") for k in out):
        raise ConfigError("no depth coefficients ('depth_w.*') in the operator state")
    return out


def _delta(arr: dict, ref: Any, key: str) -> np.ndarray:
    a = arr[key]
    if ref is None:
        return a
    r = operator_arrays(ref)
    return a - r[key] if key in r else a


def _symmetric_range(mats) -> float:
    m = max((float(np.abs(x).max()) for x in mats if x.size), default=1.0)
    return m or 1.0


def depth_figure(ligo_or_state: Any, reference: Any = None, title: str | None = None):
    """Heatmaps of the depth coefficients: rows weights / biases, one column per module type.

    ``reference`` (the initial operator) turns it into a view of the change.  Colour range is
    symmetric and shared by all panels, so a panel's colours compare across module types.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    arr = operator_arrays(ligo_or_state)
    mods = [m for m in MODULES if f"depth_w.{m}" in arr]
    mats = {(kind, m): _delta(arr, reference, f"depth_{kind}.{m}") for kind in ("w", "b") for m in mods}
    zmax = _symmetric_range(mats.values())
    L2, L1 = mats[("w", mods[0])].shape
    fig = make_subplots(rows=2, cols=len(mods), shared_yaxes=True, horizontal_spacing=0.015, vertical_spacing=0.12,
                        subplot_titles=[f"{m} {'weight' if k == 'w' else 'bias'}" for k in ("w", "b") for m in mods])
    for r, kind in enumerate(("w", "b"), 1):
        for c, m in enumerate(mods, 1):
            z = mats[(kind, m)]
            fig.add_trace(go.Heatmap(
                z=z, x=list(range(L1)), y=list(range(L2)), zmin=-zmax, zmax=zmax, colorscale="RdBu", reversescale=True,
                showscale=(r == 1 and c == len(mods)), colorbar=dict(len=0.9, thickness=10),
                hovertemplate=f"{m}.{kind}: large layer %{{y}} <- small layer %{{x}}: %{{z:.3f}}<extra></extra>"),
                row=r, col=c)
    fig.update_yaxes(autorange="reversed", dtick=1)
    fig.update_xaxes(dtick=1)
    fig.update_yaxes(title_text="large layer", row=1, col=1)
    fig.update_yaxes(title_text="large layer", row=2, col=1)
    fig.update_xaxes(title_text="small layer", row=2, col=(len(mods) + 1) // 2)
    what = "change of the depth coefficients during operator training" if reference is not None else \
        "LiGO depth coefficients w[l, j]: large layer l = sum_j w[l, j] x small layer j"
    fig.update_layout(title=title or what, template="plotly_white", height=200 + 40 * L2, width=max(900, 110 * len(mods)))
    return fig


def expansion(arr: dict, name: str, layer: int = 0) -> np.ndarray | None:
    """The full expansion ``M = [I; M_new]`` (large units x small units) of ``name`` (res/q/k/v/fi).

    Per-layer expansions (q, k, v, fi) are stored stacked over small layers: ``layer`` picks one.
    None when that dimension does not grow (no ``width.<name>`` in the state).
    """
    key = f"width.{name}"
    if key not in arr:
        return None
    new = arr[key]
    if new.ndim == 3:
        if not 0 <= layer < new.shape[0]:
            raise ConfigError(f"small layer {layer} out of range 0..{new.shape[0] - 1}")
        new = new[layer]
    return np.vstack([np.eye(new.shape[1]), new])


def width_figure(ligo_or_state: Any, layer: int = 0, reference: Any = None, title: str | None = None):
    """Heatmaps of the width expansions: the residual stream's and small layer ``layer``'s Q/K/V/FFN.

    Rows are large units (the first ``n_small`` are the identity, the old units kept), columns the
    small units each one mixes.  ``reference`` plots the change instead (the identity block is then
    zero by construction: only the new rows are learned).
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    arr = operator_arrays(ligo_or_state)
    ref = operator_arrays(reference) if reference is not None else None
    panels = []
    for name, label in (("res", "residual stream (all layers)"), ("q", f"Q, layer {layer}"), ("k", f"K, layer {layer}"),
                        ("v", f"V, layer {layer}"), ("fi", f"FFN, layer {layer}")):
        m = expansion(arr, name, layer)
        if m is None:
            continue
        if ref is not None:
            m0 = expansion(ref, name, layer)
            m = m - m0 if m0 is not None else m
        panels.append((label, m))
    if not panels:
        raise ConfigError("the operator grows no width: there is no expansion to show")
    zmax = _symmetric_range([m[m.shape[1]:] for _, m in panels])  # colour by the learned rows, not the identity
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[0] for p in panels], horizontal_spacing=0.04)
    for c, (label, m) in enumerate(panels, 1):
        fig.add_trace(go.Heatmap(z=m, zmin=-zmax, zmax=zmax, colorscale="RdBu", reversescale=True,
                                 showscale=(c == len(panels)), colorbar=dict(thickness=10),
                                 hovertemplate=f"{label}: large unit %{{y}} <- small unit %{{x}}: %{{z:.3f}}<extra></extra>"),
                      row=1, col=c)
        fig.add_hline(y=m.shape[1] - 0.5, line=dict(color="black", width=1, dash="dot"), row=1, col=c)
    fig.update_yaxes(autorange="reversed")
    fig.update_yaxes(title_text="large unit", row=1, col=1)
    what = "change of the width expansions during operator training" if reference is not None else \
        "LiGO width expansions M = [I; M_new] (below the dotted line: the new units)"
    fig.update_layout(title=title or what, template="plotly_white", height=460, width=max(900, 260 * len(panels)))
    return fig


def loss_vs_cost_figure(curves, x: str = "flops", target: float | None = None, title: str | None = None,
                        log_x: bool = False, x_title: str | None = None):
    """Eval loss of every method against cumulative cost ``x`` (a column of the recipe's ``curves``).

    ``curves`` needs columns ``method``, ``eval_loss`` and ``x`` (one of :data:`COST_AXES`); one
    line per method, in the order they appear; ``target`` draws the scratch model's final loss;
    ``x_title`` overrides the axis label (e.g. when the recipe's clock measured CPU time).
    """
    import plotly.graph_objects as go
    for col in ("method", "eval_loss", x):
        if col not in curves.columns:
            raise ConfigError(f"curves need a {col!r} column; have {list(curves.columns)}")
    fig = go.Figure()
    for m in dict.fromkeys(curves["method"]):
        d = curves[curves["method"] == m]
        fig.add_scatter(x=d[x], y=d["eval_loss"], name=m, mode="lines+markers", marker=dict(size=4),
                        line=dict(width=3 if m.startswith("ligo") else 2, dash="dash" if m == "scratch" else "solid"))
    if target is not None:
        fig.add_hline(y=target, line=dict(color="gray", dash="dot"),
                      annotation_text=f"target {target:.3f} (scratch, final)", annotation_position="top right")
    label = x_title or COST_AXES.get(x, x)
    fig.update_layout(title=title or f"eval loss vs {label}", xaxis_title=label,
                      yaxis_title="eval loss", template="plotly_white", height=420, legend_title="method")
    if log_x:
        fig.update_xaxes(type="log")
    return fig


def operator_loss_figure(losses, title: str | None = None):
    """The LiGO operator's training loss (the large model's loss on the materialised weights) per step."""
    import plotly.graph_objects as go
    y = [float(v) for v in losses]
    if not y:
        raise ConfigError("no operator losses to plot")
    fig = go.Figure(go.Scatter(x=list(range(1, len(y) + 1)), y=y, mode="lines"))
    fig.update_layout(title=title or "LiGO operator training loss (large model, materialised weights)",
                      xaxis_title="operator step", yaxis_title="loss", template="plotly_white", height=320)
    return fig
