"""Resume == uninterrupted, for every sampler and batch filter: a run that crashes mid-way and is
resumed from its last checkpoint with fresh objects selects the same data, records the same scores
and ends with bitwise the same weights as a run that was never interrupted (CPU)."""
import numpy as np
import pytest
import torch

import workbench as wb
from workbench.training import Budget, Schedule

STEPS, CRASH, EVERY = 9, 7, 3          # checkpoints at 3 and 6; the crash at 7 loses step 7


class Crash(Exception):
    pass


# each hook: (task kind, factory(prep, model) -> the keyword arguments of wb.train it sets)
def _full(prep, model):
    from workbench.training import FullSampler
    return {"sampler": FullSampler()}


def _random(prep, model):
    from workbench.training import RandomSubsetSampler
    return {"sampler": RandomSubsetSampler(0.25, warm_start_steps=2)}


def _ingenious(prep, model):
    from workbench.selection import IngeniousSampler
    return {"sampler": IngeniousSampler(fraction=0.25, warm_start_steps=2, resample_every=2, recompute_every=4,
                                        partitions=2)}


def _mates(prep, model):
    from workbench.selection import MatesSampler
    from workbench.training import make_optimizer
    opt = make_optimizer(model, 2e-3)
    ref = torch.from_numpy(prep.eval.input_ids[:4].astype(np.int64))
    return {"optimizer": opt, "sampler": MatesSampler(opt, ref, stage_steps=3, fraction=0.2, probe_size=12,
                                                      im_epochs=2, im_hidden=32, im_layers=1)}


def _il(prep):
    """Irreducible losses of the training examples under a small IL model (its own seed: not the target)."""
    from workbench.selection import IrreducibleLosses
    from workbench.selection.irreducible import score
    ilm = wb.model("prelnbert-tiny", vocab_size=len(prep.tokenizer), seed=5, dropout=0.0)
    return IrreducibleLosses(prep.train.ids, score(ilm, prep.train), models=[ilm])


def _train_loss(prep, model):
    from workbench.selection import BatchSelector
    return {"batch_filter": BatchSelector("train_loss", fraction=0.25)}


def _boltzmann_rho(prep, model):
    from workbench.selection import BatchSelector
    return {"batch_filter": BatchSelector("boltzmann_rho", fraction=0.25, irreducible=_il(prep), temperature=0.5)}


def _rho_loss_il_update(prep, model):
    from workbench.selection import BatchSelector
    return {"batch_filter": BatchSelector("rho_loss", fraction=0.25, irreducible=_il(prep), update_il=True,
                                          il_holdout=prep.eval)}


def _rho_tokens(prep, model):
    from workbench.selection import TokenExcessLoss
    return {"batch_filter": TokenExcessLoss(wb.model("gpt2-tiny", vocab_size=len(prep.tokenizer), seed=7),
                                            fraction=0.5)}


def _ingenious_rho(prep, model):      # a sampler and a filter together
    return {**_ingenious(prep, model), **_rho_loss_il_update(prep, model)}


HOOKS = {"full": ("mlm", _full), "random": ("mlm", _random), "ingenious": ("mlm", _ingenious),
         "mates": ("clm", _mates), "train_loss": ("mlm", _train_loss), "boltzmann_rho": ("mlm", _boltzmann_rho),
         "rho_loss_il_update": ("mlm", _rho_loss_il_update), "rho_tokens": ("clm", _rho_tokens),
         "ingenious+rho_loss": ("mlm", _ingenious_rho)}


def _train(prep, hooks, run, crash_at=None):
    model = wb.model("bert-tiny" if prep.encoder else "gpt2-tiny", vocab_size=len(prep.tokenizer), seed=0)

    def crash(step, **_):
        if step == crash_at:
            raise Crash()

    kw = hooks(prep, model)
    res = wb.train(model, prep.train, budget=Budget(max_steps=STEPS), schedule=Schedule("linear", warmup=0.2),
                   batch_size=4, lr=2e-3, seed=5, progress=False, checkpoint_every=EVERY, run=run,
                   callbacks=(crash,), **kw)
    return res, kw


def _scores(run) -> dict:
    return {n: run.load_scores(n) for n in run.score_names()}


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_resume_equals_uninterrupted(name, request, tmp_path):
    kind, hooks = HOOKS[name]
    small_prep = request.getfixturevalue("small_prep" if kind == "mlm" else "small_prep_clm")
    whole, wk = _train(small_prep, hooks, wb.Run(tmp_path / "whole"))
    with pytest.raises(Crash):
        _train(small_prep, hooks, wb.Run(tmp_path / "part"), crash_at=CRASH)
    part = wb.Run(tmp_path / "part", resume=True)
    resumed, rk = _train(small_prep, hooks, part)

    assert resumed.step == whole.step == STEPS
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), f"{name}: weights differ after resume"
    losses = lambda res: [(r["step"], r["loss"]) for r in res.history if "loss" in r]
    assert losses(resumed) == losses(whole)
    sa, sb = _scores(whole.run), _scores(part)
    assert sa.keys() == sb.keys()
    for n in sa:
        assert sa[n].keys() == sb[n].keys(), n
        for k in sa[n]:
            a, b = sa[n][k], sb[n][k]
            assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), f"{name}: scores {n}/{k} differ after resume"
    bf = wk.get("batch_filter")
    if bf is not None:                                   # what the filter recorded, scores and counters
        ra, rb = bf.records(), rk["batch_filter"].records()
        assert ra.keys() == rb.keys()
        for k in ra:
            assert np.array_equal(ra[k], rb[k], equal_nan=ra[k].dtype.kind == "f"), f"{name}: record {k} differs"
        strip = lambda st: {k: v for k, v in st.items() if k != "select_s"}   # noqa: E731
        assert strip(bf.stats()) == strip(rk["batch_filter"].stats())
        il = getattr(bf, "irreducible", None)
        if il is not None and il.models:                 # update_il trains the IL model: it must resume too
            pa, pb = il.models[0].state_dict(), rk["batch_filter"].irreducible.models[0].state_dict()
            assert all(torch.equal(pa[k], pb[k]) for k in pa), f"{name}: IL model differs after resume"
    for key in ("sampler",):
        sa_, sb_ = wk.get(key), rk.get(key)
        if sa_ is not None and hasattr(sa_, "stats"):
            strip = lambda st: {k: v for k, v in st.items() if k != "select_s"}   # noqa: E731
            assert strip(sa_.stats()) == strip(sb_.stats()), f"{name}: sampler stats differ"
