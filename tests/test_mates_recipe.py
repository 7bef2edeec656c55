import json

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.errors import ConfigError
from workbench.recipes.mates import lambada_eval, lambada_style
from workbench.selection.mates import MatesSampler


def test_stage_bookkeeping(small_prep_clm, tmp_path):
    p = small_prep_clm
    model = wb.model("gpt2-tiny", vocab_size=len(p.tokenizer), seed=0)
    from workbench.training import make_optimizer
    opt = make_optimizer(model, 1e-3)
    ref = torch.from_numpy(p.eval.input_ids[:4].astype(np.int64))
    s = MatesSampler(opt, ref, stage_steps=3, fraction=0.2, probe_size=12, im_epochs=1)
    run = wb.Run(tmp_path / "r")
    wb.train(model, p.train, sampler=s, optimizer=opt, budget=wb.Budget(max_steps=7), batch_size=4, run=run,
             progress=False)
    assert [r["stage"] for r in s.per_stage] == [0, 1, 2] and [r["step"] for r in s.per_stage] == [0, 3, 6]
    k = round(0.2 * len(p.train))
    assert all(r["selected"] == k for r in s.per_stage)
    st1 = run.load_scores("mates_stage_001")
    assert len(st1["indices"]) == k and len(st1["oracle"]) == 12 and len(st1["predicted"]) == len(p.train)
    assert "spearman_val" in s.per_stage[1] and "predicted" not in run.load_scores("mates_stage_000")
    assert s.stats()["select_s"] > 0
    # selection ranks the influence model's z-units (temperature in oracle standard deviations), not raw loss
    # differences of ~1e-3, beside which the unit Gumbel noise would make the draw uniform
    rec = s.per_stage[1]
    z = (st1["predicted"] - rec["score_mean"]) / rec["score_std"]
    assert rec["predicted_z_std"] == pytest.approx(np.std(z), rel=1e-6)
    assert float(st1["score_std"]) == pytest.approx(rec["score_std"])
    drawn = set(s.next(3 * k))
    assert drawn == set(s.subset.tolist())                  # training draws only from the stage's selection


def test_influence_cross_validation_is_measurement_only(small_prep_clm):
    """im_cv_folds adds an out-of-fold Spearman per stage and changes nothing the run selects or trains on."""
    p = small_prep_clm
    from workbench.training import make_optimizer
    out = {}
    for folds in (0, 3):
        model = wb.model("gpt2-tiny", vocab_size=len(p.tokenizer), seed=0)
        opt = make_optimizer(model, 1e-3)
        ref = torch.from_numpy(p.eval.input_ids[:4].astype(np.int64))
        s = MatesSampler(opt, ref, stage_steps=3, fraction=0.2, probe_size=12, im_epochs=1, im_cv_folds=folds)
        wb.train(model, p.train, sampler=s, optimizer=opt, budget=wb.Budget(max_steps=7), batch_size=4, progress=False)
        out[folds] = (s, s.subset.copy(), [q.detach().clone() for q in model.parameters()])
    (s0, sub0, w0), (s3, sub3, w3) = out[0], out[3]
    np.testing.assert_array_equal(sub0, sub3)
    assert all(torch.equal(a, b) for a, b in zip(w0, w3))
    assert "spearman_cv" not in s0.per_stage[1] and s0.diagnostic_wall_s == 0
    rec = s3.per_stage[1]
    assert -1 <= rec["spearman_cv"] <= 1 and len(rec["spearman_cv_folds"]) == 3 and s3.diagnostic_wall_s > 0
    with pytest.raises(ConfigError):
        MatesSampler(None, torch.zeros(1, 4, dtype=torch.long), probe_size=12, im_cv_folds=4)


def test_lambada_items(small_prep_clm):
    items = lambada_style(small_prep_clm.eval_corpus, small_prep_clm.tokenizer, 32, n=10)
    assert 0 < len(items) <= 10 and all(len(c) > 0 and len(t) > 0 for c, t in items)
    m = wb.model("gpt2-tiny", vocab_size=len(small_prep_clm.tokenizer), seed=0)
    r = lambada_eval(m, items)
    assert r["lambada_loss"] > 0 and 0 <= r["lambada_acc"] <= 1


def test_bad_params():
    with pytest.raises(ConfigError):
        MatesSampler(None, torch.zeros(1, 4, dtype=torch.long), method="best")
    with pytest.raises(ConfigError):
        MatesSampler(None, torch.zeros(1, 4, dtype=torch.long), probe_size=2)


def test_mates_notebook_smoke(tmp_path):
    from workbench.cli import main
    assert main(["reproduce", "mates", "--scale", "smoke", "--out", str(tmp_path)]) == 0
    s = json.loads((tmp_path / "mates" / "summary.json").read_text())
    assert s["metric"] == "flops_to_target" and s["baseline"]["name"] == "random" and not s["higher_is_better"]
    for k in ("spearman_val", "spearman_cv", "selection_flops_fraction", "selection_wall_fraction", "per_stage",
              "reference_loss", "flops_curves", "influence_models", "target_reference_loss", "total_flops"):
        assert k in s["extra"]
    e = s["extra"]
    assert s["baseline"]["value"] <= e["total_flops"]["random"]        # random reaches its own final loss
    assert e["options"]["clip_probes"] is True and e["variant"] == "authors"
    curve = e["flops_curves"]["mates"]
    assert curve[-1]["total_flops"] == pytest.approx(e["total_flops"]["mates"], rel=0.05)   # selection FLOPs included
    assert set(e["influence_models"]) >= {"bert", "ridge"} and e["influence_models"]["ridge"] is not None
    assert len(s["extra"]["spearman_cv_per_stage"]) == len(s["extra"]["spearman_val_per_stage"]) > 0
    assert 0 < s["extra"]["selection_flops_fraction"] < 1


def test_selection_follows_predictions_whatever_their_scale(small_prep_clm, monkeypatch):
    """Gumbel top-k sees z-scores: scaling the oracle by 1e-4 must not turn MATES into random selection."""
    p = small_prep_clm
    n = len(p.train)
    s = MatesSampler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1), torch.zeros(1, 4, dtype=torch.long),
                     stage_steps=1, fraction=0.2, probe_size=8, temperature=0.5, warm_start=True)
    s.setup(p.train, seed=0)
    s.stage = 1

    class Fixed:                      # an influence model whose predictions are known: tiny raw scale
        score_mean, score_std = -3e-4, 1e-4
        spearman_val = 1.0

        def predict(self, blocks, standardized=False):
            z = np.linspace(-1.5, 1.5, len(blocks))
            return z if standardized else z * self.score_std + self.score_mean

    s.im = Fixed()
    s.im.fit = lambda *a, **k: None
    monkeypatch.setattr("workbench.selection.mates.batched_probe", lambda model, opt, cand, ref, chunk_size=16, **kw:
                        np.zeros(len(cand)))                  # the probes' values do not matter here
    chosen, pred = s._select(torch.nn.Linear(1, 1), np.arange(n), max(1, n // 5), np.random.default_rng(0), {})
    z = np.linspace(-1.5, 1.5, n)
    # most negative predicted influence is wanted: the kept set's mean z is well below the pool's 0
    assert z[chosen].mean() < -0.5


# ----------------------------------------------------------------------------------- the reference task as data

def _params(tmp_path, **kw):
    from workbench.config import parse
    from workbench.recipes.mates import Params
    base = dict(scale="smoke", out_dir=str(tmp_path / "out"), corpus="pydocs:datasets,papermill",
                reference_package="papermill", seq_len=32, vocab_size=1024, max_steps=4, batch_size=4,
                stage_steps=2, probe_size=8, im_epochs=1, ref_blocks=2, im_cv_folds=0, warmup=0.0)
    return parse(Params, {**base, **kw})


def test_params_check_the_reference_without_reading_a_corpus(tmp_path):
    with pytest.raises(ConfigError, match=r"reference: corpus '.*nope.txt' not found"):
        _params(tmp_path, reference=str(tmp_path / "nope.txt"))
    with pytest.raises(ConfigError, match=r"reference_package 'deepspeed' is not a package of corpus "
                                          r"'pydocs:datasets,papermill'; packages: datasets, papermill"):
        _params(tmp_path, reference_package="deepspeed")
    with pytest.raises(ConfigError, match=r"only package"):
        _params(tmp_path, corpus="pydocs:papermill")
    with pytest.raises(ConfigError, match=r"corpus: corpus '.*missing.jsonl' not found"):
        _params(tmp_path, corpus=str(tmp_path / "missing.jsonl"))
    with pytest.raises(ConfigError, match=r"'bert-tiny' is a masked-LM"):
        _params(tmp_path, model="bert-tiny")
    # with reference= the package is not needed (nothing is held out)
    f = tmp_path / "ref.txt"
    f.write_text("some text")
    assert _params(tmp_path, reference=str(f), reference_package="whatever").reference == str(f)


def test_unknown_domain_of_a_file_corpus_lists_the_domains_before_training(tmp_path):
    from workbench.recipes.mates import check_reference
    rows = [{"text": f"document {i} " * 20, "domain": d} for i, d in enumerate(["alpha", "beta"] * 10)]
    f = tmp_path / "c.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows))
    P = _params(tmp_path, corpus=str(f), reference_package="gamma")      # a file: checked when read
    with pytest.raises(ConfigError, match=r"reference_package 'gamma' is not a domain of corpus .*c.jsonl'; "
                                          r"domains present: alpha, beta"):
        check_reference(P)
    c, ref = check_reference(_params(tmp_path, corpus=str(f), reference_package="beta"))
    assert ref is None and len(c) == 20


def test_reference_from_a_text_file_trains(tmp_path):
    """reference= a text file: tokenized with the run's tokenizer, nothing held out of the training corpus."""
    from workbench.recipes.mates import prepare_mates, run_method
    f = tmp_path / "mine.txt"
    f.write_text("\n\n".join(f"Note {i}. A reference task of my own: load the data set, split it, and report "
                             f"the mean of every column before and after the transform." for i in range(60)))
    P = _params(tmp_path, reference=str(f))
    S = prepare_mates(P)
    prep, ref, lam = S.prep, S.ref_eval, S.lambada
    assert prep.holdout_corpus is None and "papermill" in set(prep.train_corpus.domains)
    assert ref.shape[1] == 32 and 0 < len(ref) <= 256 and int(ref.max()) < len(prep.tokenizer) and lam
    mr = run_method(P, "mates")
    assert len(mr.per_stage) == 2 and np.isfinite(mr.reference_loss)
    short = tmp_path / "short.txt"
    short.write_text("tiny\n\nalso tiny")        # two documents: one per half, each too short
    with pytest.raises(ConfigError, match=r"reference task '.*short.txt': .*fewer than 32 tokens"):
        prepare_mates(_params(tmp_path, reference=str(short)))
