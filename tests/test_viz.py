"""Views (workbench.viz: curves, composition, influence) built from small real runs.

The data: three short bert-tiny runs on two real ``pydocs`` domains (full data, a random 25% and
INGENIOUS 25% with two re-selections, FLOPs counted), the INGENIOUS model's embeddings, and MATES
influence -- oracle influence probed on a gpt2-tiny checkpoint, an influence model fitted on part
of it and its predictions for all candidates. Built once per session (``viz_data``) and shared
with the browser test. A papermill run checks that an executed notebook keeps the views' widget
state.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

CORPUS = "pydocs:datasets,papermill"     # two domains, ~700 docs


def build_viz_data(root: Path) -> dict:
    """Train the small runs into ``root`` (once: reused when ``root/DONE`` exists); returns paths."""
    root = Path(root)
    out = {"runs": root / "runs", "embeddings": root / "embeddings.npy", "influence": root / "influence.npz",
           "corpus": CORPUS}
    if (root / "DONE").exists():
        return out
    import torch

    import workbench as wb
    from workbench.selection import IngeniousSampler
    from workbench.selection.influence_model import InfluenceModel
    from workbench.selection.mates import batched_probe
    from workbench.training import FullSampler, RandomSubsetSampler, make_optimizer
    root.mkdir(parents=True, exist_ok=True)
    for name in ("full", "random", "ingenious"):
        p = wb.prepare(CORPUS, "bert-tiny", seq_len=64, vocab_size=1024, seed=0)
        sampler = {"full": FullSampler(), "random": RandomSubsetSampler(0.25, warm_start_steps=2),
                   "ingenious": IngeniousSampler(0.25, warm_start_steps=2, resample_every=2, partitions=2)}[name]
        res = wb.train(p.model, p.train, eval_data=p.eval, sampler=sampler, budget=wb.Budget(max_steps=6),
                       schedule=wb.Schedule("linear", warmup=1 / 6), batch_size=8, eval_every=3, eval_batches=2,
                       run=wb.Run(out["runs"] / name, {"method": name}), progress=False,
                       flops_per_token=wb.flops_per_token(p.model, 64, head_fraction=0.15))
        if name == "ingenious":
            np.save(out["embeddings"], sampler.embeddings(res.model))
    # MATES: oracle influence of 48 candidate blocks on a briefly trained gpt2-tiny, a fitted influence model
    p = wb.prepare("pydocs:datasets", "gpt2-tiny", seq_len=32, vocab_size=1024, seed=0)
    model, task = p.model, p.train
    opt = make_optimizer(model, lr=1e-3, weight_decay=0.01)
    for step in range(4):
        loss = task.loss(model, task.collate(list(range(step * 8, step * 8 + 8)), step=step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    n = min(96, len(task) - 8)
    cands = torch.as_tensor(np.asarray([task.input_ids[i] for i in range(8, 8 + n)]), dtype=torch.long)
    ref = torch.as_tensor(np.asarray([p.eval.input_ids[i] for i in range(4)]), dtype=torch.long)
    oracle = batched_probe(model, opt, cands[:48], ref, chunk_size=16)
    im = InfluenceModel(len(p.tokenizer), hidden=32, layers=1, heads=2, max_len=32)
    im.fit(cands[:40], oracle[:40], epochs=3, batch_size=16, seed=0)
    predicted = im.predict(cands)
    full_oracle = np.full(n, np.nan)
    full_oracle[:48] = oracle
    domains = np.asarray([task.domains[i] for i in range(8, 8 + n)])
    np.savez(out["influence"], predicted=predicted, oracle=full_oracle, domains=domains)
    (root / "DONE").write_text("ok")
    return out


@pytest.fixture(scope="session")
def viz_data(tmp_path_factory):
    return build_viz_data(tmp_path_factory.getbasetemp() / "viz-data")


@pytest.fixture(scope="session")
def prep_two_domains():
    import workbench as wb
    return wb.prepare(CORPUS, "bert-tiny", seq_len=64, vocab_size=1024, seed=0)


def _metrics(path):
    return [json.loads(line) for line in Path(path, "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------- curves
def test_curves_frame_and_figure_follow_metrics(viz_data):
    from workbench.viz import curves_figure, load_curves
    from workbench.viz.curves import available_axes, ema
    df = load_curves(viz_data["runs"])
    assert list(dict.fromkeys(df["run"])) == ["full", "ingenious", "random"]
    assert available_axes(df) == ["step", "tokens", "flops", "wall"]
    recs = _metrics(viz_data["runs"] / "random")
    train = [r for r in recs if "loss" in r]
    evals = [r for r in recs if "eval_loss" in r]
    for x, col in (("step", "step"), ("tokens", "tokens"), ("flops", "flops"), ("wall", "elapsed_s")):
        fig = curves_figure(df, x=x)
        tr = next(t for t in fig.data if t.name == "random train")
        ev = next(t for t in fig.data if t.name == "random eval")
        assert np.allclose(tr.x, [r[col] for r in train]) and np.allclose(tr.y, [r["loss"] for r in train])
        assert np.allclose(ev.x, [r[col] for r in evals]) and np.allclose(ev.y, [r["eval_loss"] for r in evals])
    assert all(r["flops"] > 0 for r in train)
    # smoothing: debiased EMA, exact on a constant, identity at 0
    assert np.allclose(ema(np.full(7, 3.0), 0.9), 3.0)
    y = np.array([4.0, 2.0, 3.0])
    assert np.allclose(ema(y, 0.0), y)
    assert np.allclose(ema(y, 0.5), [4.0, (0.25 * 4 + 0.5 * 2) / 0.75, (0.125 * 4 + 0.25 * 2 + 0.5 * 3) / 0.875])


def test_curves_view_switches_axis_and_smoothing(viz_data):
    from workbench.viz import CurvesView
    view = CurvesView({"full": viz_data["runs"] / "full", "ingenious": viz_data["runs"] / "ingenious"}, smooth=0.0)
    assert [b[1] for b in view.axis.options] == ["step", "tokens", "flops", "wall"]
    recs = [r for r in _metrics(viz_data["runs"] / "full") if "loss" in r]
    view.set_x("tokens")
    assert np.allclose(view.figure.data[0].x, [r["tokens"] for r in recs])
    assert view.figure.layout.xaxis.title.text == "tokens seen"
    view.axis.value = "wall"                              # what a click on the toggle does
    assert np.allclose(view.figure.data[0].x, [r["elapsed_s"] for r in recs])
    raw_eval = view.figure.data[1].y
    view.smooth.value = 0.8
    assert not np.allclose(view.figure.data[0].y, [r["loss"] for r in recs])   # train smoothed
    assert np.allclose(view.figure.data[1].y, raw_eval)                         # eval untouched
    bundle = view._repr_mimebundle_()
    assert {"application/vnd.jupyter.widget-view+json", "application/vnd.plotly.v1+json"} <= set(bundle)


def test_curves_refuse_missing_axes(tmp_path):
    from workbench import ConfigError
    from workbench.viz import CurvesView, curves_figure, load_curves
    recs = [{"step": 1, "tokens": 10, "flops": 0.0, "loss": 3.0, "elapsed_s": 0.1},
            {"step": 2, "tokens": 20, "flops": 0.0, "loss": 2.5, "elapsed_s": 0.2}]
    df = load_curves({"no-flops": recs})
    with pytest.raises(ConfigError, match="flops"):
        curves_figure(df, x="flops")
    with pytest.raises(ConfigError, match="not available"):
        CurvesView(df, x="flops")
    with pytest.raises(ConfigError, match="x-axis"):
        curves_figure(df, x="epochs")
    with pytest.raises(ConfigError, match="no metrics.jsonl"):
        load_curves([tmp_path])


# ------------------------------------------------------------------------------------------- composition
def test_selections_and_composition_frame(viz_data, prep_two_domains):
    from workbench.viz import composition_frame, load_selections
    sels = load_selections(viz_data["runs"] / "ingenious", random_run=viz_data["runs"] / "random")
    assert [s["name"] for s in sels] == ["random", "ingenious #1 (step 2)", "ingenious #2 (step 4)"]
    doms = np.asarray(prep_two_domains.train.domains)
    for s in sels:
        assert (doms[s["indices"]] == s["domains"]).all()          # the recorded domains are the corpus'
    f = composition_frame(doms, sels)
    assert set(f["domain"]) == {"datasets", "papermill"}
    assert np.allclose(f.groupby("set")["share"].sum(), 1.0)
    for s in sels:
        g = f[f["set"] == s["name"]].set_index("domain")
        for d in ("datasets", "papermill"):
            assert g.loc[d, "count"] == int(np.sum(s["domains"] == d))
            assert np.isclose(g.loc[d, "ratio"], g.loc[d, "share"] / np.mean(doms == d))


def test_static_png_of_plotly_figures():
    """Every kind of figure the views draw becomes a PNG (matplotlib, no browser)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from workbench.viz.static import figure_png, static_mimebundle
    fig = make_subplots(rows=1, cols=3, subplot_titles=("a", "b", "c"))
    fig.add_scatter(x=[1, 2, 3], y=[3, 1, 2], name="line", row=1, col=1)
    fig.add_bar(x=["u", "v"], y=[1, 2], name="bar", row=1, col=2)
    fig.add_histogram(x=np.random.default_rng(0).normal(size=200), row=1, col=3)
    fig.add_hline(y=1.5, line_dash="dash", row=1, col=1)
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_layout(title="t", barmode="stack")
    png = figure_png(fig)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and 5_000 < len(png) < 200_000
    assert figure_png(go.Figure(go.Heatmap(z=[[1, 2], [3, 4]])))[:4] == b"\x89PNG"
    odd = figure_png({"data": [{"type": "scatter", "y": "not numbers"}]})     # an odd figure: no exception
    assert odd is None or odd[:4] == b"\x89PNG"
    assert set(static_mimebundle(fig)) == {"image/png"}


def test_compact_stores_figure_arrays_as_float32():
    """A figure's float64 arrays (plotly's base64 typed arrays) are stored as float32 by ``compact``:
    half the bytes, the same values to float32 precision, and the PNG drawn from them."""
    import base64
    import json

    import plotly.graph_objects as go

    from workbench.reproduce.compact import compact
    z = np.random.default_rng(0).normal(size=(64, 48))
    fig = json.loads(go.Figure(go.Heatmap(z=z)).to_json())
    assert fig["data"][0]["z"]["dtype"] == "f8"
    nb = {"metadata": {}, "cells": [{"cell_type": "code", "outputs": [
        {"output_type": "display_data", "data": {"application/vnd.plotly.v1+json": fig}}]}]}
    before = len(json.dumps(fig))
    counts = compact(nb)
    data = nb["cells"][0]["outputs"][0]["data"]
    zz = data["application/vnd.plotly.v1+json"]["data"][0]["z"]
    assert counts["arrays_float32"] == 1 and zz["dtype"] == "f4"
    back = np.frombuffer(base64.b64decode(zz["bdata"]), dtype="<f4").reshape(64, 48)
    assert np.allclose(back, z, rtol=1e-6, atol=1e-7) and not np.array_equal(back, z)
    assert data["image/png"] and len(json.dumps(data["application/vnd.plotly.v1+json"])) < 0.6 * before


def test_project_2d_is_pca():
    from workbench.viz import project_2d
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 6)) * np.array([5.0, 2.0, 0.5, 0.1, 0.1, 0.1]) + 3.0
    xy = project_2d(X)
    assert np.allclose(xy.mean(0), 0, atol=1e-9)
    assert xy[:, 0].var() > xy[:, 1].var() > 0
    assert abs(np.corrcoef(xy[:, 0], X[:, 0])[0, 1]) > 0.99 and abs(np.corrcoef(xy[:, 1], X[:, 1])[0, 1]) > 0.95
    assert np.array_equal(project_2d(X), xy)


def test_composition_view_slider_click_and_examples(viz_data, prep_two_domains):
    from plotly.callbacks import Points

    from workbench.viz import SubsetCompositionView, load_selections
    task = prep_two_domains.train
    sels = load_selections(viz_data["runs"] / "ingenious", random_run=viz_data["runs"] / "random")
    X = np.load(viz_data["embeddings"])
    view = SubsetCompositionView(viz_data["runs"] / "ingenious", task.domains, task.corpus.texts, embeddings=X,
                                 random_run=viz_data["runs"] / "random")
    n = len(task)
    fig = view.figure
    bars = {t.name: t for t in fig.data[:view.n_bars]}
    assert set(bars) == {"datasets", "papermill"}
    maps = fig.data[view.n_bars:]
    assert maps[0].name == "not selected" and len(maps[0].x) == n - len(sels[-1]["indices"])
    assert "▶ ingenious #2" in fig.layout.yaxis.ticktext[-1]
    view.selection.value = 0                                  # slider -> the random subset
    assert len(fig.data[view.n_bars].x) == n - len(sels[0]["indices"])
    for t in fig.data[view.n_bars + 1:]:
        assert len(t.x) == int(np.sum(sels[0]["domains"] == t.name))
    assert fig.layout.annotations[1].text.startswith("embedding map, random")
    assert "▶ random" in fig.layout.yaxis.ticktext[1]
    # a click on the papermill bar of the first INGENIOUS row lists that subset's papermill docs
    trace = bars["papermill"]
    row = list(trace.y).index(sels[1]["name"])
    view._on_bar_click(trace, Points(point_inds=[row], xs=[trace.x[row]], ys=[trace.y[row]], trace_name="papermill",
                                     trace_index=1), None)
    assert view.selection.value == 1 and view.domain.value == "papermill"
    s = sels[1]
    rows = np.flatnonzero(s["domains"] == "papermill")
    best = int(s["indices"][rows[np.argmax(s["gains"][rows])]])
    first_words = " ".join(task.corpus.texts[best].split())[:40]
    html = view.examples.value
    assert f"{len(rows)} selected of {int(np.sum(np.asarray(task.domains) == 'papermill'))}" in html
    assert f"#{best}" in html and first_words.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")[:30] in html


# ------------------------------------------------------------------------------------------- influence
def _influence(viz_data):
    z = np.load(viz_data["influence"])
    return z["predicted"], z["oracle"], z["domains"]


def test_kept_mask_is_gumbel_topk(viz_data):
    from workbench.selection.mates import gumbel_topk
    from workbench.viz import influence_frame, kept_mask
    pred, orc, dom = _influence(viz_data)
    df = influence_frame(pred, orc, dom)
    k = round(0.25 * len(pred))
    for temperature in (0.0, 1e-4, 1.0):
        m = kept_mask(df, 0.25, temperature, seed=3)
        assert m.sum() == k and set(np.flatnonzero(m)) == set(gumbel_topk(-pred, k, temperature, seed=3))
    top = kept_mask(df, 0.25, 0.0)
    assert set(np.flatnonzero(top)) == set(np.argsort(pred, kind="stable")[:k])   # most negative influence
    z = (-pred - (-pred).mean()) / (-pred).std()
    assert set(np.flatnonzero(kept_mask(df, 0.25, 0.5, seed=1, standardize=True))) == \
        set(gumbel_topk(z, k, 0.5, seed=1))


def test_influence_view_temperature_slider_and_spearman(viz_data):
    from scipy.stats import spearmanr

    from workbench.viz import InfluenceView, influence_frame
    pred, orc, dom = _influence(viz_data)
    df = influence_frame(pred, orc, dom)
    view = InfluenceView(df, fraction=0.25, temperature=float(np.std(pred)), seed=0)
    fig = view.figure
    probed = ~np.isnan(orc)
    rho = spearmanr(pred[probed], orc[probed]).statistic
    assert f"Spearman ρ = {rho:.3f} over {int(probed.sum())}" in fig.layout.annotations[1].text
    assert fig.data[0].y.sum() == len(pred) and fig.data[1].y.sum() == round(0.25 * len(pred))
    before = np.array(fig.data[1].y)
    view.temperature.value = 10 ** view.temperature.min                       # slider to the far left: deterministic top-k
    kept = view.kept
    assert set(np.flatnonzero(kept)) == set(np.argsort(pred, kind="stable")[:round(0.25 * len(pred))])
    assert not np.array_equal(before, fig.data[1].y)
    assert np.allclose(sorted(fig.data[-1].x), sorted(pred[kept & probed]))
    assert "100% of them from the top-k" in fig.layout.title.text
    view.fraction.value = 0.5
    assert fig.data[1].y.sum() == round(0.5 * len(pred))


# ------------------------------------------------------------------------------------------- executed notebook
def views_notebook(data: dict, path: Path) -> Path:
    """A notebook that displays the three views over ``data`` (also opened by the browser test)."""
    import nbformat as nbf
    nb = nbf.v4.new_notebook()
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    runs = Path(data["runs"])
    nb.cells = [
        nbf.v4.new_markdown_cell("# workbench views over small real runs"),
        nbf.v4.new_code_cell(f"""import numpy as np
import workbench as wb
from workbench.viz import CurvesView, InfluenceView, SubsetCompositionView, influence_frame
RUNS = {str(runs)!r}
curves = CurvesView({{m: f"{{RUNS}}/{{m}}" for m in ("full", "random", "ingenious")}}, smooth=0.0)
curves"""),
        nbf.v4.new_code_cell(f"""p = wb.prepare({data['corpus']!r}, "bert-tiny", seq_len=64, vocab_size=1024, seed=0)
composition = SubsetCompositionView(f"{{RUNS}}/ingenious", p.train.domains, p.train.corpus.texts,
                                    embeddings=np.load({str(data['embeddings'])!r}), random_run=f"{{RUNS}}/random")
composition"""),
        nbf.v4.new_code_cell(f"""z = np.load({str(data['influence'])!r})
influence = InfluenceView(influence_frame(z["predicted"], z["oracle"], z["domains"]), fraction=0.25,
                          temperature=float(np.std(z["predicted"])))
influence"""),
    ]
    nbf.write(nb, path)
    return path


def test_executed_notebook_keeps_view_state(viz_data, tmp_path):
    import papermill as pm

    from workbench.reproduce.report import figures, widget_views
    src = views_notebook(viz_data, tmp_path / "views.ipynb")
    pm.execute_notebook(str(src), str(tmp_path / "out.ipynb"), kernel_name="python3", progress_bar=False)
    nb = json.loads((tmp_path / "out.ipynb").read_text())
    views = widget_views(nb)
    assert len(views) == 3 and all(v["saved"] for v in views)
    for v, slider in zip(views, ("FloatSliderModel", "SelectionSliderModel", "FloatLogSliderModel")):
        assert v["model"] == "VBoxModel" and "AnyModel" in v["children"] and slider in v["children"]
    assert len(figures(nb)) == 3                    # each view also left a static copy of its figure
    state = nb["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    figs = [s for s in state.values() if s["model_name"] == "AnyModel"]
    assert len(figs) == 3 and all(s["state"].get("_widget_data") for s in figs)   # traces saved in the state
    # each view's output also holds a PNG (nbconvert, code-hosting viewers); reproduce keeps only that
    pngs = [o for c in nb["cells"] for o in c.get("outputs", []) if "image/png" in (o.get("data") or {})]
    assert len(pngs) == 3
    from workbench.reproduce.compact import compact_notebook
    counts = compact_notebook(tmp_path / "out.ipynb")
    assert counts["views_made_static"] == 3 and counts["bytes_after"] < counts["bytes_before"] / 5
    assert not widget_views(json.loads((tmp_path / "out.ipynb").read_text()))
