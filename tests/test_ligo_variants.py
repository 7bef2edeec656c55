"""LiGO's two operator variants (issue 20) and bert2BERT's AKI.

``authors`` (the default; VITA-Group/LiGO ligo.py): depth mixing first, then width with one Q/K/V/FFN
expansion set per *large* layer and a separate MLM-head expansion; ``stackbert_noisy`` depth rows
(one-hot + U(0, 0.03), normalised) and ``rand`` width rows (U(0, 1), normalised).  ``canon``: the
workbench's original operator (width per small layer, then depth; Net2Net init).  Tiny models: seconds.
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from test_growth import _single_thread, batch, config, logits, maxdiff, small_model  # noqa: F401 (autouse fixture)
from workbench.growth import LiGO, grow, stack_depth, train_ligo
from workbench.growth.arch import to_canon
from workbench.growth.baselines import net2net_width


def same_weights(a, b, atol=0.0):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name, t in sa.items():
        if t.is_floating_point():
            assert torch.allclose(t, sb[name], atol=atol, rtol=0), name


def test_authors_init_is_the_released_one():
    small = small_model("bert")
    large = config("bert", layers=4, hidden=64, ffn=128)
    ligo = LiGO(small, large, seed=1)                       # variant="authors" is the default
    assert ligo.variant == "authors"
    onehot = torch.eye(2)[[0, 1, 0, 1]]                      # stackbert: large layer l <- small layer l mod 2
    for d in (*ligo.depth_w.values(), *ligo.depth_b.values()):
        assert torch.allclose(d.sum(-1), torch.ones(4))      # rows normalised to sum 1
        raw = d / d.max(-1, keepdim=True).values             # undo the normalisation: one-hot 1 + U(0, 0.03)
        assert torch.equal(raw.argmax(-1), onehot.argmax(-1))
        off = raw[onehot == 0]
        assert (off >= 0).all() and (off <= 0.03).all() and off.max() > 0
    # rand width: U(0, 1) rows normalised to sum 1, one Q/K/V/FFN set per LARGE layer, a head expansion
    assert ligo.width["q"].shape == (4, 32, 32) and ligo.width["fi"].shape == (4, 64, 64)
    assert set(ligo.width) == {"res", "q", "k", "v", "fi", "cls"}
    for w in ligo.width.values():
        assert (w >= 0).all() and torch.allclose(w.sum(-1), torch.ones(w.shape[:-1]))
    assert not torch.equal(ligo.width["cls"], ligo.width["res"])
    canon = LiGO(small, large, variant="canon", seed=1)     # today's operator: per small layer, no head expansion
    assert canon.width["q"].shape == (2, 32, 32) and "cls" not in canon.width


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_authors_without_noise_is_stackbert(arch):
    small = small_model(arch)
    # depth only: the authors' default (rand width has nothing to grow) with noise 0 is StackBERT, bit for bit
    deep = config(arch, layers=4)
    same_weights(LiGO(small, deep, depth_noise=0.0).export(), stack_depth(small, deep))
    # depth + width: one-hot (net2net) width rows, noise 0 -> exactly grow(..., "stackbert") (Net2Net + stacking)
    both = config(arch, layers=4, hidden=64, ffn=128)
    same_weights(LiGO(small, both, width_init="net2net", depth_noise=0.0, seed=3).export(),
                 grow(small, both, method="stackbert", seed=3), atol=1e-6)
    # with the authors' noise it is StackBERT up to the noise: every weight within a few % of the stacked one
    noisy = LiGO(small, deep, seed=3).export().state_dict()
    for name, t in stack_depth(small, deep).state_dict().items():
        if t.is_floating_point() and t.dim() == 2 and "layer" in name and t.shape[0] < 100:
            assert (noisy[name] - t).abs().max() <= 0.03 * 2 * t.abs().max() + 1e-6, name


@pytest.mark.parametrize("arch", ["bert", "neox"])
def test_canon_net2net_is_function_preserving(arch):
    small = small_model(arch)
    ligo = LiGO(small, config(arch, hidden=64, ffn=96), variant="canon", depth_init="interlace",
                width_init="net2net", seed=2).eval()
    assert maxdiff(logits(ligo), logits(small)) < 1e-5


def test_authors_head_expansion_is_used_and_trained():
    small = small_model("bert").train()
    ligo = LiGO(small, config("bert", layers=3, hidden=64, ffn=128), seed=0)
    canon = ligo.materialize_canon()
    ref = to_canon(small)
    new = ligo.width["cls"] @ ref.glob["head.ln.w"]          # head LayerNorm grows with the head's expansion
    assert torch.allclose(canon.glob["head.ln.w"][32:], new)
    ligo.loss(batch()).backward()
    assert ligo.width["cls"].grad is not None and ligo.width["cls"].grad.abs().sum() > 0


def test_authors_optimizer_schedule_clipping():
    small = small_model("bert").train()
    large = config("bert", layers=3, hidden=64, ffn=128)
    ligo = LiGO(small, large, seed=0)
    start = {k: v.detach().clone() for k, v in ligo.named_parameters()}
    # the authors' README literally: a 10,000-step warmup inherited by a 100-step run -> LR <= lr * steps / 10k
    train_ligo(ligo, [batch()], steps=2, lr=1e-2, warmup_steps=10_000, progress=False)
    moved = max((p - start[k]).abs().max().item() for k, p in ligo.named_parameters())
    assert moved < 1e-5
    # no warmup (the workbench's reading): the same 2 steps move the operator by ~lr
    ligo2 = LiGO(small, large, seed=0)
    train_ligo(ligo2, [batch()], steps=2, lr=1e-2, progress=False)
    assert max((p - start[k]).abs().max().item() for k, p in ligo2.named_parameters()) > 1e-3
    with pytest.raises(Exception, match="schedule"):
        train_ligo(ligo2, [batch()], steps=1, schedule="cosine", progress=False)


def test_bert2bert_aki_takes_new_units_from_the_block_above():
    small = small_model("bert", layers=3)
    wide = config("bert", layers=3, hidden=64, ffn=128)
    fpi, aki = net2net_width(small, wide, seed=4), net2net_width(small, wide, seed=4, aki=True)
    f, a = to_canon(fpi), to_canon(aki)
    for key in ("q.w", "fi.w", "o.w", "ln1.w"):
        assert torch.equal(a.layers[0][key][:32], f.layers[0][key][:32]), key   # old units: own block
        assert not torch.equal(a.layers[0][key][32:], f.layers[0][key][32:]), key  # new units: block 1's
        assert torch.equal(a.layers[2][key], f.layers[2][key]), key            # top block: itself (= FPI)
    # the new FFN units of block 0 are block 1's units, copied as FPI copies block 0's
    s = to_canon(small)
    rows = a.layers[0]["fi.w"][64:]
    assert all(any(torch.allclose(r[:32] , s.layers[1]["fi.w"][j] * 0.5) or torch.allclose(r[:32], s.layers[1]["fi.w"][j])
                   for j in range(64)) for r in rows)
    # a model whose blocks are equal gets AKI == FPI
    with torch.no_grad():
        for k, layer in enumerate(small.bert.encoder.layer[1:]):
            layer.load_state_dict(small.bert.encoder.layer[0].state_dict())
    same_weights(net2net_width(small, wide, seed=4, aki=True), net2net_width(small, wide, seed=4))
    assert grow(small, config("bert", layers=6, hidden=64, ffn=128), method="bert2bert_aki").config.num_hidden_layers == 6
