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
    assert s.select_s > 0 and s.stats() == {"select_s": s.select_s, "selections": 3, "subset": len(s.subset)}
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
    assert s["metric"] == "eval_loss" and s["baseline"]["name"] == "random 25%"
    for k in ("full_data_eval_loss", "quality_vs_full", "selection_wall_fraction", "duplicate_fraction_selected",
              "duplicate_fraction_corpus"):
        assert k in ex
    assert 0 < ex["selection_wall_fraction"] < 1
