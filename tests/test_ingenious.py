import json

import numpy as np
import pytest

import workbench as wb
from workbench.errors import ConfigError
from workbench.selection.ingenious import IngeniousSampler, sample_partition, taylor_softmax
from workbench.recipes.ingenious import duplicate_fraction


def test_taylor_softmax_definition():
    x = np.array([-1.0, 0.0, 0.5, 3.0])
    w = 1 + x + x**2 / 2
    assert np.allclose(taylor_softmax(x), w / w.sum())
    assert (taylor_softmax(np.array([-50.0, 0.0])) > 0).all()        # 1 + x + x²/2 > 0 everywhere


def test_sample_partition_size_and_bias():
    gains = np.r_[np.zeros(50), np.full(50, 2.0)]
    counts = np.zeros(100)
    rng = np.random.default_rng(0)
    for _ in range(400):
        pos, p = sample_partition(gains, 0.25, 0.1, rng)
        assert len(pos) == 25 and len(set(pos)) == 25            # ceil(25% of 100), without replacement
        counts[pos] += 1
    x = 2.0 / 0.1
    assert np.allclose(p[50:] / p[0], 1 + x + x * x / 2)
    assert counts[50:].sum() > 0.95 * counts.sum()                 # high-gain half dominates


def test_reselection_schedule_and_records(small_prep, tmp_path):
    run = wb.Run(tmp_path / "r")
    s = IngeniousSampler(fraction=0.25, warm_start_steps=3, resample_every=4, recompute_every=8, partitions=2)
    model = wb.model("bert-tiny", vocab_size=len(small_prep.tokenizer), seed=0)
    seen = []
    res = wb.train(model, small_prep.train, sampler=s, budget=wb.Budget(max_steps=13), batch_size=4, run=run,
                   progress=False, callbacks=(lambda step, **_: seen.append((step, s.selections, s.last_gain_step)),))
    # selections at steps 3, 7, 11 (warm start 3, every 4); gains at 3 and 11 (recompute every 8)
    assert s.selections == 3 and s.last_gain_step == 11
    assert run.score_names() == ["ingenious_001", "ingenious_002", "ingenious_003"]
    rec = run.load_scores("ingenious_002")
    n = len(small_prep.train)
    assert int(rec["step"]) == 7 and len(rec["indices"]) == sum(int(np.ceil(0.25 * len(p))) for p in s.parts)
    assert len(set(rec["indices"].tolist())) == len(rec["indices"]) and rec["indices"].max() < n
    assert (rec["domains"] == np.asarray(small_prep.train.domains)[rec["indices"]]).all()
    st = s.stats()
    assert s.select_s > 0 and {k: st[k] for k in ("select_s", "selections", "subset")} == \
        {"select_s": s.select_s, "selections": 3, "subset": len(s.subset)}
    assert st["embedded_tokens"] == 2 * int(small_prep.train.lengths.sum()) and st["order_flops"] > 0   # gains twice
    # the authors' variant: layer at three quarters of bert-tiny's 2 layers (hidden_states[2]); one member of
    # each partition left unranked, and never drawn
    assert s.layer_used == 2 and int((~s.ranked).sum()) == len(s.parts)
    assert not set(np.flatnonzero(~s.ranked).tolist()) & set(s.subset.tolist())
    # after the warm start, every drawn example comes from the current subset
    sub = set(s.subset.tolist())
    assert set(s.next(3 * len(sub))) == sub


def test_stream_order_is_the_seeded_permutation(small_prep):
    # the EpochStream walks, epoch after epoch, the order the sampler always drew:
    # subset[default_rng([seed, selections, epoch, 77]).permutation(k)] (results stay bit-identical)
    s = IngeniousSampler(warm_start_steps=0, resample_every=5, partitions=2)
    s.setup(small_prep.train, seed=3)
    n = len(small_prep.train)
    assert s.next(n + 5) == (np.random.default_rng([3, 0, 0, 77]).permutation(n).tolist()
                             + np.random.default_rng([3, 0, 1, 77]).permutation(n)[:5].tolist())
    s.refresh(wb.model("bert-tiny", vocab_size=len(small_prep.tokenizer), seed=0), 0)
    k = len(s.subset)
    assert s.stream.state_dict() == {"epoch": 0, "pos": 0}                 # a selection restarts the stream
    want = [s.subset[np.random.default_rng([3, 1, e, 77]).permutation(k)] for e in (0, 1)]
    assert s.next(k + 3) == want[0].tolist() + want[1][:3].tolist()
    assert s.state_dict()["epoch"] == 1 and s.state_dict()["pos"] == 3


def test_sampler_resume_state(small_prep):
    s = IngeniousSampler(warm_start_steps=0, resample_every=5, partitions=2)
    s.setup(small_prep.train, seed=3)
    model = wb.model("bert-tiny", vocab_size=len(small_prep.tokenizer), seed=0)
    s.refresh(model, 0)
    s.next(7)
    t = IngeniousSampler(warm_start_steps=0, resample_every=5, partitions=2)
    t.setup(small_prep.train, seed=3)
    t.load_state_dict(s.state_dict())
    assert s.next(20) == t.next(20)
    assert np.array_equal(s.gains, t.gains)


def test_bad_sampler_params_are_refused():
    for bad in ({"fraction": 0}, {"fraction": 1.5}, {"partitions": 0}, {"temperature": 0}):
        with pytest.raises(ConfigError):
            IngeniousSampler(**bad)


def test_duplicate_fraction_counts_repeats_not_first_occurrences():
    assert duplicate_fraction(["a", "b", "a", "a"]) == 0.5       # the 2nd and 3rd "a" of four texts
    assert duplicate_fraction(["a", "b", "c"]) == 0.0
    assert duplicate_fraction([]) == 0.0


def test_ingenious_notebook_smoke(tmp_path):
    from workbench.cli import main
    assert main(["reproduce", "ingenious", "--scale", "smoke", "--out", str(tmp_path)]) == 0
    s = json.loads((tmp_path / "ingenious" / "summary.json").read_text())
    ex = s["extra"]
    assert s["metric"] == "eval_loss" and s["baseline"]["name"] == "random_online"
    assert s["method"]["name"] == "ingenious_authors"
    arms = ["full", "random_fixed", "random_online", "ingenious_authors", "ingenious_sharp"]
    for k in ("eval_loss", "probe_acc", "select_s"):
        assert list(ex[k]) == arms and all(isinstance(v, float) for v in ex[k].values())
    assert ex["duplicate_share"]["full"] is None and 0 <= ex["duplicate_share"]["random_online"] < 1
    assert ex["ingenious_config"]["ingenious_authors"]["temperature"] == 1.0
    assert ex["ingenious_config"]["ingenious_sharp"]["optimizer"] == "lazy"
    assert 0 < ex["selection_wall_fraction"] < 1 and 0 < ex["selection_flops_fraction"] < 1


# ------------------------------------------------------------------ variants, options, baselines (issue 18)
class _Emb:
    """A task whose examples are given feature rows (embed returns them)."""
    kind = "mlm"

    def __init__(self, X, domains=None):
        self.X = np.asarray(X, dtype=np.float32)
        self.domains = domains or ["d"] * len(self.X)

    def __len__(self):
        return len(self.X)

    def unmasked(self, idx):
        import torch
        return {"x": torch.from_numpy(self.X[idx]), "attention_mask": torch.ones(len(idx), 4)}

    def embed(self, model, batch, layer=-1):
        return batch["x"]


def _selected(X, seed=0, **kw):
    import torch
    s = IngeniousSampler(**{"fraction": 0.25, "warm_start_steps": 0, "partitions": 2, "layer": -1, **kw})
    s.setup(_Emb(X), seed=seed)
    s.refresh(torch.nn.Linear(2, 2), 0)
    return s


def test_variants_resolve_and_fields_override():
    from workbench.selection.ingenious import VARIANTS
    a = IngeniousSampler().config()
    assert (a["variant"], a["temperature"], a["center"], a["layer"], a["optimizer"], a["epsilon"], a["rank_all"]) \
        == ("authors", 1.0, False, None, "stochastic", 0.1, False)
    sh = IngeniousSampler(variant="sharp").config()
    assert (sh["temperature"], sh["center"], sh["layer"], sh["optimizer"], sh["rank_all"]) == (0.1, True, -1, "lazy", True)
    o = IngeniousSampler(variant="sharp", temperature=0.5, optimizer="stochastic").config()
    assert o["temperature"] == 0.5 and o["optimizer"] == "stochastic" and o["center"] is True
    assert set(VARIANTS) == {"authors", "sharp"}
    with pytest.raises(ConfigError, match="variant must be one of"):
        IngeniousSampler(variant="blunt")


def test_encoder_layer_is_three_quarters_of_the_depth():
    from types import SimpleNamespace as NS
    from workbench.selection.ingenious import encoder_layer
    assert [encoder_layer(NS(config=NS(num_hidden_layers=L))) for L in (2, 4, 12, 24)] == [2, 3, 9, 18]


def test_stochastic_greedy_is_seeded_and_reproducible():
    X = np.random.default_rng(0).normal(size=(200, 8))
    a, b, c = _selected(X, seed=1), _selected(X, seed=1), _selected(X, seed=2)
    assert np.array_equal(a.gains, b.gains) and np.array_equal(a.subset, b.subset)
    assert not np.array_equal(a.gains, c.gains)
    # all but one member of each partition ranked; the unranked member is never drawn
    assert int((~a.ranked).sum()) == 2 and not set(np.flatnonzero(~a.ranked)) & set(a.subset.tolist())
    assert len(a.subset) == sum(int(np.ceil(0.25 * len(p))) for p in a.parts)
    lazy = _selected(X, seed=1, optimizer="lazy", rank_all=True)
    assert lazy.ranked.all() and np.all(np.diff(lazy.gains[lazy.parts[0]][np.argsort(-lazy.gains[lazy.parts[0]])]) <= 0)


def test_kmeans_partitions_cover_every_point_once():
    from workbench.selection.ingenious import kmeans_partitions
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 6)) * 20
    X = np.concatenate([c + rng.normal(size=(40, 6)) for c in centres])
    parts = kmeans_partitions(X, 3, seed=0)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(120))
    assert len(parts) == 3 and all(len(p) for p in parts)
    assert np.array_equal(np.sort(np.concatenate(kmeans_partitions(X, 3, seed=0))), np.sort(np.concatenate(parts)))
    s = _selected(X, partitions=3, partition_strategy="kmeans")
    assert np.array_equal(np.sort(np.concatenate(s.parts)), np.arange(120))


def test_graph_cut_and_logdet_through_the_same_sampler():
    from workbench.selection.submodular import cosine_kernel, maximize
    X = np.abs(np.random.default_rng(3).normal(size=(40, 5)))   # a nonnegative kernel: graph cut is submodular
    K = cosine_kernel(X)
    for fn in ("gc", "logdet"):
        lazy, naive = maximize(X, 15, fn, "lazy"), maximize(X, 15, fn, "naive")
        assert np.array_equal(lazy.indices, naive.indices)
        np.testing.assert_allclose(lazy.gains, naive.gains, rtol=1e-6)
        st1, st2 = maximize(X, 15, fn, "stochastic", seed=4), maximize(X, 15, fn, "stochastic", seed=4)
        assert np.array_equal(st1.indices, st2.indices)
    S = maximize(X, 10, "logdet", "lazy")
    sub = S.indices
    want = [np.linalg.slogdet(K[np.ix_(sub[:t], sub[:t])] + np.eye(t))[1] for t in range(1, 11)]
    np.testing.assert_allclose(np.cumsum(S.gains), want, rtol=1e-5, atol=1e-5)   # gains are log-det increments
    G = maximize(X, 10, "gc", "lazy")
    S = G.indices
    np.testing.assert_allclose(G.objective, K[:, S].sum() - 0.4 * K[np.ix_(S, S)].sum(), rtol=1e-9)
    np.testing.assert_allclose(np.sum(G.gains), G.objective, rtol=1e-5)
    for fn in ("gc", "logdet"):
        s = _selected(np.random.default_rng(0).normal(size=(60, 4)), function=fn)
        assert len(s.subset) == sum(int(np.ceil(0.25 * len(p))) for p in s.parts)


def test_random_online_redraws_every_R_steps():
    from workbench.training import RandomOnlineSampler
    data = _Emb(np.zeros((100, 2)))
    s = RandomOnlineSampler(0.25, warm_start_steps=3, resample_every=4)
    s.setup(data, seed=0)
    subsets = []
    for step in range(12):
        s.refresh(None, step)
        if step < 3:
            assert s.subset is None and len(s.pool) == 100            # the warm start: the full data
        subsets.append(None if s.subset is None else s.subset.copy())
        s.next(8)
    assert s.draws == 3                                                # at steps 3, 7 and 11
    assert all(np.array_equal(subsets[3], subsets[k]) for k in (4, 5, 6))
    assert not np.array_equal(subsets[3], subsets[7]) and len(subsets[7]) == 25
    assert set(s.next(17 + 25)) == set(s.subset.tolist())          # the rest of this epoch and the next
    t = RandomOnlineSampler(0.25, warm_start_steps=3, resample_every=4)
    t.setup(data, seed=0)
    t.load_state_dict(s.state_dict())
    assert t.next(30) == s.next(30) and t.draws == 3


def test_redundancy_copies_are_recorded_and_eval_is_untouched():
    from workbench.config import parse
    from workbench.data.redundancy import add_redundancy, group_ids
    from workbench.recipes import ingenious as R
    import workbench as wb
    c = wb.corpus("pydocs:datasets")
    r, dup_of = add_redundancy(c, 0.3, seed=0)
    n = len(c)
    src = dup_of[n:]
    assert (dup_of[:n] == -1).all() and (src >= 0).all() and len(set(src.tolist())) == round(0.3 * n)
    counts = np.bincount(src)
    assert set(counts[counts > 0].tolist()) <= {2, 3, 4}
    assert r.texts[:n] == c.texts and len(set(r.ids)) == len(r)
    assert all(r.domains[i] == c.domains[j] for i, j in zip(range(n, len(r)), src))
    assert sum(r.texts[i] != c.texts[j] for i, j in zip(range(n, len(r)), src)) > 0.9 * len(src)  # perturbed
    exact, _ = add_redundancy(c, 0.3, seed=0, perturb=0.0)
    assert all(exact.texts[i] == c.texts[j] for i, j in zip(range(n, len(r)), src))
    assert np.array_equal(group_ids(dup_of)[n:], src)
    P = parse(R.Params, {"corpus": "pydocs:datasets,deepspeed", "redundancy": 0.3, "vocab_size": 1024, "seq_len": 64})
    prep, d = R.prepare_data(P)
    assert len(prep.train) == len(d) > len(prep.train_corpus.texts) - (d >= 0).sum()
    assert not any("~dup" in i for i in prep.eval_corpus.ids)                      # held-out documents stay unseen
    assert R.duplicate_share(R.example_keys(prep.train, d)) > 0.3


def test_linear_probe_features_ignore_padding_and_separate_domains(small_prep):
    """``training.finetune.linear_probe`` (the INGENIOUS probe, shared with the budget recipe): mean-pooled
    body features do not depend on how much padding a batch carries, and a logistic regression on them
    beats the majority class on package classification of unseen documents."""
    import numpy as np

    from workbench.training.finetune import domain_task, encoder_features, linear_probe
    task = domain_task("pydocs:datasets,deepspeed", small_prep.tokenizer, seq_len=64, max_per_class=60, seed=0,
                       exclude_ids=set(small_prep.train_corpus.ids))
    X = encoder_features(small_prep.model, task, batch_size=128)
    X1 = encoder_features(small_prep.model, task, batch_size=1)          # no padding at all in each batch
    assert X.shape == (len(task.labels), small_prep.model.config.hidden_size)
    assert np.allclose(X, X1, atol=1e-5)
    acc = linear_probe(small_prep.model, task)
    assert acc > task.describe()["majority_acc"]
