"""MATES as its authors released it (issue 19): clipped probes, last-word probe loss, disjoint pools and
reference/evaluation halves, the warmup-stable-decay schedule, FLOPs to target, the ridge and
pretrained-encoder influence models."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from workbench.errors import ConfigError, WorkbenchError
from workbench.selection.influence_model import InfluenceModel, RidgeInfluence, influence_model_from_state
from workbench.selection.mates import (MatesError, MatesSampler, RefBatch, batched_probe, last_word_batch, naive_probe,
                                       reference_loss)
from workbench.training.schedules import warmup_stable_decay
from test_mates import T, V, _train


def _model_opt(steps=2):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    m = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=V, n_positions=T, bos_token_id=0,
                                   eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    _train(m, opt, steps)
    return m, opt


def _cands(n=6, seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (n, T), generator=g)


def _last_word_ref():
    g = torch.Generator().manual_seed(3)
    items = [(torch.randint(1, V, (int(c),), generator=g).tolist(), torch.randint(1, V, (int(t),), generator=g).tolist())
             for c, t in ((9, 2), (12, 1), (5, 3))]
    return last_word_batch(items, pad_id=0)


def test_clipped_probers_agree_and_clipping_changes_the_oracle():
    """Both probers clip each candidate's gradient to the training grad_clip and agree within 1e-5 (last-word
    and full-text reference losses)."""
    m, opt = _model_opt()
    for cands, ref in ((_cands(4), _last_word_ref()), (_cands(2), _cands(3, seed=5))):
        a = naive_probe(m, opt, cands, ref, grad_clip=0.05)
        b = batched_probe(m, opt, cands, ref, chunk_size=4, grad_clip=0.05)
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)
        u = naive_probe(m, opt, cands, ref)
        assert np.abs(a - u).max() > 1e-4          # per-example gradients are far above 0.05: clipping matters


def test_last_word_batch_scores_only_the_last_word():
    rb = last_word_batch([([5, 6, 7], [8, 9]), ([4], [3])], pad_id=0)
    assert rb.ids.tolist() == [[5, 6, 7, 8, 9], [4, 3, 0, 0, 0]]
    assert rb.labels.tolist() == [[-100, -100, -100, 8, 9], [-100, 3, -100, -100, -100]]
    m, _ = _model_opt(0)
    logits = m(input_ids=rb.ids).logits
    lp = torch.log_softmax(logits, -1)
    want = -(lp[0, 2, 8] + lp[0, 3, 9] + lp[1, 0, 3]) / 3
    assert reference_loss(m, rb) == pytest.approx(float(want.detach()), rel=1e-5)
    with pytest.raises(MatesError):
        last_word_batch([([], [1])])
    with pytest.raises(MatesError):
        RefBatch(torch.zeros(2, 3, dtype=torch.long), torch.full((2, 3), -100))


def test_wsd_schedule_is_constant_between_warmup_and_decay():
    s = warmup_stable_decay(warmup=0.1, decay=0.2)
    f = [s.factor(i, 100) for i in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == 1.0
    assert all(x == 1.0 for x in f[10:80]) and 0 < f[80] < 1 and 0 < f[99] < f[80]
    assert all(a >= b for a, b in zip(f[80:], f[81:]))
    with pytest.raises(ConfigError):
        warmup_stable_decay(warmup=0.6, decay=0.5)


def test_disjoint_pools_never_share_a_candidate(small_prep_clm):
    p = small_prep_clm
    n = len(p.train)
    s = MatesSampler(None, torch.zeros(1, 4, dtype=torch.long), stage_steps=1, fraction=0.5, pool_size=n // 4,
                     method="random")
    s.setup(p.train, seed=0)
    pools = []
    for step in range(4):
        s.refresh(None, step)
        pools.append(set(s.subset.tolist()))
    assert all(not (pools[i] & pools[j]) for i in range(4) for j in range(i))
    old = MatesSampler(None, torch.zeros(1, 4, dtype=torch.long), stage_steps=1, fraction=0.5, pool_size=n // 4,
                       method="random", disjoint_pools=False)
    old.setup(p.train, seed=0)
    seen = []
    for step in range(4):
        old.refresh(None, step)
        seen.append(set(old.subset.tolist()))
    assert any(seen[i] & seen[j] for i in range(4) for j in range(i))     # resampling from the whole set overlaps


def test_ridge_influence_ranks_a_token_count_signal_and_round_trips():
    g = np.random.default_rng(0)
    blocks = [torch.as_tensor(g.integers(0, 32, 20)) for _ in range(80)]
    y = np.array([float((b == 3).sum()) for b in blocks]) + 0.1 * g.standard_normal(80)
    r = RidgeInfluence(32, alpha=0.1).fit(blocks, y)
    cv = r.cross_validate(blocks, y, 4, seed=0)
    assert cv["spearman"] > 0.5 and len(cv["fold_spearmans"]) == 4
    back = influence_model_from_state(r.state_dict())
    np.testing.assert_array_equal(back.predict(blocks[:5]), r.predict(blocks[:5]))
    with pytest.raises(MatesError):
        RidgeInfluence(32).fit(blocks[:1], y[:1])


def _tiny_bert_dir(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(40)]
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                  sep_token="[SEP]", mask_token="[MASK]")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64, pad_token_id=0)).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    return str(tmp_path)


def test_pretrained_encoder_influence_model_offline(tmp_path):
    path = _tiny_bert_dir(tmp_path / "enc")
    g = np.random.default_rng(0)
    texts = [" ".join(f"w{i}" for i in g.integers(0, 40, 12)) for _ in range(40)]
    y = np.array([t.count("w3 ") + t.count("w7 ") for t in texts], dtype=float) + 0.01 * g.standard_normal(40)
    im = InfluenceModel(0, max_len=32, pretrained=path)
    cv = im.cross_validate(texts, y, 2, seed=0, epochs=2, lr=1e-3)
    assert np.isfinite(cv["spearman"]) and len(cv["fold_spearmans"]) == 2
    im.fit(texts, y, epochs=2, lr=1e-3)
    back = influence_model_from_state(im.state_dict())
    np.testing.assert_allclose(back.predict(texts[:4]), im.predict(texts[:4]), atol=1e-6)
    with pytest.raises(MatesError, match="reads texts"):
        im.predict([torch.arange(5)])
    with pytest.raises(WorkbenchError) as e:
        InfluenceModel(0, pretrained=str(tmp_path / "missing"))
    assert "\n" not in str(e.value)


def test_options_and_flops_to_target():
    from workbench.config import parse
    from workbench.recipes import mates as R

    base = dict(scale="smoke", corpus="pydocs:datasets,papermill", reference_package="papermill")
    a = parse(R.Params, base)
    assert R.options(a) == R.AUTHORS
    w = parse(R.Params, {**base, "variant": "workbench"})
    assert R.options(w) == R.WORKBENCH
    mixed = parse(R.Params, {**base, "variant": "workbench", "clip_probes": False, "probe_loss": "full"})
    assert R.options(mixed)["clip_probes"] is False and R.options(mixed)["warm_start"] is True
    keep = parse(R.Params, {**base, "warm_start": True})       # an option set away from the authors' value is kept
    assert R.options(keep)["warm_start"] is True and R.options(keep)["clip_probes"] is True
    with pytest.raises(ConfigError):
        parse(R.Params, {**base, "im_kind": "pretrained"})
    curve = [{"total_flops": 0.0, "reference_loss": 5.0}, {"total_flops": 10.0, "reference_loss": 4.0},
             {"total_flops": 20.0, "reference_loss": 3.0}]
    assert R.flops_to_target(curve, 3.5) == pytest.approx(15.0)
    assert R.flops_to_target(curve, 5.0) == 0.0 and R.flops_to_target(curve, 2.0) is None


def test_probe_reference_and_evaluation_are_disjoint(tmp_path):
    """The probes' reference documents and the documents every reported loss is measured on never overlap."""
    from workbench.config import parse
    from workbench.recipes import mates as R

    P = parse(R.Params, dict(scale="smoke", out_dir=str(tmp_path), corpus="pydocs:datasets,papermill,deepspeed",
                             reference_package="deepspeed", seq_len=32, vocab_size=1024, ref_blocks=4,
                             probe_loss="full"))
    S = R.prepare_mates(P)
    probe_ids, eval_ids = set(S.probe_corpus.ids), set(S.eval_corpus.ids)
    assert probe_ids and eval_ids and not probe_ids & eval_ids
    assert probe_ids | eval_ids == set(S.prep.holdout_corpus.ids)
    probe_rows = {tuple(r.tolist()) for r in S.probe_ref}
    assert not probe_rows & {tuple(r.tolist()) for r in S.ref_eval}
    assert S.lambada and len(S.lambada) <= len(S.eval_corpus) * 1     # the last-word evaluation: one item per eval doc
