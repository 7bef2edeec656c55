"""The LiGO recipe: FLOPs accounting per phase, flops_to_target, the growth views, the notebook at smoke scale.

The recipe runs here at a size that takes seconds (1x32 -> 2x64 encoder on `pydocs:datasets`); the claim itself is
checked by `python -m workbench reproduce ligo --scale tiny` (see papers/ligo.md), not by a test.
"""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from workbench.config import parse
from workbench.errors import ConfigError
from workbench.growth import LiGO
from workbench.recipes.ligo import (LigoParams, account, flops_to_target, materialize_flops, parse_size, run, saved,
                                     summary, train_wall, training_curves)
from workbench.models import flops_per_token
from workbench.viz.growth import (depth_figure, expansion, loss_vs_cost_figure, operator_arrays, operator_loss_figure,
                                  width_figure)

TINY = dict(scale="smoke", corpus="pydocs:datasets", model="bert", small="1x32x2", large="2x64x4", seq_len=32,
            vocab_size=1024, batch_size=8, small_steps=8, large_steps=8, ligo_steps=3, ligo_batch_size=4,
            eval_every=4, eval_batches=2, methods=["scratch", "stackbert", "ligo"])


# ------------------------------------------------------------------------------------------ flops_to_target


def test_flops_to_target_interpolates_between_evals():
    # crosses 3.0 between x=20 (3.5) and x=30 (2.5): halfway -> 25
    assert flops_to_target([0, 10, 20, 30, 40], [5.0, 4.0, 3.5, 2.5, 2.0], 3.0) == pytest.approx(25.0)
    # a quarter of the way: 3.5 -> 1.5 over 20..40 reaches 3.0 at 25
    assert flops_to_target([20, 40], [3.5, 1.5], 3.0) == pytest.approx(25.0)
    # exactly on an evaluation: that point
    assert flops_to_target([0, 10, 20], [5.0, 3.0, 2.0], 3.0) == pytest.approx(10.0)


def test_flops_to_target_first_crossing_start_never_and_nan():
    # non-monotone: the first crossing counts, not a later one
    assert flops_to_target([0, 10, 20, 30], [4.0, 2.0, 4.0, 1.0], 3.0) == pytest.approx(5.0)
    # a curve that starts at or below the target reaches it at its first point (e.g. the grown model)
    assert flops_to_target([7, 10], [2.9, 2.0], 3.0) == pytest.approx(7.0)
    # never reached: None, and nothing saved to report
    assert flops_to_target([0, 10, 20], [5.0, 4.0, 3.1], 3.0) is None
    assert saved(None, 100.0) is None
    # NaN evaluations are skipped
    assert flops_to_target([0, 10, 20], [4.0, float("nan"), 2.0], 3.0) == pytest.approx(10.0)
    with pytest.raises(ValueError):
        flops_to_target([0, 1], [1.0], 0.5)


def test_account_saved_fractions_on_hand_made_curves():
    curves = pd.DataFrame({
        "method": ["scratch"] * 3 + ["ligo"] * 3 + ["stackbert"] * 3,
        "step": [0, 10, 20] * 3,
        "eval_loss": [8.0, 4.0, 3.0, 3.5, 3.2, 2.8, 3.6, 3.4, 3.1],
        "flops": [0, 100, 200, 20, 120, 220, 0, 100, 200],
        "wall_s": [0, 10, 20, 3, 13, 23, 0, 10, 20],
    })
    curves["flops_total"] = curves["flops"] + np.where(curves["method"] == "scratch", 0, 50)
    curves["wall_total_s"] = curves["wall_s"] + np.where(curves["method"] == "scratch", 0, 5)
    t = account(curves, target=3.0)
    assert t.loc["scratch", "flops_to_target"] == pytest.approx(200)
    assert t.loc["ligo", "flops_to_target"] == pytest.approx(120 + 0.5 * 100)         # 3.2 -> 2.8 crosses halfway
    assert t.loc["ligo", "flops_saved"] == pytest.approx(1 - 170 / 200)
    assert t.loc["ligo", "flops_saved_incl_small"] == pytest.approx(1 - 220 / 200)    # negative with the small model
    assert t.loc["ligo", "wall_saved"] == pytest.approx(1 - 18 / 20)
    assert t.loc["ligo", "steps_to_target"] == pytest.approx(15)
    assert t.loc["stackbert", "flops_to_target"] is None and t.loc["stackbert", "flops_saved"] is None
    assert t.loc["scratch", "flops_saved"] == pytest.approx(0.0)


def test_train_wall_takes_evaluation_time_out():
    history = [
        {"step": 1, "loss": 5.0, "elapsed_s": 1.0},
        {"step": 2, "loss": 4.0, "elapsed_s": 2.0},
        {"step": 2, "tokens": 20, "flops": 2.0, "eval_loss": 4.5, "elapsed_s": 5.0},   # this eval took 3 s
        {"step": 3, "loss": 3.0, "elapsed_s": 6.0},
        {"step": 4, "loss": 3.0, "elapsed_s": 7.0},
        {"step": 4, "tokens": 40, "flops": 4.0, "eval_loss": 3.5, "elapsed_s": 9.0},
    ]
    w = train_wall(history)
    assert list(w["step"]) == [2, 4] and list(w["eval_loss"]) == [4.5, 3.5]
    assert list(w["wall_s"]) == pytest.approx([2.0, 4.0])   # 7 s elapsed at step 4, minus the 3 s eval


# ------------------------------------------------------------------------------------------ parameters


def test_params_validate():
    assert parse_size("tiny") == (2, 128, 2, 512)
    assert parse_size("4x256") == (4, 256, 4, 1024)
    assert parse_size("2x64x2") == (2, 64, 2, 256)
    P = parse(LigoParams, {"methods": "scratch,ligo", "scale": "smoke"})
    assert P.methods == ["scratch", "ligo_authors"]      # "ligo" is ligo_<variant>
    for bad in ({"small": "4x128x4", "large": "2x64x2"}, {"small": "2x64x2", "large": "4x128x2"},
                {"methods": ["stackbert", "ligo"]}, {"methods": ["scratch", "ligo", "magic"]}, {"small": "big"},
                {"model": "t5"}, {"schedule": "triangle"}, {"warmup": 1.5}, {"large": "2x64x2"}):
        with pytest.raises(ConfigError):
            parse(LigoParams, bad)


# ------------------------------------------------------------------------------------------ FLOPs accounting


def test_materialize_flops_depth_only_is_the_einsum():
    """Depth-only growth materialises by one (L2, L1) x (L1, numel) matmul per tensor: 2 L2 L1 numel FLOPs."""
    import transformers as T
    cfg = dict(vocab_size=64, hidden_size=32, num_attention_heads=2, intermediate_size=64, max_position_embeddings=32)
    small = T.BertForMaskedLM(T.BertConfig(num_hidden_layers=2, **cfg))
    ligo = LiGO(small, T.BertConfig(num_hidden_layers=3, **cfg))
    per_layer = sum(p.numel() for n, p in small.named_parameters() if ".layer.0." in n)
    m = materialize_flops(ligo)
    assert m["forward"] == 2 * 3 * 2 * per_layer
    assert 0 < m["backward"] <= 2 * m["forward"]
    assert all(p.grad is None for p in ligo.parameters())


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    torch.manual_seed(0)
    P = parse(LigoParams, {**TINY, "out_dir": str(tmp_path_factory.mktemp("ligo"))})
    return P, run(P)


@pytest.fixture(scope="module")
def tiny_result(tiny_run):
    return tiny_run[1]


def test_methods_in_parallel_processes_give_the_same_numbers(tiny_run, tmp_path):
    """jobs=2: every method's growth and large-model run in one-thread worker processes (spawned:
    the small model goes over as its weights) computes what one process computes, to float rounding
    (measured: the operator's losses differ by ~5e-7 from step 2 on; the large runs' curves agree;
    a fresh process lays its buffers out differently, which moves the last bits of a reduction)."""
    P, R = tiny_run
    R2 = run(parse(LigoParams, {**TINY, "out_dir": str(tmp_path), "jobs": 2}))
    cols = [c for c in R.curves.columns if "wall" not in c]
    pd.testing.assert_frame_equal(R.curves[cols], R2.curves[cols], rtol=1e-5)
    np.testing.assert_allclose(R.operator_losses, R2.operator_losses, rtol=1e-5)
    np.testing.assert_allclose(R.table["flops_saved"].astype(float), R2.table["flops_saved"].astype(float), atol=1e-6)


def test_phase_flops_are_flops_per_token_times_tokens(tiny_run):
    P, R = tiny_run
    S = R.setup
    ph = R.phases.set_index(["phase", "method"])
    assert S.head_fraction == pytest.approx(0.15)
    assert S.small_fpt == flops_per_token(S.small_config, P.seq_len, head_fraction=0.15)
    assert S.large_fpt == flops_per_token(S.large_config, P.seq_len, head_fraction=0.15)
    small = ph.loc[("small", "")]
    assert small["steps"] == P.small_steps and small["flops"] == pytest.approx(S.small_fpt * small["tokens"])
    large = R.phases[R.phases.phase == "large"]
    # same data order for every large model: the same tokens, hence the same FLOPs
    assert set(large["method"]) == {"scratch", "stackbert", "ligo_authors"}
    assert large["tokens"].nunique() == 1 and (large["steps"] == P.large_steps).all()
    assert np.allclose(large["flops"], S.large_fpt * large["tokens"])
    op = ph.loc[("operator", "ligo_authors")]
    mat = R.materialize
    assert op["steps"] == P.ligo_steps and mat["forward"] > 0
    assert op["flops"] == pytest.approx(S.large_fpt * op["tokens"] + op["steps"] * (mat["forward"] + mat["backward"])
                                        + mat["forward"])
    # materialising is cheaper than the large model's forward + backward on one operator batch
    assert mat["forward"] + mat["backward"] < S.large_fpt * op["tokens"] / op["steps"]
    assert ph.loc[("grow", "stackbert"), "flops"] == 0 and ph.loc[("grow", "scratch"), "flops"] == 0


def test_curves_add_up_the_phases(tiny_run):
    P, R = tiny_run
    ph = R.phases.set_index(["phase", "method"])
    for m, d in R.curves.groupby("method"):
        grow = ph.loc[("operator" if m.startswith("ligo") else "grow", m), "flops"]
        assert d["step"].iloc[0] == 0 and d["flops"].iloc[0] == pytest.approx(grow)
        assert d["flops"].iloc[-1] == pytest.approx(grow + ph.loc[("large", m), "flops"])
        small = 0.0 if m == "scratch" else ph.loc[("small", ""), "flops"]
        assert np.allclose(d["flops_total"] - d["flops"], small)
        assert (np.diff(d["flops"]) > 0).all() and (np.diff(d["wall_s"]) >= 0).all()
    assert R.target == R.curves[R.curves.method == "scratch"]["eval_loss"].iloc[-1]
    assert R.table.loc["scratch", "steps_to_target"] <= P.large_steps
    s = summary(P, R).to_dict()
    json.dumps(s, allow_nan=False)  # strict JSON: never-reached is None, not inf
    assert s["baseline"]["value"] == pytest.approx(R.table.loc["scratch", "flops_to_target"])
    assert set(s["extra"]["flops_saved"]) == {"scratch", "stackbert", "ligo_authors"}
    assert s["wall_s"] == R.wall_s > 0


# ------------------------------------------------------------------------------------------ views


def test_growth_views_build(tiny_result):
    R = tiny_result
    fig = depth_figure(R.ligo)
    assert len(fig.data) == 16                        # 8 module types x (weights, biases)
    z0 = np.asarray(depth_figure(R.ligo_init).data[0].z)
    assert np.allclose(z0, [[1.0], [1.0]], atol=0.05)  # StackBERT init: both large layers copy the one small layer
    delta = depth_figure(R.ligo, reference=R.ligo_init)
    assert np.allclose(np.asarray(delta.data[0].z), np.asarray(fig.data[0].z) - z0)
    w = width_figure(R.ligo, layer=0)
    assert [t.type for t in w.data] == ["heatmap"] * 5   # residual, q, k, v, ffn
    arr = operator_arrays(R.ligo)
    m = expansion(arr, "res")
    assert m.shape == (64, 32) and np.allclose(m[:32], np.eye(32))
    zero = width_figure(R.ligo_init, reference=R.ligo_init)
    assert all(np.allclose(np.asarray(t.z), 0) for t in zero.data)
    curve_fig = loss_vs_cost_figure(R.curves, x="flops_total", target=R.target)
    assert [t.name for t in curve_fig.data] == ["scratch", "stackbert", "ligo_authors"]
    with pytest.raises(ConfigError):
        loss_vs_cost_figure(R.curves, x="bogus")
    with pytest.raises(ConfigError):
        operator_arrays({"width.res": np.zeros((2, 2))})
    loss_fig = operator_loss_figure(R.operator_losses)
    assert list(loss_fig.data[0].y) == pytest.approx(R.operator_losses)


def test_training_curves_are_on_the_cost_axes(tiny_result):
    from workbench.viz.curves import CurvesView
    R = tiny_result
    df = R.training_curves
    assert df.equals(training_curves(R.setup.out, R.phases, ["scratch", "stackbert", "ligo_authors"]))
    assert list(dict.fromkeys(df["run"])) == ["scratch", "stackbert", "ligo_authors"]
    op = R.phases.set_index(["phase", "method"]).loc[("operator", "ligo_authors")]
    lg, sc = df[df.run == "ligo_authors"], df[df.run == "scratch"]
    # the same large-model FLOPs per step for both, shifted by the operator's cost for LiGO
    first = lambda d: d.dropna(subset=["loss"])["flops"].iloc[0]
    assert first(lg) == pytest.approx(first(sc) + op["flops"])
    assert lg["elapsed_s"].min() >= op["wall_s"]
    view = CurvesView(df, x="flops")
    assert view.axis.options and {"flops", "wall"} <= {v for _, v in view.axis.options}


def test_decoder_path_grows_and_trains(tmp_path):
    P = parse(LigoParams, {**TINY, "model": "gpt2", "out_dir": str(tmp_path)})
    R = run(P)
    assert type(R.setup.large_config).__name__ == "GPT2Config" and R.setup.head_fraction == 1.0
    assert set(R.curves["method"]) == {"scratch", "stackbert", "ligo_authors"}
    assert np.isfinite(R.curves["eval_loss"]).all()
    # every method's large model trains: its eval loss falls from its first evaluation
    for m, d in R.curves.groupby("method"):
        assert d["eval_loss"].iloc[-1] < d["eval_loss"].iloc[0], m
    # grown models start from what the small model learned, scratch from a fresh init
    start = R.curves.groupby("method")["eval_loss"].first()
    assert start["stackbert"] < start["scratch"] and start["ligo_authors"] < start["scratch"]
    assert len(R.operator_losses) == P.ligo_steps


# ------------------------------------------------------------------------------------------ the notebook


def test_ligo_notebook_smoke_through_papermill(tmp_path):
    import nbformat
    from workbench.cli import main
    assert main(["reproduce", "ligo", "--scale", "smoke", "--out", str(tmp_path)]) == 0
    s = json.loads((tmp_path / "ligo" / "summary.json").read_text())
    assert s["paper"] == "ligo" and s["scale"] == "smoke" and s["metric"] == "flops_to_target"
    assert s["baseline"]["name"] == "scratch" and s["method"]["name"] == "ligo_authors"
    assert isinstance(s["baseline"]["value"], float) and s["baseline"]["value"] > 0
    extra = s["extra"]
    assert {"ligo_authors", "ligo_canon", "stackbert", "bert2bert_fpi", "bert2bert_aki", "interpolation"} <= set(extra["flops_saved"])
    assert {"ligo_authors", "stackbert"} <= set(extra["wall_saved"]) and set(extra["flops_saved_excl_operator"]) == set(extra["flops_saved"])
    assert math.isfinite(extra["target_eval_loss"]) and s["wall_s"] > 0
    assert "same model as stackbert" in extra["notes"]["bert2bert_fpi"]   # depth grows: FPI + stacking is stackbert
    assert extra["flops_saved"]["bert2bert_fpi"] == extra["flops_saved"]["stackbert"]
    assert extra["gap_to_stackbert"]["ligo_authors"][-1] is not None and "stackbert" not in extra["gap_to_stackbert"]
    nb = nbformat.read(tmp_path / "ligo" / "ligo.ipynb", as_version=4)
    plots = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
             if o.get("data", {}).get("application/vnd.plotly.v1+json")]
    assert len(plots) >= 8                                 # 3 cost plots, operator loss, 2 depth + 2 width views
    assert (tmp_path / "ligo" / "operator" / "ligo.safetensors").exists()
    first_lr = lambda m: json.loads((tmp_path / "ligo" / f"large-{m}" / "metrics.jsonl").read_text().splitlines()[0])["lr"]
    assert first_lr("scratch") < first_lr("stackbert") == first_lr("ligo_authors")  # only scratch warms up


# ------------------------------------------------------------------------------------------ a given small model


@pytest.fixture(scope="module")
def saved_small(tmp_path_factory, small_prep):
    """A tiny BERT (2x64x2), trained a few steps, saved with save_pretrained next to its tokenizer."""
    import workbench as wb
    from workbench.growth.arch import with_dims
    from workbench.models import config, model_class
    tok = small_prep.tokenizer
    cfg = with_dims(config("bert-tiny", len(tok), max_positions=128), layers=2, hidden=64, heads=2, ffn=256)
    torch.manual_seed(0)
    m = model_class("bert")(cfg)
    m = wb.train(m, small_prep.train, budget=wb.Budget(max_steps=30), batch_size=16, lr=3e-3, seed=0, device="cpu",
                 progress=False).model
    d = tmp_path_factory.mktemp("my-small-bert")
    m.save_pretrained(d)
    tok.save_pretrained(d)
    return d


def test_given_small_model_is_grown_not_trained(saved_small, tmp_path):
    import workbench as wb
    from workbench.training import evaluate
    P = parse(LigoParams, {**TINY, "small": str(saved_small), "large": "2x128x4", "model": "gpt2",
                           "methods": ["scratch", "stackbert", "net2net", "ligo"], "out_dir": str(tmp_path)})
    R = run(P)
    S = R.setup
    assert type(S.small_config).__name__ == "BertConfig" and S.head_fraction == pytest.approx(0.15)  # model ignored
    assert S.small_config.vocab_size == S.large_config.vocab_size == len(S.prep.tokenizer)
    assert (S.large_config.num_hidden_layers, S.large_config.hidden_size, S.large_config.num_attention_heads) == (2, 128, 4)
    small = R.phases.set_index(["phase", "method"]).loc[("small", "")]
    assert small["steps"] == 0 and small["flops"] == 0 and not (tmp_path / "small").exists()
    # the small model is the saved one: its eval loss is that of the directory's weights
    loaded = wb.model(str(saved_small)).eval()
    assert R.small_eval_loss == pytest.approx(evaluate(loaded, S.prep.eval, P.batch_size, P.eval_batches, "cpu"),
                                              abs=1e-5)
    # width-only growth is function preserving: the grown models start at the small model's loss, scratch does not
    start = R.curves.groupby("method")["eval_loss"].first()
    assert start["bert2bert_fpi"] == pytest.approx(R.small_eval_loss, abs=1e-3)
    assert start["stackbert"] == pytest.approx(R.small_eval_loss, abs=1e-3)
    assert start["scratch"] > R.small_eval_loss + 0.5
    assert start["ligo_authors"] < start["scratch"]
    # nothing spent on the small model is known: costs with and without it agree
    assert np.allclose(R.curves["flops_total"], R.curves["flops"])
    s = summary(P, R).to_dict()
    json.dumps(s, allow_nan=False)
    assert s["extra"]["small_given"] is True and "unknown" in s["extra"]["small_flops_note"]
    assert s["extra"]["model"] == "bert" and s["extra"]["small"] == str(saved_small)


def test_given_small_model_deepens_and_validates(saved_small, tmp_path):
    P = parse(LigoParams, {**TINY, "small": str(saved_small), "large": "4x128x4", "methods": ["scratch", "ligo"],
                           "out_dir": str(tmp_path)})
    assert P.small == str(saved_small)
    for bad, match in ((str(tmp_path / "nope"), "does not exist"), (str(tmp_path), "no config.json"),
                       ("./nope", "does not exist")):
        with pytest.raises(ConfigError, match=match):
            parse(LigoParams, {"small": bad, "large": "4x128x4"})
    with pytest.raises(ConfigError, match="same head size"):
        parse(LigoParams, {"small": str(saved_small), "large": "4x128x2"})
    with pytest.raises(ConfigError, match="must not be smaller"):
        parse(LigoParams, {"small": str(saved_small), "large": "1x64x2"})


def test_grown_models_are_not_rewarmed(tiny_run):
    """Issue 20: the authors train the LiGO-grown model with --warmup_steps 0; scratch keeps its warmup."""
    P, R = tiny_run
    assert not P.rewarm and P.variant == "authors"
    first_lr = lambda m: json.loads((R.setup.out / f"large-{m}" / "metrics.jsonl").read_text().splitlines()[0])["lr"]
    assert first_lr("stackbert") == first_lr("ligo_authors") == pytest.approx(P.lr)   # (scratch: smoke test below)
