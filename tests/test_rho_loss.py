"""RHO-LOSS: the selection rules on hand-made batches, irreducible losses keyed by id, label noise,
the token-level (Rho-1) filter, the irreducible-loss view, and the notebook at smoke scale."""
import json
import math

import nbformat
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import workbench as wb
from workbench.cli import main
from workbench.config import parse
from workbench.data.labelled import LabelledTask, inject_noise, load_labelled, make_classifier, word_ids
from workbench.errors import ConfigError
from workbench.selection.irreducible import (IrreducibleLosses, holdout_irreducible,
                                             no_holdout_irreducible, score, split_halves)
from workbench.selection.rho_loss import (BatchSelector, boltzmann_draw, boltzmann_sample, bottom_k, grad_norm_bound,
                                          importance_sample, top_k)
from workbench.recipes.rho_loss import RhoLossParams
from workbench.selection.rho_tokens import TokenExcessLoss, token_keep_mask
from workbench.training import Budget

# ---------------------------------------------------------------------------------- hand-made batch
# 8 examples, 3 classes; the "model" is the identity map, so the logits are the inputs themselves and
# every per-example loss is known in closed form.
X = torch.tensor([[4.0, 0, 0], [0, 3, 0], [0, 0, 1], [2, 2, 0], [1, 0, 0], [0, 0, 5], [0, 1.5, 0], [3, 0, 1]])
Y = np.array([0, 1, 0, 2, 0, 2, 2, 1])
IL = np.array([0.1, 0.2, 0.3, 2.7, 0.1, 0.05, 2.5, 0.2])   # irreducible losses, by id


class Identity(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.eye(3))

    def forward(self, x):
        return x @ self.w


def _task(order=None):
    order = np.arange(len(Y)) if order is None else np.asarray(order)
    noisy = np.array([0, 0, 1, 0, 0, 0, 1, 0], dtype=bool)
    clean = np.where(noisy, (Y + 1) % 3, Y)
    t = LabelledTask(X.numpy(), Y, clean, [f"ex{i}" for i in range(len(Y))], ["a", "b", "c"], name="hand")
    return t.subset(order)


def _losses():
    return F.cross_entropy(X, torch.from_numpy(Y), reduction="none")


def _select(rule, k=3, **kw):
    task = _task()
    sel = BatchSelector(rule, fraction=0.5, irreducible=IrreducibleLosses(task.ids, IL, models=[Identity()]), **kw)
    sel.large_batch_size(k)
    sel.setup(task, seed=0)
    batch = task.collate(range(len(task)))
    return sel, sel.select(Identity(), batch, task, step=0), batch, task


def test_topk_bottomk_break_ties_by_position():
    s = torch.tensor([0.5, 2.0, -1.0, 2.0, 0.1])
    assert top_k(s, 3).tolist() == [1, 3, 0]
    assert bottom_k(s, 2).tolist() == [2, 4]


@pytest.mark.parametrize("rule,expected", [
    ("train_loss", lambda L: torch.argsort(-L, stable=True)[:3]),
    ("rho_loss", lambda L: torch.argsort(-(L - torch.tensor(IL, dtype=L.dtype)), stable=True)[:3]),
    ("irreducible_loss", lambda L: torch.argsort(torch.tensor(IL), stable=True)[:3]),
])
def test_deterministic_rules_pick_the_known_rows(rule, expected):
    sel, sub, batch, _ = _select(rule)
    want = expected(_losses())
    assert sub["index"].tolist() == want.tolist()
    assert torch.equal(sub["x"], X[want]) and sub["labels"].tolist() == Y[want.numpy()].tolist()
    # the scores it used are on record, one row per large-batch example
    rec = sel.records()
    assert rec["picks"].sum() == 3 and set(np.flatnonzero(rec["picks"])) == set(want.tolist())
    np.testing.assert_allclose(rec["train_loss"], _losses().numpy(), rtol=1e-6)


def test_rho_loss_avoids_what_train_loss_picks():
    # rows 3 and 6 have high training loss but also high irreducible loss: train_loss takes them, RHO-LOSS not
    _, by_loss, _, _ = _select("train_loss")
    _, by_rho, _, _ = _select("rho_loss")
    assert {3, 6} <= set(by_loss["index"].tolist())
    assert not {3, 6} & set(by_rho["index"].tolist())


def test_grad_norm_bound_is_the_logit_gradient_norm():
    z = torch.randn(6, 4, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    F.cross_entropy(z, y, reduction="sum").backward()
    torch.testing.assert_close(grad_norm_bound(z.detach(), y), z.grad.norm(dim=1))
    _, sub, _, _ = _select("grad_norm")
    assert sub["index"].tolist() == top_k(grad_norm_bound(X, torch.from_numpy(Y)), 3).tolist()


def test_importance_weights_make_the_weighted_loss_unbiased():
    L = _losses()
    g = torch.Generator().manual_seed(0)
    rows, w, p = importance_sample(grad_norm_bound(X, torch.from_numpy(Y)), 4, g)
    torch.testing.assert_close(w.double(), 1.0 / (len(L) * p[rows]))
    # exact: one draw's expected weighted loss is sum_i p_i * L_i / (n p_i) = mean L
    torch.testing.assert_close((p * (1.0 / (len(L) * p)) * L.double()).sum(), L.double().mean())
    # Monte Carlo: the weighted mean over many draws converges to the mean loss; the unweighted one
    # over-represents the high-gradient (high-loss) rows
    rows, w, _ = importance_sample(grad_norm_bound(X, torch.from_numpy(Y)), 20000, g)
    Ld = L.double()
    est, raw = w.double() * Ld[rows], Ld[rows]
    assert abs(float(est.mean() - Ld.mean())) < 4 * float(est.std()) / math.sqrt(len(est))
    assert float(raw.mean() - Ld.mean()) > 4 * float(raw.std()) / math.sqrt(len(raw))
    # the filter hands exactly those weights to the task, whose loss is their weighted mean
    sel, sub, batch, task = _select("grad_norm_is")
    _, _, p_batch = importance_sample(grad_norm_bound(X, torch.from_numpy(Y)), 1)
    torch.testing.assert_close(sub["weight"].double(), 1.0 / (len(L) * p_batch[sub["index"]]), rtol=1e-5, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(task.loss(Identity(), sub), (sub["weight"] * L[sub["index"]]).mean())
    assert sel.records()["picks"].sum() == 3


def test_boltzmann_sampling():
    s = torch.tensor([0.0, 1.0, 3.0, 2.0])
    g = torch.Generator().manual_seed(0)
    assert boltzmann_sample(s, 2, 1e-6, g).tolist() == [2, 3]            # T -> 0: top-k
    draws = torch.stack([boltzmann_sample(torch.tensor([0.0, math.log(2.0)]), 1, 1.0, g) for _ in range(3000)])
    assert abs(float((draws == 1).float().mean()) - 2 / 3) < 0.03        # p ∝ exp(s / T)
    _, sub, _, _ = _select("boltzmann_rho", temperature=1e-6, replacement=False)   # without replacement:
    _, rho, _, _ = _select("rho_loss")                                                 # T -> 0 is top-k
    assert sorted(sub["index"].tolist()) == sorted(rho["index"].tolist())
    _, sub, _, _ = _select("boltzmann_rho", temperature=1e-6)           # with replacement: the top row k times
    assert sub["index"].tolist() == [rho["index"][0].item()] * 3


def test_uniform_draws_only_the_small_batch():
    sel = BatchSelector("uniform", fraction=0.1)
    assert sel.large_batch_size(32) == 32
    assert BatchSelector("rho_loss", fraction=0.1, irreducible=IrreducibleLosses(["a"], [0.0])).large_batch_size(32) == 320


def test_irreducible_losses_follow_ids_after_shuffling(tmp_path):
    task = _task()
    il = IrreducibleLosses(task.ids, IL)
    perm = np.random.default_rng(3).permutation(len(task))
    shuffled = task.subset(perm)
    losses, _ = il.aligned(shuffled)
    np.testing.assert_array_equal(losses, IL[perm])
    sel = BatchSelector("rho_loss", 0.5, il)
    sel.large_batch_size(2)
    run = wb.Run(tmp_path / "r")
    sel.setup(shuffled, run=run)
    sel.select(Identity(), shuffled.collate(range(len(shuffled))), shuffled, step=0)
    rec = sel.records()
    np.testing.assert_allclose(rec["irreducible_loss"], IL[perm], rtol=1e-6)
    back = IrreducibleLosses.load(run)                                  # stored in the run by id
    np.testing.assert_array_equal(back.aligned(task)[0], IL)
    with pytest.raises(ConfigError, match="no irreducible loss"):
        IrreducibleLosses(task.ids[:3], IL[:3]).aligned(task)


def test_precomputed_il_matches_scoring_the_ids_again():
    sp = load_labelled("iris", noise=0.2, seed=1)
    make = lambda: make_classifier(sp, 16, seed=5)
    il, info = holdout_irreducible(make, sp.train, sp.holdout, sp.valid, steps=30, eval_every=5)
    assert 0 <= info["best_step"] <= 30 and info["valid_curve"][0][0] == 0
    perm = np.random.default_rng(0).permutation(len(sp.train))
    np.testing.assert_allclose(il.aligned(sp.train.subset(perm))[0], score(il.models[0], sp.train.subset(perm)),
                               rtol=1e-6)
    # recomputing with the IL model gives the table's values while the IL model is unchanged ...
    sel = BatchSelector("rho_loss", 0.5, il, recompute=True)
    sel.large_batch_size(8)
    sel.setup(sp.train, seed=0)
    model = make_classifier(sp, 16, seed=0)
    batch = sp.train.collate(range(16))
    sel.select(model, batch, sp.train, 0)
    np.testing.assert_allclose(sel.records()["irreducible_loss"], il.losses[:16], rtol=1e-5)
    # ... and update_il trains (a private copy of) it on the selected points, mixed with holdout points
    before = [p.clone() for p in il.models[0].parameters()]
    own = il.copy()
    upd = BatchSelector("rho_loss", 0.5, own, update_il=True, il_holdout=sp.holdout)
    upd.large_batch_size(8)
    upd.setup(sp.train, seed=0)
    upd.select(model, batch, sp.train, 0)
    assert any(not torch.equal(a, b) for a, b in zip(before, own.models[0].parameters()))
    assert all(torch.equal(a, b) for a, b in zip(before, il.models[0].parameters()))


def test_no_holdout_models_score_the_half_they_did_not_see():
    sp = load_labelled("wine", noise=0.1, seed=0)
    pool = sp.train.concat(sp.holdout)
    il, info = no_holdout_irreducible(lambda: make_classifier(sp, 16, seed=1), pool, sp.valid, steps=20, eval_every=5)
    assert len(il.models) == 2 and set(il.owner.tolist()) == {0, 1}
    assert abs(int((il.owner == 0).sum()) - int((il.owner == 1).sum())) <= 1
    for k in (0, 1):
        rows = np.flatnonzero(il.owner == k)
        np.testing.assert_allclose(il.losses[rows], score(il.models[k], pool.subset(rows)), rtol=1e-6)
    with pytest.raises(ConfigError, match="update_il"):
        BatchSelector("rho_loss", 0.1, il, update_il=True)


def test_noise_flips_exactly_the_requested_share():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, size=1000)
    noisy, flipped = inject_noise(y, 5, 0.13, rng, draw="other")          # today's draw: always another class
    assert flipped.sum() == 130 and (noisy[flipped] != y[flipped]).all() and (noisy[~flipped] == y[~flipped]).all()
    assert set(np.unique(noisy)) <= set(range(5))
    sp = load_labelled("digits", noise=0.2, seed=4, noise_draw="other")
    for part in (sp.train, sp.holdout):
        assert part.noisy.sum() == round(0.2 * len(part))
        assert (part.labels[part.noisy] != part.clean_labels[part.noisy]).all()
    assert sp.valid.noisy.sum() == 0 and sp.test.noisy.sum() == 0
    assert load_labelled("digits", noise=0.2, seed=4, clean_holdout=True, noise_draw="other").holdout.noisy.sum() == 0
    b = sp.train.collate([0, 1, 2])
    assert b["x"].shape == (3, 64) and b["noisy"].dtype == torch.bool and b["labels"].shape == (3,)
    ids = set(sp.train.ids) | set(sp.holdout.ids) | set(sp.valid.ids) | set(sp.test.ids)
    assert len(ids) == 1797                                              # a partition of the dataset


def test_recipe_keeps_the_holdout_clean_unless_it_is_training_data(tmp_path):
    from dataclasses import replace
    from workbench.recipes.rho_loss import prepare
    P = RhoLossParams(scale="smoke", out_dir=str(tmp_path), il_steps=2, il_hidden=8, noise=0.2, noise_draw="other")
    prep = prepare(P)                                        # the paper's protocol: noisy train, clean holdout
    assert prep.splits.holdout.noisy.sum() == 0 and prep.train.noisy.sum() == round(0.2 * len(prep.train)) > 0
    noisy_ho = prepare(replace(P, clean_holdout=False)).splits.holdout
    assert noisy_ho.noisy.sum() == round(0.2 * len(noisy_ho)) > 0
    both = prepare(replace(P, il_mode="no_holdout"))         # the holdout is training data here: noisy too
    sp = both.splits
    assert len(both.train) == len(sp.train) + len(sp.holdout)
    assert both.train.noisy.sum() == round(0.2 * len(sp.train)) + round(0.2 * len(sp.holdout))


def test_bad_input_is_one_line_config_error():
    with pytest.raises(ConfigError, match="unknown dataset"):
        load_labelled("mnist")
    with pytest.raises(ConfigError, match="noise"):
        load_labelled("iris", noise=1.0)
    for kw in ({"fraction": 0.0}, {"fraction": 1.5}):
        with pytest.raises(ConfigError, match="fraction"):
            BatchSelector("train_loss", **kw)
    with pytest.raises(ConfigError, match="unknown selector"):
        BatchSelector("loss")
    with pytest.raises(ConfigError, match="irreducible"):
        BatchSelector("rho_loss")
    with pytest.raises(ConfigError, match="temperature"):
        BatchSelector("boltzmann_rho", temperature=0.0)
    for bad in ({"noise": -0.1}, {"dataset": "cifar"}, {"selectors": "uniform,train_loss"}, {"fraction": 2}):
        with pytest.raises(ConfigError):
            parse(RhoLossParams, bad)


@pytest.fixture(scope="module")
def digits_il():
    sp = load_labelled("digits", noise=0.3, seed=0)
    il, _ = holdout_irreducible(lambda: make_classifier(sp, 32, seed=9), sp.train, sp.holdout, sp.valid, steps=40,
                                eval_every=10)
    return sp, il


def test_selector_in_the_training_loop_records_its_picks(tmp_path, digits_il):
    sp, il = digits_il
    run = wb.Run(tmp_path / "run")
    sel = BatchSelector("rho_loss", 0.25, il)
    res = wb.train(make_classifier(sp, 32, seed=0), sp.train, batch_filter=sel, budget=Budget(max_steps=5),
                   batch_size=8, progress=False, run=run)
    assert res.step == 5 and res.tokens == 40                            # 8 examples per step, not 32
    rec = run.load_scores("selection_rho_loss")
    assert len(rec["index"]) == 5 * 32 and sorted(set(rec["step"].tolist())) == list(range(5))
    assert all(rec["picks"][rec["step"] == s].sum() == 8 for s in range(5))
    assert set(run.load_scores("irreducible_loss")) == {"id", "loss", "owner"}
    st = sel.stats()
    assert st["picked"] == 40 and 0 <= st["noisy_fraction"] <= 1 and st["select_s"] > 0
    # the noisy share counted from the record agrees with the running counter
    assert (rec["picks"] * rec["noisy"]).sum() / rec["picks"].sum() == pytest.approx(st["noisy_fraction"])


@pytest.mark.parametrize("rule,kw", [("boltzmann_rho", {"temperature": 0.5}), ("grad_norm_is", {}),
                                     ("rho_loss", {"update_il": True}), ("rho_loss", {"proxy": 16})],
                         ids=["boltzmann", "grad_norm_is", "update_il", "proxy"])
def test_resume_with_a_sampling_selector_equals_uninterrupted(tmp_path, digits_il, rule, kw):
    # the whole state comes back: the sampling RNG, the counters, the record and (update_il) the IL
    # model, its optimizer and the holdout draws
    sp, il = digits_il
    upd = kw.get("update_il", False)

    def go(path, resume=False, crash_at=None):
        def crash(step, **_):
            if step == crash_at:
                raise KeyboardInterrupt
        extra = {**kw, "proxy": make_classifier(sp, kw["proxy"], seed=5)} if "proxy" in kw else kw
        sel = BatchSelector(rule, 0.25, il.copy() if upd else il, il_holdout=sp.holdout if upd else None, **extra)
        run = wb.Run(path, resume=resume)
        return wb.train(make_classifier(sp, 32, seed=0), sp.train, batch_filter=sel, budget=Budget(max_steps=6),
                        batch_size=8, progress=False, run=run, checkpoint_every=3, seed=2,
                        callbacks=(crash,) if crash_at else ()), sel
    full, fsel = go(tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        go(tmp_path / "part", crash_at=5)
    part, psel = go(tmp_path / "part", resume=True)
    for a, b in zip(full.model.parameters(), part.model.parameters()):
        assert torch.equal(a, b)
    fr, pr = fsel.records(), psel.records()
    assert all(np.array_equal(fr[k], pr[k], equal_nan=True) for k in fr)
    assert fsel.stats()["picked"] == psel.stats()["picked"] == 48
    if upd:
        for a, b in zip(fsel.irreducible.models[0].parameters(), psel.irreducible.models[0].parameters()):
            assert torch.equal(a, b)
    if "proxy" in kw:
        for a, b in zip(fsel.proxy.parameters(), psel.proxy.parameters()):
            assert torch.equal(a, b)


def test_proxy_model_selects_and_trains_on_what_it_selects(digits_il):
    """``proxy=``: a small model scores the large batch (the model being trained is not asked) and takes
    one AdamW step on the selected small batch, as the authors' proxy_model does."""
    import copy
    sp, il = digits_il
    target, proxy = make_classifier(sp, 64, seed=0), make_classifier(sp, 16, seed=5)
    twin = copy.deepcopy(proxy)
    sel = BatchSelector("rho_loss", 0.25, il, proxy=proxy)
    ref = BatchSelector("rho_loss", 0.25, il)          # the same rule, the twin scoring itself
    for f in (sel, ref):
        f.large_batch_size(8)
        f.setup(sp.train, seed=1)
    batch = sp.train.collate(list(range(32)))
    before = [p.detach().clone() for p in target.parameters()]
    sub = sel.select(target, batch, sp.train, 0)
    assert sub["index"].tolist() == ref.select(twin, batch, sp.train, 0)["index"].tolist()
    assert all(torch.equal(a, b) for a, b in zip(before, target.parameters()))       # the target is not touched
    assert not all(torch.equal(a, b) for a, b in zip(proxy.parameters(), twin.parameters()))  # the proxy learnt
    with pytest.raises(ConfigError, match="torch model"):
        BatchSelector("rho_loss", 0.25, il, proxy="small")
    with pytest.raises(ConfigError, match="cannot be sharded"):
        BatchSelector("rho_loss", 0.25, il, proxy=proxy, shards=2)


def test_selector_state_dict_is_a_copy_and_restores_without_a_run(digits_il):
    # in memory: a state taken mid-run, loaded into a fresh filter, continues exactly as the original
    sp, il = digits_il
    make = lambda: BatchSelector("boltzmann_rho", 0.25, il.copy(), temperature=0.5, update_il=True,
                                 il_holdout=sp.holdout)
    model = make_classifier(sp, 32, seed=0)
    a = make()
    a.large_batch_size(8)
    a.setup(sp.train, seed=1)
    batch = lambda s: sp.train.collate(list(range(32 * s, 32 * s + 32)))
    a.select(model, batch(0), sp.train, 0)
    state = a.state_dict()
    saved = {k: v.clone() for k, v in state["il_model"].items()}
    subs_a = [a.select(model, batch(s), sp.train, s)["index"].tolist() for s in (1, 2)]
    assert all(torch.equal(saved[k], v) for k, v in state["il_model"].items())     # later steps left it alone
    b = make()
    b.large_batch_size(8)
    b.setup(sp.train, seed=1)
    b.load_state_dict(state)
    subs_b = [b.select(model, batch(s), sp.train, s)["index"].tolist() for s in (1, 2)]
    assert subs_a == subs_b
    ra, rb = a.records(), b.records()
    assert all(np.array_equal(ra[k], rb[k], equal_nan=True) for k in ra) and len(ra["step"]) == 3 * 32
    assert {k: v for k, v in a.stats().items() if k != "select_s"} == \
        {k: v for k, v in b.stats().items() if k != "select_s"}
    with pytest.raises(ConfigError, match="no IL model"):
        make().load_state_dict({k: v for k, v in state.items() if k not in ("il_model", "il_opt")})


def test_token_filter_keeps_the_requested_share(small_prep_clm):
    p = small_prep_clm
    ref = wb.model("gpt2-tiny", vocab_size=len(p.tokenizer), seed=7)
    model = wb.model("gpt2-tiny", vocab_size=len(p.tokenizer), seed=0)
    f = TokenExcessLoss(ref, fraction=0.3)
    f.setup(p.train)
    batch = p.train.collate(range(4))
    out = f.select(model, batch, p.train, step=0)
    valid = batch["labels"][:, 1:] != -100
    kept = out["labels"][:, 1:] != -100
    assert int(kept.sum()) == round(0.3 * int(valid.sum()))
    assert torch.equal(out["input_ids"], batch["input_ids"])            # sequences untouched
    with torch.no_grad():
        excess = p.train.per_token_loss(model.eval(), batch) - p.train.per_token_loss(ref.eval(), batch)
    assert float(excess[kept].min()) >= float(excess[valid & ~kept].max()) - 1e-6
    assert torch.equal(token_keep_mask(torch.tensor([[1.0, 5.0, 3.0]]), torch.tensor([[True, False, True]]), 0.5),
                       torch.tensor([[False, False, True]]))
    res = wb.train(model, p.train, batch_filter=TokenExcessLoss(ref, fraction=0.5), budget=Budget(max_steps=2),
                   batch_size=2, progress=False)
    assert res.step == 2 and math.isfinite(res.history[-1]["loss"])


def test_token_filter_resume_equals_uninterrupted(tmp_path, small_prep_clm):
    p = small_prep_clm

    def go(path, resume=False, crash_at=None):
        def crash(step, **_):
            if step == crash_at:
                raise KeyboardInterrupt
        f = TokenExcessLoss(wb.model("gpt2-tiny", vocab_size=len(p.tokenizer), seed=7), fraction=0.5)
        run = wb.Run(path, resume=resume)
        return wb.train(wb.model("gpt2-tiny", vocab_size=len(p.tokenizer), seed=0), p.train, batch_filter=f,
                        budget=Budget(max_steps=5), batch_size=2, progress=False, run=run, checkpoint_every=2,
                        seed=1, callbacks=(crash,) if crash_at else ()), f
    full, ff = go(tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        go(tmp_path / "part", crash_at=3)
    part, pf = go(tmp_path / "part", resume=True)
    for a, b in zip(full.model.parameters(), part.model.parameters()):
        assert torch.equal(a, b)
    fr, pr = ff.records(), pf.records()
    assert sorted(set(fr["step"].tolist())) == list(range(5))
    assert all(np.array_equal(fr[k], pr[k]) for k in fr)
    st = pf.stats()
    assert {k: v for k, v in ff.stats().items() if k != "select_s"} == {k: v for k, v in st.items() if k != "select_s"}
    assert st["steps"] == 5 and 0.45 < st["kept_fraction"] <= 0.55 and st["select_s"] > 0
    z = part.run.load_scores("token_selection")                       # the run's record: every step once
    assert all(np.array_equal(z[k], fr[k]) for k in fr)
    with pytest.raises(ConfigError, match="fraction"):
        TokenExcessLoss(None, fraction=0)


def test_irreducible_view_highlights_the_selected_fraction():
    import pandas as pd

    from workbench.viz.irreducible import IrreducibleLossView, irreducible_figure, selected_mask
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"train_loss": rng.random(50) * 3, "irreducible_loss": rng.random(50),
                       "noisy": rng.random(50) < 0.2})
    fig = irreducible_figure(df, 0.1)
    sel = [t for t in fig.data if t.name.startswith("selected")][0]
    assert len(sel.x) == 5
    assert selected_mask(df, 0.1).sum() == 5
    view = IrreducibleLossView(df, 0.1)
    view.slider.value = 0.5
    assert len(view.figure.data[2].x) == 25 and "0.50" in view.figure.layout.title.text
    with pytest.raises(ConfigError):
        irreducible_figure(df.drop(columns=["noisy"]))


def test_histogram_and_accuracy_curves_are_pure_figures():
    import pandas as pd

    from workbench.viz.irreducible import accuracy_curves_figure, irreducible_histogram
    df = pd.DataFrame({"irreducible_loss": [0.1, 0.2, 2.0, 0.3], "noisy": [False, False, True, False]})
    fig = irreducible_histogram(df)
    assert [t.name for t in fig.data] == ["clean", "noisy label"]
    assert sorted(fig.data[0].x) == [0.1, 0.2, 0.3] and list(fig.data[1].x) == [2.0]
    curves = pd.DataFrame({"selector": ["uniform"] * 3 + ["rho_loss"] * 3, "step": [1, 2, 3] * 2,
                           "accuracy": [0.1, 0.5, 0.8, 0.3, 0.7, 0.9]})
    fig = accuracy_curves_figure(curves, {"low": 0.72, "high": 0.78}, title="t")
    assert [t.name for t in fig.data] == ["uniform", "rho_loss"] and list(fig.data[1].y) == [0.3, 0.7, 0.9]
    assert sorted(sh.y0 for sh in fig.layout.shapes) == [0.72, 0.78] and fig.layout.title.text == "t"
    with pytest.raises(ConfigError, match="noisy"):
        irreducible_histogram(df.drop(columns=["noisy"]))
    with pytest.raises(ConfigError, match="selector"):
        accuracy_curves_figure(curves.drop(columns=["selector"]))


def test_run_returns_the_result_the_notebook_shows(tmp_path):
    from workbench.recipes import rho_loss as recipe
    P = RhoLossParams(scale="smoke", out_dir=str(tmp_path), selectors=["uniform", "rho_loss"], n_seeds=2,
                      max_steps=6, il_steps=4, hidden=16, il_hidden=16, eval_every=2)
    r = recipe.run(P)
    assert isinstance(r, recipe.Result) and isinstance(r.prepared, recipe.Prepared) and r.wall_s > 0
    assert set(r.curves["selector"]) == {"uniform", "rho_loss"} and set(r.curves["seed"]) == {0, 1}
    assert len(r.runs) == 4 and (r.runs["select_s"] >= 0).all()
    assert list(r.table["selector"]) == ["uniform", "rho_loss"] and set(r.targets) == {"low", "high"}
    assert len(r.snapshot) == len(r.prepared.train) and (r.snapshot["step"] == 1).all()
    s = recipe.write_summary(P, r)
    d = json.loads((tmp_path / "summary.json").read_text())
    assert d == json.loads(json.dumps(s.to_dict())) and d["claim"] == recipe.CLAIM
    assert d["extra"]["ratio"] == P.fraction and d["wall_s"] == r.wall_s
    assert d["method"] == {"name": "rho_loss", "value": d["extra"]["steps_to_target"]["rho_loss"]}
    for sel in ("uniform", "rho_loss"):
        assert (tmp_path / "runs" / f"{sel}-seed1" / "summary.json").exists()


def test_notebook_smoke(tmp_path):
    assert main(["reproduce", "rho_loss", "--scale", "smoke", "--out", str(tmp_path)]) == 0
    s = json.loads((tmp_path / "rho_loss" / "summary.json").read_text())
    assert s["paper"] == "rho_loss" and s["scale"] == "smoke" and s["metric"] == "steps_to_target"
    assert s["baseline"]["name"] == "uniform" and s["method"]["name"] == "rho_loss"
    ex = s["extra"]
    assert {"uniform", "train_loss", "rho_loss"} <= set(ex["noisy_fraction_selected"])
    assert set(ex["final_accuracy"]) == set(ex["noisy_fraction_selected"])
    assert ex["noise_rate"] == pytest.approx(0.1) and 0 < ex["target_accuracy"] <= 1
    assert ex["noisy_fraction_selected"]["uniform"] == pytest.approx(0.1, abs=0.1)
    assert ex["splits"]["holdout"]["noisy"] == 0 < ex["splits"]["train"]["noisy"]     # clean holdout by default
    nb = nbformat.read(tmp_path / "rho_loss" / "rho_loss.ipynb", as_version=4)
    mimes = {m for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) for m in o.get("data", {})}
    # the live view, or (reproduce compacts executed notebooks) its static copy as a PNG
    assert "application/vnd.plotly.v1+json" in mimes
    assert {"application/vnd.jupyter.widget-view+json", "image/png"} & mimes


# ---------------------------------------------------------------------------------- language models
def _lm_il(p, mode, steps=3):
    """IL model(s) for the task ``p.train`` of a prepared LM: holdout = a TaskView of the first 16
    examples, valid = 8 eval examples (tiny, so this stays seconds)."""
    from workbench.selection.irreducible import task_subset
    preset = "bert-tiny" if p.encoder else "gpt2-tiny"
    make = lambda: wb.model(preset, vocab_size=len(p.tokenizer), seed=5)
    valid = task_subset(p.eval, range(8))
    train = task_subset(p.train, range(16, 48), "train")
    if mode == "holdout":
        il, _ = holdout_irreducible(make, train, task_subset(p.train, range(16)), valid, steps=steps, batch_size=4,
                                    eval_every=steps)
    else:
        il, info = no_holdout_irreducible(make, train, valid, steps=steps, batch_size=4, eval_every=steps)
        assert len(info["halves"]) == 2
    return train, il, preset


@pytest.mark.parametrize("prep,mode", [("small_prep_clm", "holdout"), ("small_prep_clm", "no_holdout"),
                                       ("small_prep", "holdout"), ("small_prep", "no_holdout")])
def test_sequence_level_rho_loss_on_lm_tasks(request, prep, mode):
    from workbench.training.loop import index_batch
    p = request.getfixturevalue(prep)
    train, il, preset = _lm_il(p, mode)
    assert train.ids == [p.train.ids[i] for i in range(16, 48)]
    if mode == "no_holdout":                               # each half is scored by the model that never saw it
        assert set(il.owner.tolist()) == {0, 1}
        if not p.encoder:
            from workbench.selection.irreducible import task_subset
            rows = np.flatnonzero(il.owner == 1)
            np.testing.assert_allclose(il.losses[rows], score(il.models[1], task_subset(train, rows)), rtol=1e-5)
    sel = BatchSelector("rho_loss", 0.25, il)
    model = wb.model(preset, vocab_size=len(p.tokenizer), seed=0)
    res = wb.train(model, train, batch_filter=sel, budget=Budget(max_steps=2), batch_size=2, progress=False)
    assert res.step == 2 and math.isfinite(res.history[-1]["loss"]) and sel.stats()["picked"] == 4
    # MLM: the filter recomputes the IL on the large batch's own masks (CLM: the table)
    assert sel.recompute == p.encoder
    rec = sel.records()
    assert len(rec["index"]) == 16 and np.isfinite(rec["irreducible_loss"]).all()
    batch = train.collate(list(range(8)), step=7)
    sel.select(model, batch, train, step=7)
    got = sel.records()["irreducible_loss"][-8:]
    with torch.no_grad():
        if p.encoder:                                      # the IL of exactly these masked targets
            want = np.concatenate([il.models[k].eval() and
                                   train.per_example_loss(il.models[k], index_batch(batch, torch.tensor([i]))).numpy()
                                   for i, k in enumerate(il.aligned(train)[1][:8])])
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
            assert not np.allclose(got, il.aligned(train)[0][:8])     # not the table's other mask draw
        else:
            np.testing.assert_allclose(got, il.aligned(train)[0][:8], rtol=1e-6)
    # gradient-norm selectors need class logits: refused up front on an LM task
    with pytest.raises(ConfigError, match="classification task"):
        BatchSelector("grad_norm", 0.25).setup(train)
    # a table loaded without its IL model can only be looked up: on MLM that is said out loud
    table_only = BatchSelector("rho_loss", 0.25, IrreducibleLosses(il.ids, il.losses))
    if p.encoder:
        with pytest.warns(UserWarning, match="other masks"):
            table_only.setup(train)
    else:
        table_only.setup(train)
    assert not table_only.recompute


def test_lm_mode_params():
    from workbench.recipes.rho_loss import LM_SELECTORS
    P = RhoLossParams(corpus="x.jsonl")
    assert P.lm and P.selectors == list(LM_SELECTORS) and "grad_norm" not in P.selectors
    assert RhoLossParams().selectors[2] == "grad_norm" and not RhoLossParams().lm      # digits mode unchanged
    with pytest.raises(ConfigError, match="need class labels"):
        parse(RhoLossParams, {"corpus": "x.jsonl", "selectors": "uniform,rho_loss,grad_norm_is"})
    with pytest.raises(ConfigError, match="seq_len"):
        RhoLossParams(corpus="x.jsonl", seq_len=4)


def _small_jsonl(path, n=70, chars=500):
    texts = wb.corpus("pydocs:datasets").texts[:n]
    path.write_text("".join(json.dumps({"text": t[:chars]}) + "\n" for t in texts))
    return path


def test_lm_mode_takes_a_saved_model_with_its_tokenizer(tmp_path, small_prep_clm):
    """A model saved with save_pretrained keeps its weights, vocabulary and tokenizer in LM mode."""
    from workbench.recipes.rho_loss import lm_splits, make_lm_model
    small_prep_clm.model.save_pretrained(tmp_path / "mine")
    small_prep_clm.tokenizer.save_pretrained(tmp_path / "mine")
    P = parse(RhoLossParams, {"corpus": str(_small_jsonl(tmp_path / "docs.jsonl")), "model": str(tmp_path / "mine"),
                              "seq_len": 32})
    splits = lm_splits(P)
    assert splits.tokenizer.get_vocab() == small_prep_clm.tokenizer.get_vocab()
    m = make_lm_model(P, splits, seed=3)
    ref = small_prep_clm.model.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in m.state_dict().items())


def test_lm_mode_token_arm_trains_on_the_requested_share_of_tokens(tmp_path):
    """``selectors=...,token_rho`` in LM mode: Rho-1's token filter against the IL model, beside
    sequence-level RHO-LOSS and uniform; its run keeps ``token_fraction`` of the target tokens and
    records them; the summary names the arm and the kept share."""
    from workbench.recipes import rho_loss as R
    f = _small_jsonl(tmp_path / "docs.jsonl")
    P = parse(RhoLossParams, {"corpus": str(f), "model": "gpt2-tiny", "seq_len": 32, "vocab_size": 512,
                              "lm_batch_size": 4, "eval_examples": 32, "max_steps": 8, "il_steps": 6,
                              "eval_every": 2, "n_seeds": 1, "selectors": "uniform,rho_loss,token_rho",
                              "token_fraction": 0.5, "out_dir": str(tmp_path / "out")})
    result = R.run(P)
    s = R.summary(P, result)
    ex = s.extra
    assert set(ex["heldout_loss_final"]) == {"uniform", "rho_loss", "token_rho"}
    assert ex["token_fraction"] == 0.5 and abs(ex["kept_token_fraction"] - 0.5) < 0.02
    rec = np.load(tmp_path / "out" / "runs" / "token_rho-seed0" / "scores" / "token_selection.npz")
    assert set(rec["step"].tolist()) == set(range(8)) and (rec["kept"] <= rec["valid"]).all()    # steps 0-7
    # the token arm and uniform draw the same batches: same seed, same sampler, a different loss mask
    assert ex["heldout_loss_final"]["token_rho"] != ex["heldout_loss_final"]["uniform"]


def test_recipe_proxy_selection_end_to_end(tmp_path):
    """``proxy_hidden``: every selector but uniform scores with a proxy classifier of that width (trained
    alongside), the target keeps ``hidden``; refused in LM mode."""
    from workbench.recipes import rho_loss as R
    P = parse(RhoLossParams, {"dataset": "digits", "selectors": "uniform,rho_loss", "max_steps": 6, "il_steps": 8,
                              "hidden": 64, "il_hidden": 32, "proxy_hidden": 16, "eval_every": 3, "n_seeds": 1,
                              "out_dir": str(tmp_path / "out")})
    result = R.run(P)
    s = R.summary(P, result)
    assert s.extra["proxy_hidden"] == 16 and s.extra["hidden"] == 64
    rec = np.load(tmp_path / "out" / "runs" / "rho_loss-seed0" / "scores" / "selection_rho_loss.npz")
    assert rec["picks"].sum() == 6 * P.batch_size
    with pytest.raises(ConfigError, match="not LM mode"):
        parse(RhoLossParams, {"corpus": "x.jsonl", "proxy_hidden": 16})


def test_duplicates_add_clean_copies_and_the_picks_on_them_are_counted(tmp_path):
    """``duplicates``: a seeded share of clean training examples gets 2-4 exact copies (redundancy without
    noise); each run records the share of its picks that land on duplicated groups."""
    from workbench.recipes import rho_loss as R
    sp = load_labelled("digits", 0.2, seed=3)
    t, group = R.with_duplicates(sp.train, 0.3, seed=3)
    n = len(sp.train)
    assert len(t) > n and group[n:].all() and len(set(t.ids)) == len(t)
    orig = {i: k for k, i in enumerate(t.ids[:n])}
    for k in range(n, len(t)):                            # a copy: the same input and the clean label
        j = orig[t.ids[k].split("#dup")[0]]
        assert group[j] and not sp.train.noisy[j] and np.array_equal(t.inputs[k], t.inputs[j])
        assert t.labels[k] == t.clean_labels[j] == t.labels[j]
    assert 0.3 * (~sp.train.noisy).sum() - 1 <= group[:n].sum() <= 0.3 * (~sp.train.noisy).sum() + 1
    P = parse(RhoLossParams, {"dataset": "digits", "noise": 0.0, "duplicates": 0.3, "selectors": "uniform,rho_loss",
                              "max_steps": 6, "il_steps": 8, "hidden": 32, "il_hidden": 32, "eval_every": 3,
                              "n_seeds": 1, "out_dir": str(tmp_path / "out")})
    result = R.run(P)
    ex = R.summary(P, result).extra
    assert 0 < ex["duplicate_share_of_train"] < 1 and set(ex["duplicate_picked"]) == {"uniform", "rho_loss"}
    assert all(0 <= v <= 1 for v in ex["duplicate_picked"].values())
    with pytest.raises(ConfigError, match="not LM mode"):
        parse(RhoLossParams, {"corpus": "x.jsonl", "duplicates": 0.3})


def test_token_arm_is_refused_where_it_cannot_run():
    with pytest.raises(ConfigError, match="language-model selector"):
        parse(RhoLossParams, {"selectors": "uniform,rho_loss,token_rho"})
    with pytest.raises(ConfigError, match="il_mode='holdout'"):
        parse(RhoLossParams, {"corpus": "x.jsonl", "selectors": "uniform,rho_loss,token_rho", "il_mode": "no_holdout"})
    with pytest.raises(ConfigError, match="token_fraction"):
        parse(RhoLossParams, {"corpus": "x.jsonl", "token_fraction": 0})


def test_notebook_smoke_lm_mode(tmp_path):
    f = _small_jsonl(tmp_path / "docs.jsonl")
    out = tmp_path / "out"
    assert main(["reproduce", "rho_loss", "-p", f"corpus={f}", "-p", "model=gpt2-tiny", "--scale", "smoke",
                 "--out", str(out)]) == 0
    s = json.loads((out / "rho_loss" / "summary.json").read_text())
    assert s["metric"] == "steps_to_uniform_final_loss" and s["baseline"]["name"] == "uniform"
    ex = s["extra"]
    assert ex["mode"] == "clm" and ex["model"] == "gpt2-tiny"
    assert set(ex["heldout_loss_final"]) == {"uniform", "train_loss", "irreducible_loss", "rho_loss", "boltzmann_rho"}
    assert s["baseline"]["value"] == ex["steps_to_target"]["uniform"] <= ex["max_steps"]
    assert all(math.isfinite(v) for v in ex["heldout_loss_at_max_steps"].values())
    nb = nbformat.read(out / "rho_loss" / "rho_loss.ipynb", as_version=4)
    mimes = {m for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) for m in o.get("data", {})}
    # the live view, or (reproduce compacts executed notebooks) its static copy as a PNG
    assert "application/vnd.plotly.v1+json" in mimes
    assert {"application/vnd.jupyter.widget-view+json", "image/png"} & mimes
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "LM mode: no label noise" in text


# ---------------------------------------------------------------------------------- the authors' details

def test_authors_noise_draws_any_class_so_about_c_minus_1_over_c_end_up_wrong():
    # OATML/RHO-Loss datamodules.py _corrupt_dataset: int(p N) rows, each a class drawn from all C
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, size=20000)
    noisy, flipped = inject_noise(y, 4, 0.2, rng)                            # draw="authors" is the default
    assert (flipped == (noisy != y)).all()
    assert 0.2 * 0.75 - 0.01 < flipped.mean() < 0.2 * 0.75 + 0.01             # (C-1)/C of the nominal rate
    assert int((noisy != y).sum()) <= int(0.2 * len(y))
    kept = np.bincount(noisy[flipped], minlength=4) / flipped.sum()          # wrong labels spread over classes
    assert kept.min() > 0.2
    sp = load_labelled("digits", noise=0.2, seed=4)
    share = sp.train.noisy.mean()
    assert 0.12 < share < 0.2 and (sp.train.labels[sp.train.noisy] != sp.train.clean_labels[sp.train.noisy]).all()
    with pytest.raises(ConfigError, match="noise draw"):
        inject_noise(y, 4, 0.2, rng, draw="flip")


class ModeSpy(Identity):
    """Identity logits that remember the mode they were called in."""

    def __init__(self):
        super().__init__()
        self.modes = []

    def forward(self, x):
        self.modes.append(self.training)
        return super().forward(x)


@pytest.mark.parametrize("train_mode", [True, False])
def test_selection_scores_in_train_mode_by_default(train_mode):
    task = _task()
    sel = BatchSelector("rho_loss", 0.5, IrreducibleLosses(task.ids, IL), train_mode=train_mode)
    assert BatchSelector("train_loss").train_mode                           # the authors' selection_train_mode=True
    sel.large_batch_size(3)
    sel.setup(task)
    m = ModeSpy().eval()
    sel.select(m, task.collate(range(len(task))), task, step=0)
    assert m.modes == [train_mode] and not m.training                     # scored in that mode, mode restored


def test_boltzmann_draws_with_replacement_at_the_authors_temperature():
    sel = BatchSelector("boltzmann_rho", 0.1, IrreducibleLosses(["a"], [0.0]))
    assert sel.temperature == 0.25 and sel.replacement                     # boltzmann_reducible_loss_selection
    g = torch.Generator().manual_seed(0)
    s = torch.tensor([0.0, 0.25 * math.log(3.0)])                          # p = softmax(s / 0.25) = (1/4, 3/4)
    rows = boltzmann_draw(s, 4000, 0.25, g)
    assert rows.shape == (4000,) and abs(float((rows == 1).float().mean()) - 0.75) < 0.03
    assert sorted(boltzmann_draw(s, 2, 0.25, g, replacement=False).tolist()) == [0, 1]    # distinct rows
    sel, sub, _, _ = _select("boltzmann_rho", k=8, temperature=50.0)     # near-uniform draws of 8 of 8
    assert len(sub["index"]) == 8 and len(set(sub["index"].tolist())) < 8   # some row drawn twice
    assert sel.records()["picks"].sum() == 8 and sel.records()["picks"].max() >= 2


def test_il_update_trains_on_the_selected_batch_alone():
    # MultiModels.py update_irreducible: one optimizer step of the IL model on the selected points only
    task = _task()
    il = IrreducibleLosses(task.ids, IL, models=[Identity()])
    ref = Identity()
    sel = BatchSelector("rho_loss", 0.5, il, update_il=True, il_lr=0.1, il_weight_decay=0.0)
    assert sel.il_holdout is None
    sel.large_batch_size(3)
    sel.setup(task)
    sub = sel.select(Identity(), task.collate(range(len(task))), task, step=0)
    opt = torch.optim.AdamW(ref.parameters(), lr=0.1, weight_decay=0.0)
    task.loss(ref, {k: v for k, v in sub.items() if k != "weight"}).backward()
    opt.step()
    torch.testing.assert_close(il.models[0].w, ref.w)
    from workbench.recipes.rho_loss import RhoLossParams as P
    assert P().il_update_mix is False and P().selection_mode == "train" and P().temperature == 0.25
    assert P().boltzmann_replacement and P().noise_draw == "authors" and P().il_halves == "balanced"


def test_no_holdout_halves_are_class_balanced():
    sp = load_labelled("digits", noise=0.1, seed=3)
    pool = sp.train.concat(sp.holdout)
    a, b = split_halves(pool, seed=0)                                      # "balanced", datamodules.py
    assert len(np.intersect1d(a, b)) == 0 and len(a) + len(b) == len(pool)
    for c in range(10):
        na, nb = int((pool.labels[a] == c).sum()), int((pool.labels[b] == c).sum())
        assert abs(na - nb) <= 1
    r = split_halves(pool, seed=0, halves="random")
    assert abs(len(r[0]) - len(r[1])) <= 1
    unlabelled = type("T", (), {"__len__": lambda self: 9})()             # an LM task: random halves
    assert [len(h) for h in split_halves(unlabelled)] == [4, 5]
    with pytest.raises(ConfigError, match="halves"):
        split_halves(pool, halves="odd")


def test_word_tokens_for_pydocs_classification():
    texts = ["Return the sum of x and y.", "Plot the figure; return None", "the the the zzz 42"]
    ids, pad, V = word_ids(texts, [0, 1], vocab_size=6, seq_len=4)
    assert pad == 0 and V == 6 and [len(d) for d in ids] == [4, 4, 4]
    assert ids[2][:3] == [ids[0][1]] * 3                                    # "the": one id everywhere
    assert ids[2][3] == 1                                                   # "zzz" unseen when fitting: id 1
    assert all(0 < i < V for d in ids for i in d)


def test_irreducible_view_draws_a_sample_of_a_large_training_set():
    import pandas as pd

    from workbench.viz.irreducible import IrreducibleLossView, irreducible_figure
    rng = np.random.default_rng(1)
    n = 5000
    df = pd.DataFrame({"train_loss": rng.random(n) * 3, "irreducible_loss": rng.random(n), "noisy": rng.random(n) < 0.1})
    fig = irreducible_figure(df, 0.1, max_points=1000)
    assert sum(len(t.x) for t in fig.data[:2]) == 1000 and "500 of 5000" in fig.layout.title.text
    assert len(fig.data[2].x) < 500                                         # the selected ones among the drawn
    assert sum(len(t.x) for t in irreducible_figure(df, 0.1, max_points=None).data[:2]) == n
    view = IrreducibleLossView(df, 0.1, max_points=1000)
    view.slider.value = 0.5
    assert len(view.figure.data[2].x) == int(view.shown[view.selected].sum()) and "drawn: 1000" in view.figure.layout.title.text


def test_tiny_and_cpu_are_the_papers_regime(tmp_path):
    # N_train >> n_B: pydocs over eight packages with the authors' details; digits stays the smoke case
    from workbench.reproduce.notebooks import resolve_params
    for scale in ("tiny", "cpu"):
        P = parse(RhoLossParams, resolve_params("rho_loss", scale, {}, tmp_path))
        assert P.dataset == "pydocs" and len(P.packages.split(",")) == 8 and P.noise == 0.1
        assert P.batch_size == 32 and P.fraction == 0.1 and P.noise_draw == "authors"
        assert P.test_fraction + P.valid_fraction < 0.16           # 35,978 documents -> ~15.3k train = 48 n_B
    assert parse(RhoLossParams, resolve_params("rho_loss", "smoke", {}, tmp_path)).dataset == "digits"


def test_active_learning_scores_from_mc_dropout_samples():
    # selection_methods.py / utils_bald.py: entropy of the mean, mean entropy, BALD = their difference
    from workbench.selection.rho_loss import mc_dropout_scores
    p = torch.tensor([[[0.9, 0.1], [0.5, 0.5]], [[0.1, 0.9], [0.5, 0.5]]])      # [K=2, B=2, C=2]
    s = mc_dropout_scores(p.log(), torch.tensor([0, 1]))
    h = lambda q: -(q * math.log(q) + (1 - q) * math.log(1 - q))            # noqa: E731
    torch.testing.assert_close(s["entropy"], torch.tensor([math.log(2), math.log(2)], dtype=torch.float64))
    torch.testing.assert_close(s["conditional_entropy"], torch.tensor([h(0.9), math.log(2)], dtype=torch.float64))
    assert s["bald"][0] > 0.3 and abs(float(s["bald"][1])) < 1e-12          # disagreement vs. shared doubt
    torch.testing.assert_close(s["loss"], torch.tensor([-(math.log(0.9) + math.log(0.1)) / 2, math.log(2)],
                                                       dtype=torch.float64))
    torch.testing.assert_close(s["loss_minus_conditional_entropy"], s["loss"] - s["conditional_entropy"])


class DropoutIdentity(Identity):
    def __init__(self):
        super().__init__()
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(super().forward(x))


@pytest.mark.parametrize("rule", ["bald", "entropy", "conditional_entropy", "loss_minus_conditional_entropy"])
def test_active_learning_selectors_sample_with_dropout_on(rule):
    task = _task()
    sel = BatchSelector(rule, 0.5, train_mode=False, mc_samples=4)
    sel.large_batch_size(3)
    sel.setup(task)
    m = DropoutIdentity().eval()
    torch.manual_seed(0)
    sub = sel.select(m, task.collate(range(len(task))), task, step=0)
    rec = sel.records()
    assert len(sub["index"]) == 3 and not m.training and not m.drop.training       # modes restored
    assert rec["score"][sub["index"].numpy()].min() >= np.sort(rec["score"])[-3] - 1e-6   # top-3 of the score
    if rule == "bald":
        assert rec["score"].max() > 0                                        # dropout was on: samples differ
    assert "bald" not in RhoLossParams().selectors                           # the paper's seven stay the default
    with pytest.raises(ConfigError, match="mc_samples"):
        BatchSelector(rule, mc_samples=0)
