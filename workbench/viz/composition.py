"""Subset composition: what INGENIOUS kept, by domain and in embedding space.

INGENIOUS (``workbench.selection.ingenious``) trains on a quarter of the corpus, re-sampled every R
steps from importance probabilities built on facility-location gains. Whether that subset is
*representative* is the question this view answers, three ways:

1. **Domain shares**: one stacked bar per set -- the corpus, the random baseline's subset, and each
   INGENIOUS re-selection (``scores/ingenious_001.npz``, ``_002``, ...) -- split by domain (the
   package a ``pydocs`` docstring came from). A representative subset keeps roughly the corpus'
   shares; facility location drops near-duplicates, so heavily templated domains shrink.
2. **Embedding map**: the model's embeddings of every training example projected to 2-D (PCA by
   default: deterministic and cheap), the selected points coloured by domain over the unselected
   ones in grey. A good subset covers the cloud; a bad one clumps.
3. **Examples**: clicking a domain's bar (or picking it in the dropdown) lists the selected
   examples of that domain -- index, facility-location gain, sampling probability and text -- so a
   surprising share can be read, not just seen.

Files it reads (written by the samplers, see :mod:`workbench.runs`):

* ``scores/ingenious_###.npz`` -- ``step`` (scalar), ``indices``, ``gains``, ``probs``, ``domains``
  (one entry per selected example, aligned with ``indices``);
* ``scores/random_subset.npz`` -- ``indices``, ``domains`` (the random baseline's run).

:func:`load_selections` reads them; :func:`composition_frame`, :func:`composition_figure`,
:func:`project_2d` and :func:`map_figure` are pure functions; :class:`SubsetCompositionView` wires
them into widgets (a re-selection slider, clickable bars, a domain dropdown, an example list).
"""
from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import ConfigError
from .curves import PALETTE, figure_widget, static_bundle
from ..selection.ingenious import IngeniousSampler

GREY = "#c8c8c8"
#: maps with more points than this are drawn with WebGL (scattergl): faster, but blank where the
#: browser has no WebGL (some headless or remote setups); below it, SVG works everywhere
WEBGL_ABOVE = 10_000


# --------------------------------------------------------------------------------------- data
def _scores_dir(run: Any) -> Path:
    p = Path(run.path if hasattr(run, "path") else run)
    return p / "scores" if (p / "scores").is_dir() else p


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def load_selections(run: Any, random_run: Any = None) -> list[dict]:
    """The subsets a run recorded, in order: ``[{"name", "step", "indices", "domains", "gains",
    "probs"}]``. ``run`` holds ``scores/ingenious_###.npz`` (one per re-selection);
    ``random_run`` (optional) holds ``scores/random_subset.npz`` and comes first, named
    ``"random"`` (its gains and probs are None)."""
    out = []
    if random_run is not None:
        p = _scores_dir(random_run) / "random_subset.npz"
        if not p.exists():
            raise ConfigError(f"no random_subset.npz in {_scores_dir(random_run)}")
        z = _load(p)
        out.append({"name": "random", "step": None, "indices": z["indices"].astype(np.int64),
                    "domains": z["domains"].astype(str), "gains": None, "probs": None})
    files = sorted(_scores_dir(run).glob("ingenious_*.npz"),
                   key=lambda f: int(re.sub(r"\D", "", f.stem) or 0))
    if not files:
        raise ConfigError(f"no ingenious_###.npz selections in {_scores_dir(run)}")
    for k, f in enumerate(files, 1):
        z = _load(f)
        step = int(np.asarray(z["step"]).reshape(-1)[0]) if "step" in z else None
        out.append({"name": f"ingenious #{k}" + (f" (step {step})" if step is not None else ""), "step": step,
                    "indices": z["indices"].astype(np.int64), "domains": z["domains"].astype(str),
                    "gains": z.get("gains"), "probs": z.get("probs")})
    return out


def composition_frame(corpus_domains: Sequence[str], selections: Mapping[str, Sequence[str]] | list[dict]):
    """Domain counts and shares of the corpus and of each selection.

    ``selections`` is ``{name: domains of the selected examples}`` or the list from
    :func:`load_selections`. Returns a DataFrame with columns ``set, domain, count, share,
    corpus_share, ratio`` (``ratio = share / corpus_share``: above 1 the set over-represents the
    domain), sets in the given order after ``"corpus"``, domains by descending corpus share.
    """
    import pandas as pd
    if isinstance(selections, list):
        selections = {s["name"]: s["domains"] for s in selections}
    corpus = pd.Series(np.asarray(corpus_domains, dtype=str)).value_counts()
    if corpus.empty:
        raise ConfigError("the corpus has no domains")
    corpus_share = corpus / corpus.sum()
    rows = []
    for name, doms in {"corpus": corpus_domains, **selections}.items():
        counts = pd.Series(np.asarray(doms, dtype=str)).value_counts()
        unknown = set(counts.index) - set(corpus.index)
        if unknown:
            raise ConfigError(f"set {name!r} has domains not in the corpus: {sorted(unknown)[:5]}")
        total = max(int(counts.sum()), 1)
        for d in corpus.index:
            c = int(counts.get(d, 0))
            rows.append({"set": name, "domain": d, "count": c, "share": c / total,
                         "corpus_share": float(corpus_share[d]), "ratio": (c / total) / float(corpus_share[d])})
    return pd.DataFrame(rows)


def domain_colors(domains: Sequence[str]) -> dict[str, str]:
    """A stable colour per domain (in order of first appearance)."""
    return {d: PALETTE[i % len(PALETTE)] for i, d in enumerate(dict.fromkeys(domains))}


def composition_figure(frame, highlight: str | None = None, title: str | None = None):
    """Stacked horizontal bars: one row per set (corpus on top), one colour per domain.

    Hover shows count, share and the ratio to the corpus share; ``highlight`` (a set name) is
    drawn in bold. Each domain is one trace named after it, so a click on a bar names its domain.
    """
    import plotly.graph_objects as go
    sets = list(dict.fromkeys(frame["set"]))
    colors = domain_colors(frame["domain"])
    fig = go.Figure()
    for d, g in frame.groupby("domain", sort=False):
        g = g.set_index("set").loc[sets]
        fig.add_bar(y=sets, x=g["share"], name=d, orientation="h", marker=dict(color=colors[d]),
                    customdata=np.stack([g["count"], g["ratio"]], axis=1),
                    hovertemplate=f"<b>{html.escape(d)}</b> in %{{y}}<br>%{{x:.1%}} (%{{customdata[0]}} examples)"
                                  "<br>%{customdata[1]:.2f}x its corpus share<extra></extra>")
    fig.update_layout(barmode="stack", template="plotly_white", height=140 + 34 * len(sets),
                      title=title or "domain shares: corpus vs. each selected subset (click a bar to list its examples)",
                      xaxis=dict(title="share of the set", tickformat=".0%", range=[0, 1]),
                      legend=dict(orientation="h", y=-0.25), margin=dict(l=160))
    _highlight(fig, sets, highlight)
    return fig


def _highlight(fig, sets, highlight, **where) -> None:
    fig.update_yaxes(autorange="reversed", tickmode="array", tickvals=sets,
                     ticktext=[f"<b>▶ {s}</b>" if s == highlight else s for s in sets], **where)


def project_2d(X: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """``[n, 2]`` coordinates of the rows of ``X``.

    ``pca`` (default): the top two principal components of the centred rows (SVD; signs fixed so
    the largest loading is positive; deterministic, O(n·H²)). ``tsne``: scikit-learn's t-SNE on the
    cosine distance (keeps local neighbourhoods; O(n log n) but tens of seconds for thousands of
    points on a CPU).
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or len(X) < 2:
        raise ConfigError(f"need a [n >= 2, H] array of embeddings, got shape {X.shape}")
    if method == "pca":
        Xc = X - X.mean(0, keepdims=True)
        _, _, vt = np.linalg.svd(Xc, full_matrices=False)
        comps = vt[:2]
        comps *= np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(1)])[:, None]
        xy = Xc @ comps.T
        return np.pad(xy, ((0, 0), (0, 2 - xy.shape[1]))) if xy.shape[1] < 2 else xy
    if method == "tsne":
        from sklearn.manifold import TSNE
        perplexity = float(min(30, max(2, (len(X) - 1) // 3)))
        return TSNE(2, metric="cosine", init="pca", random_state=seed, perplexity=perplexity).fit_transform(X)
    raise ConfigError(f"projection {method!r} is not 'pca' or 'tsne'")


def _snippet(text: str, n: int = 90) -> str:
    t = " ".join(str(text).split())
    return html.escape(t[:n] + ("…" if len(t) > n else ""))


def _hover(i: int, domain: str, texts) -> str:
    return f"#{i} {html.escape(domain)}<br>{_snippet(texts[i]) if texts is not None else ''}"


def _map_traces(mask, domains, order):
    """(name, rows) of the fixed traces of the map: 'not selected', then one per domain."""
    dom = np.asarray(domains, dtype=str)
    out = [("not selected", np.flatnonzero(~mask))]
    out += [(d, np.flatnonzero(mask & (dom == d))) for d in order]
    return out


def map_figure(xy: np.ndarray, selected: np.ndarray, domains: Sequence[str], texts: Sequence[str] | None = None,
               title: str | None = None):
    """Scatter of the 2-D embedding map: unselected points in grey, selected ones by domain.

    ``selected`` is a bool mask or an index array over the rows of ``xy``. Traces are fixed
    (``"not selected"`` then one per domain, possibly empty) so a widget can swap the selection
    by changing their points only.
    """
    import plotly.graph_objects as go
    xy = np.asarray(xy, dtype=float)
    mask = _as_mask(selected, len(xy))
    if len(domains) != len(xy):
        raise ConfigError(f"{len(domains)} domains for {len(xy)} points")
    order = list(dict.fromkeys(np.asarray(domains, dtype=str)))
    colors = domain_colors(order)
    hover = np.array([_hover(i, d, texts) for i, d in enumerate(np.asarray(domains, dtype=str))])
    fig = go.Figure()
    scatter = go.Scattergl if len(xy) > WEBGL_ABOVE else go.Scatter
    for name, rows in _map_traces(mask, domains, order):
        grey = name == "not selected"
        fig.add_trace(scatter(x=xy[rows, 0], y=xy[rows, 1], mode="markers", name=name, text=hover[rows],
                              hovertemplate="%{text}<extra></extra>", legendgroup=name, showlegend=True,
                              marker=dict(size=4 if grey else 6, color=GREY if grey else colors[name],
                                          opacity=0.45 if grey else 0.9)))
    fig.update_layout(title=title or f"embedding map: {int(mask.sum())} of {len(xy)} examples selected",
                      template="plotly_white", height=460, xaxis_title="component 1", yaxis_title="component 2",
                      legend=dict(itemsizing="constant"))
    return fig


def _as_mask(selected, n: int) -> np.ndarray:
    a = np.asarray(selected)
    if a.dtype == bool:
        if a.shape != (n,):
            raise ConfigError(f"selection mask has shape {a.shape}, expected ({n},)")
        return a
    if a.size and (a.min() < 0 or a.max() >= n):
        raise ConfigError(f"selected indices out of range [0, {n})")
    m = np.zeros(n, dtype=bool)
    m[a.astype(np.int64)] = True
    return m


def examples_html(selection: dict, domain: str, texts: Sequence[str], corpus_domains: Sequence[str],
                  limit: int = 15, chars: int = 300) -> str:
    """An HTML list of the examples of ``domain`` in one selection (highest gain first when the
    selection has gains), each with its index, gain, probability and the start of its text."""
    doms = selection["domains"]
    rows = np.flatnonzero(doms == domain)
    total = int(np.sum(np.asarray(corpus_domains, dtype=str) == domain))
    gains, probs = selection.get("gains"), selection.get("probs")
    if gains is not None:
        rows = rows[np.argsort(-np.asarray(gains)[rows], kind="stable")]
    head = (f"<b>{html.escape(domain)}</b> in <b>{html.escape(selection['name'])}</b>: {len(rows)} selected of "
            f"{total} in the corpus" + (" (highest facility-location gain first)" if gains is not None else ""))
    items = []
    for r in rows[:limit]:
        i = int(selection["indices"][r])
        meta = f"#{i}"
        if gains is not None:
            meta += f" · gain {float(gains[r]):.3f}"
        if probs is not None:
            meta += f" · p {float(probs[r]):.2e}"
        t = " ".join(str(texts[i]).split())
        items.append(f"<li><code>{meta}</code> {html.escape(t[:chars])}{'…' if len(t) > chars else ''}</li>")
    more = f"<p>… and {len(rows) - limit} more</p>" if len(rows) > limit else ""
    return f"<div class='wb-examples'><p>{head}</p><ol>{''.join(items)}</ol>{more}</div>"


# --------------------------------------------------------------------------------------- widget
class SubsetCompositionView:
    """The three views above, linked, in one ``FigureWidget`` (bars on top, map below).

    Args:
        selections: a run directory / Run with ``scores/ingenious_###.npz``, or the list from
            :func:`load_selections`.
        corpus_domains, texts: the domain and text of every training example (index ``i`` of a
            selection refers to ``corpus_domains[i]`` / ``texts[i]``; for the MLM task that is
            ``task.domains`` and ``task.corpus.texts``).
        embeddings: ``[n, H]`` features of every training example (e.g.
            ``IngeniousSampler.embeddings(model)``), projected with :func:`project_2d`; or pass
            ``xy`` (``[n, 2]``) directly. Neither: no map.
        random_run: the random baseline's run directory (adds its subset as the ``random`` row).

    Widgets: ``view.selection`` (a slider over the subsets: moves the map and the bold row),
    ``view.domain`` (dropdown; clicking a bar sets it), ``view.examples`` (HTML list),
    ``view.figure`` (the FigureWidget). One FigureWidget, not two: each one saves plotly's
    ~5 MB widget bundle into the notebook's widget state.
    """

    def __init__(self, selections: Any, corpus_domains: Sequence[str], texts: Sequence[str],
                 embeddings: np.ndarray | None = None, xy: np.ndarray | None = None, random_run: Any = None,
                 projection: str = "pca", examples: int = 15):
        import ipywidgets as w
        self.selections = selections if isinstance(selections, list) else load_selections(selections, random_run)
        if not self.selections:
            raise ConfigError("no selections to show")
        self.corpus_domains = np.asarray(corpus_domains, dtype=str)
        self.texts = texts
        if len(texts) != len(self.corpus_domains):
            raise ConfigError(f"{len(texts)} texts for {len(self.corpus_domains)} domains")
        for s in self.selections:
            if len(s["indices"]) and s["indices"].max() >= len(self.corpus_domains):
                raise ConfigError(f"selection {s['name']!r} indexes past the {len(self.corpus_domains)} examples given")
        self.frame = composition_frame(self.corpus_domains, self.selections)
        self.sets = list(dict.fromkeys(self.frame["set"]))
        self.order = list(dict.fromkeys(self.corpus_domains))
        self.limit = examples
        self.xy = xy if xy is not None else (project_2d(embeddings, projection) if embeddings is not None else None)
        if self.xy is not None and len(self.xy) != len(self.corpus_domains):
            raise ConfigError(f"{len(self.xy)} embedded points for {len(self.corpus_domains)} examples")
        last = len(self.selections) - 1
        self.figure = figure_widget(self._figure(last))
        self.n_bars = self.frame["domain"].nunique()
        for trace in self.figure.data[:self.n_bars]:
            trace.on_click(self._on_bar_click)
        domains = list(self.frame["domain"].drop_duplicates())
        self.selection = w.SelectionSlider(options=[(s["name"], i) for i, s in enumerate(self.selections)],
                                           value=last, description="subset", continuous_update=False,
                                           layout=w.Layout(width="520px"), style={"description_width": "initial"})
        self.domain = w.Dropdown(options=domains, value=domains[0], description="domain")
        self.examples = w.HTML()
        self.selection.observe(lambda ch: self._show_selection(), names="value")
        self.domain.observe(lambda ch: self._show_examples(), names="value")
        self._show_examples()
        self.widget = w.VBox([self.selection, self.figure, self.domain, self.examples])

    def _map_title(self, k: int) -> str:
        s = self.selections[k]
        return f"embedding map, {s['name']}: {len(s['indices'])} of {len(self.xy)} selected"

    def _figure(self, k: int):
        """Bars (row 1) and, with embeddings, the map (row 2) as one figure."""
        from plotly.subplots import make_subplots
        bars = composition_figure(self.frame, highlight=self.selections[k]["name"])
        if self.xy is None:
            return bars
        mp = map_figure(self.xy, self.selections[k]["indices"], self.corpus_domains, self.texts)
        hb = 34 * len(self.sets) + 60
        fig = make_subplots(rows=2, cols=1, row_heights=[hb, 460], vertical_spacing=90 / (hb + 560),
                            subplot_titles=["domain shares: corpus vs. each subset (click a bar to list its examples)",
                                            self._map_title(k)])
        for t in bars.data:
            fig.add_trace(t.to_plotly_json(), row=1, col=1)
        for t in mp.data:
            fig.add_trace({**t.to_plotly_json(), "showlegend": t.name == "not selected"}, row=2, col=1)
        fig.update_layout(barmode="stack", template="plotly_white", height=hb + 600, margin=dict(l=170),
                          title="INGENIOUS subset composition", legend=dict(orientation="h", y=-0.08))
        fig.update_xaxes(tickformat=".0%", range=[0, 1], title_text="share of the set", row=1, col=1)
        fig.update_xaxes(title_text="component 1", row=2, col=1)
        fig.update_yaxes(title_text="component 2", row=2, col=1)
        _highlight(fig, self.sets, self.selections[k]["name"], row=1, col=1)
        return fig

    @property
    def current(self) -> dict:
        return self.selections[self.selection.value]

    def _on_bar_click(self, trace, points, state) -> None:
        if not points.point_inds:
            return
        clicked = trace.y[points.point_inds[0]]
        names = [s["name"] for s in self.selections]
        if clicked in names:                   # a subset's bar: show that subset too ("corpus" keeps it)
            self.selection.value = names.index(clicked)
        self.domain.value = trace.name

    def show_domain(self, domain: str) -> None:
        """List ``domain``'s examples in the current subset (what clicking its bar does)."""
        self.domain.value = domain

    def _show_selection(self) -> None:
        k = self.selection.value
        with self.figure.batch_update():
            _highlight(self.figure, self.sets, self.selections[k]["name"], **({"row": 1, "col": 1}
                                                                            if self.xy is not None else {}))
            if self.xy is not None:
                mask = _as_mask(self.selections[k]["indices"], len(self.xy))
                for trace, (name, rows) in zip(self.figure.data[self.n_bars:],
                                               _map_traces(mask, self.corpus_domains, self.order)):
                    trace.x, trace.y = self.xy[rows, 0], self.xy[rows, 1]
                    trace.text = [_hover(i, self.corpus_domains[i], self.texts) for i in rows]
                self.figure.layout.annotations[1].text = self._map_title(k)
        self._show_examples()

    def _show_examples(self) -> None:
        self.examples.value = examples_html(self.current, self.domain.value, self.texts, self.corpus_domains,
                                            limit=self.limit)

    def _repr_mimebundle_(self, **kwargs):
        return static_bundle(self.widget, self.figure)


def embed(model, task, layer: int = -1, batch_size: int = 128) -> np.ndarray:
    """``[n, H]`` features of every example of ``task`` from hidden layer ``layer`` of ``model``:
    exactly the features INGENIOUS selects on (it reuses ``IngeniousSampler.embeddings``: mean over
    non-padding tokens for encoders, the last token for decoders). One forward pass over the data."""
    s = IngeniousSampler(layer=layer, partitions=1, embed_batch_size=batch_size)
    s.setup(task)
    return s.embeddings(model)


def composition_view(run: Any, corpus_domains: Sequence[str], texts: Sequence[str], random_run: Any = None,
                     embeddings: np.ndarray | None = None, model=None, task=None, layer: int = -1,
                     projection: str = "pca", examples: int = 15) -> SubsetCompositionView:
    """:class:`SubsetCompositionView` of the INGENIOUS run in ``run`` (and the random baseline's
    subset from ``random_run``). The map needs the examples' embeddings: pass ``embeddings``, or
    ``model`` and ``task`` to compute them with :func:`embed` (one forward pass over ``task``)."""
    if embeddings is None and model is not None:
        if task is None:
            raise ConfigError("pass task= with model= so the view can embed the examples")
        embeddings = embed(model, task, layer)
    return SubsetCompositionView(run, corpus_domains, texts, embeddings=embeddings, random_run=random_run,
                                 projection=projection, examples=examples)
