"""Tests for MATES: oracle probers, influence model, Gumbel top-k, and the staged sampler's stream and resume."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from scipy.stats import chisquare, spearmanr

import workbench as wb
from workbench.errors import ConfigError
from workbench.selection.influence_model import InfluenceModel
from workbench.selection.mates import MatesError, MatesSampler, batched_probe, gumbel_topk, naive_probe

V, T = 128, 16


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=V, n_positions=T, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(cfg)


def _neox():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    cfg = GPTNeoXConfig(
        vocab_size=V,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=T,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPTNeoXForCausalLM(cfg)


def _train(model, opt, steps, seed=1):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randint(0, V, (4, T), generator=g)
        opt.zero_grad(set_to_none=True)
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)


def _data(n=6, r=3, seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (n, T), generator=g), torch.randint(0, V, (r, T), generator=g)


def _snapshot(model, opt):
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    state = {id(p): {k: (v.clone() if torch.is_tensor(v) else v) for k, v in s.items()} for p, s in opt.state.items()}
    return params, state


def _assert_untouched(model, opt, snap):
    params, state = snap
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), params[n]), n
    assert set(state) == {id(p) for p in opt.state}
    for p, s in opt.state.items():
        for k, v in s.items():
            ref = state[id(p)][k]
            assert torch.equal(v, ref) if torch.is_tensor(v) else v == ref


def _check_match(model, opt, chunk_size=4):
    cands, ref = _data()
    model.train()  # probing must switch dropout off and restore the mode
    snap = _snapshot(model, opt)
    a = naive_probe(model, opt, cands, ref)
    _assert_untouched(model, opt, snap)
    b = batched_probe(model, opt, cands, ref, chunk_size=chunk_size)
    _assert_untouched(model, opt, snap)
    assert model.training
    assert a.dtype == np.float64 and b.dtype == np.float64 and a.shape == (len(cands),)
    assert np.abs(a).max() > 1e-4  # the step visibly changes the reference loss
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-4)
    return a, b


@pytest.mark.parametrize("steps,nesterov", [(0, False), (2, False), (2, True)])
def test_sgd_matches_naive_gpt2(steps, nesterov):
    model = _gpt2()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, nesterov=nesterov, weight_decay=0.01)
    _train(model, opt, steps)
    if steps:
        assert all("momentum_buffer" in s for s in opt.state.values())
    _check_match(model, opt)


def test_adamw_matches_naive_gpt2_tied_and_frozen():
    model = _gpt2()
    assert model.lm_head.weight is model.transformer.wte.weight  # tied weights exercised
    model.transformer.wpe.weight.requires_grad_(False)  # frozen parameter exercised
    groups = [
        {"params": [p for n, p in model.named_parameters() if "ln" not in n], "weight_decay": 0.1},
        {"params": [p for n, p in model.named_parameters() if "ln" in n], "weight_decay": 0.0, "lr": 3e-3},
    ]
    opt = torch.optim.AdamW(groups, lr=1e-2, betas=(0.9, 0.95), eps=1e-6)
    _train(model, opt, 3)
    assert float(opt.state[model.transformer.wte.weight]["step"]) == 3
    _check_match(model, opt, chunk_size=4)  # 6 candidates: a full and a partial chunk


def test_adamw_first_step_and_neox():
    model = _neox()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    _check_match(model, opt)  # empty state: torch's first step
    _train(model, opt, 2)
    _check_match(model, opt, chunk_size=6)


def test_probe_errors():
    model = _gpt2()
    cands, ref = _data()
    with pytest.raises(MatesError):
        batched_probe(model, torch.optim.RMSprop(model.parameters()), cands, ref)
    with pytest.raises(MatesError):
        naive_probe(model, torch.optim.Adagrad(model.parameters()), cands, ref)
    with pytest.raises(MatesError):
        batched_probe(model, torch.optim.AdamW(model.parameters(), amsgrad=True), cands, ref)
    opt = torch.optim.AdamW(model.parameters())
    for bad in (cands[:0], [], torch.zeros(T, dtype=torch.long), cands.float()):
        with pytest.raises(MatesError):
            batched_probe(model, opt, bad, ref)
    with pytest.raises(MatesError):
        naive_probe(model, opt, [], ref)
    with pytest.raises(MatesError):
        batched_probe(model, opt, cands, ref, chunk_size=0)
    assert issubclass(MatesError, ValueError)


# ----------------------------------------------------------------- influence model


def _regression_data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 64, (n, 12))
    y = 500.0 + 40.0 * (x < 16).mean(1) + rng.normal(0, 0.5, n)  # learnable, far from N(0, 1)
    return x, y


def _small_model():
    return InfluenceModel(64, hidden=32, layers=1, heads=2, max_len=32)


def test_influence_model_zscore_and_best_epoch():
    x, y = _regression_data()
    im = _small_model().fit(x, y, epochs=5, lr=2e-3, batch_size=16, seed=0)
    val = im.val_indices
    train = np.setdiff1d(np.arange(len(y)), val)
    assert len(val) == 12 and len(train) == 108  # seeded 90/10 split
    assert im.score_mean == pytest.approx(y[train].mean()) and im.score_std == pytest.approx(y[train].std())
    # predictions come back on the score scale: head output * std + mean
    raw = im._raw_predict(*im._encode(x[:10]), batch_size=8)
    np.testing.assert_allclose(im.predict(x[:10]), raw * im.score_std + im.score_mean)
    np.testing.assert_allclose(im.predict(x[:10], standardized=True), raw)   # the fitted z-units
    assert abs(im.predict(x).mean() - y.mean()) < 2 * y.std()
    # the kept checkpoint is the best-validation-Spearman epoch
    assert len(im.val_spearmans) == len(im.train_losses) == 5
    assert im.best_epoch == int(np.nanargmax(im.val_spearmans))
    assert im.spearman_val == max(im.val_spearmans)
    rho = spearmanr(im.predict(x[val]), y[val]).statistic
    assert rho == pytest.approx(im.spearman_val, abs=1e-9)
    assert im.train_losses[-1] < im.train_losses[0]
    assert im.metrics["best_epoch"] == im.best_epoch


def test_influence_model_warm_start_and_errors():
    x, y = _regression_data(60)
    im = _small_model().fit(x, y, epochs=1, seed=0)
    before = im.predict(x)
    im.fit(x, y, epochs=1, lr=0.0, seed=0, warm_start=True)  # lr 0: weights must be kept
    np.testing.assert_allclose(im.predict(x), before, rtol=1e-6)
    cold = _small_model().fit(x, y, epochs=1, lr=0.0, seed=5)
    assert not np.allclose(cold.predict(x), before)
    with pytest.raises(MatesError):
        _small_model().predict(x)
    with pytest.raises(MatesError):
        _small_model().fit(x, np.full(len(x), 3.0))
    with pytest.raises(MatesError):
        _small_model().fit(x, y[:-1])
    with pytest.raises(MatesError):
        _small_model().fit(x[:3], y[:3])


def test_influence_model_cross_validation_is_out_of_fold():
    x, y = _regression_data()
    im = _small_model().fit(x, y, epochs=1, seed=0)
    before = im.predict(x)
    cv = im.cross_validate(x, y, folds=4, epochs=8, lr=5e-3, batch_size=16, seed=1)
    np.testing.assert_allclose(im.predict(x), before)         # the model itself is untouched
    assert len(cv["predictions"]) == len(y) and len(cv["fold_spearmans"]) == 4
    assert cv["spearman_pooled"] == pytest.approx(spearmanr(cv["predictions"], y).statistic)
    assert cv["spearman"] == pytest.approx(np.mean(cv["fold_spearmans"]))
    assert cv["spearman"] > 0.5                                 # a learnable target generalises across folds
    # each held-out fold was predicted by a model fitted on the other folds only: refitting fold 0 by hand
    # (same permutation and seed as cross_validate) reproduces its predictions
    order = np.random.default_rng(1).permutation(len(y))
    held = np.array_split(order, 4)[0]
    keep = np.setdiff1d(order, held)
    clone = _small_model().fit(x[keep], y[keep], epochs=8, lr=5e-3, batch_size=16, seed=2)
    np.testing.assert_allclose(cv["predictions"][held], clone.predict(x[held]), rtol=1e-5)
    assert cv["fold_spearmans"][0] == pytest.approx(spearmanr(clone.predict(x[held]), y[held]).statistic)
    # noise targets: nothing to learn, the out-of-fold correlation stays small (the in-sample one would not)
    noise = np.random.default_rng(0).normal(size=len(y))
    assert abs(_small_model().cross_validate(x, noise, folds=4, epochs=8, lr=5e-3, seed=1)["spearman"]) < 0.2
    with pytest.raises(MatesError):
        im.cross_validate(x, y, folds=1)
    with pytest.raises(MatesError):
        im.cross_validate(x[:5], y[:5], folds=4)


# ----------------------------------------------------------------- gumbel top-k


def test_gumbel_topk_low_temperature_is_topk():
    rng = np.random.default_rng(0)
    s = rng.normal(size=50)
    want = np.argsort(-s)[:7]
    np.testing.assert_array_equal(gumbel_topk(s, 7, temperature=0.0), want)
    for seed in range(5):
        got = gumbel_topk(s, 7, temperature=1e-9, seed=seed)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(gumbel_topk([1.0, 2.0, 2.0, 0.0], 2, temperature=0), [1, 2])  # ties: lower index


def test_gumbel_topk_samples_plackett_luce():
    s = np.array([1.0, 0.5, 0.0, -0.5, -2.0])
    p = np.exp(s) / np.exp(s).sum()
    n = 4000
    first = np.array([gumbel_topk(s, 2, temperature=1.0, seed=i)[0] for i in range(n)])
    counts = np.bincount(first, minlength=len(s))
    assert chisquare(counts, p * n).pvalue > 1e-3
    picks = gumbel_topk(s, 5, temperature=1.0, generator=np.random.default_rng(3))
    assert sorted(picks.tolist()) == list(range(5))  # without replacement
    a = gumbel_topk(s, 3, seed=11)
    np.testing.assert_array_equal(a, gumbel_topk(s, 3, seed=11))
    assert len(gumbel_topk(s, 0, seed=1)) == 0


def test_gumbel_topk_errors():
    with pytest.raises(MatesError):
        gumbel_topk([1.0, 2.0], 3)
    with pytest.raises(MatesError):
        gumbel_topk([], 1)
    with pytest.raises(MatesError):
        gumbel_topk([1.0, np.nan], 1)
    with pytest.raises(MatesError):
        gumbel_topk([1.0, 2.0], 1, temperature=-1.0)
    with pytest.raises(MatesError):
        gumbel_topk([1.0, 2.0], -1)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_bench_probe_prints_json_with_the_machine_bound(optimizer, capsys):
    import json

    from workbench.cli import main
    procs = "2" if optimizer == "sgd" else "0"        # the spawned one-process-per-core line: once
    args = ["bench", "probe", "--json", "--candidates", "6", "--layers", "1", "--hidden", "32", "--heads", "2",
            "--seq-len", "16", "--vocab", "128", "--ref-size", "2", "--chunk-size", "3", "--repeats", "1",
            "--optimizer", optimizer, "--threads", "2", "--processes", procs, "--peak-seconds", "0.2"]
    assert main(args) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["candidates"] == 6 and r["optimizer"] == optimizer and r["interleaved"] is True
    assert r["max_abs_diff"] <= 1e-4 and r["influence_abs_max"] > 0   # the probers agree on non-zero influences
    assert r["batched_probes_per_s"] > 0 and r["naive_probes_per_s"] > 0
    # one thread and all cores, both probers
    assert r["threads"] == 1 and r["all_core_threads"] == 2
    for k in ("naive_1t_probes_per_s", "batched_1t_probes_per_s", "naive_allcore_probes_per_s",
              "batched_allcore_probes_per_s"):
        assert r[k] > 0
    assert r["naive_1t_probes_per_s"] == r["naive_probes_per_s"]
    if procs == "2":      # naive, one process per core: aggregate over the processes
        assert r["naive_per_process_processes"] == 2 and r["naive_per_process_probes_per_s"] > 0
    else:
        assert "naive_per_process_probes_per_s" not in r
    # the bound is the measured one-thread GEMM peak over the naive one-thread prober's measured rate
    naive_gflops = r["gflop_per_probe"] * r["naive_probes_per_s"]
    assert r["peak_gflops"] > 0 and r["speedup_bound"] == pytest.approx(r["peak_gflops"] / naive_gflops, rel=1e-6)
    assert r["gemm_bound_probes_per_s_per_core"] == pytest.approx(r["peak_gflops"] / r["gflop_per_probe"])
    assert r["load_avg"] is None or r["load_avg"] >= 0
    assert "wins" in r["verdict"] or "loses" in r["verdict"]


def test_bench_probe_defaults_are_the_mates_tiny_notebook_sizes():
    import argparse

    import yaml

    from workbench.bench.probe import add_arguments
    from workbench.models.presets import SIZES
    from workbench.recipes.mates import MatesParams
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    a = parser.parse_args([])
    tiny = yaml.safe_load(open(os.path.join(os.path.dirname(__file__), "..", "papers", "mates", "tiny.yaml")))
    layers, hidden, heads, _ = SIZES[MatesParams().model.split("-")[1]]
    assert (a.layers, a.hidden, a.heads) == (layers, hidden, heads)
    assert (a.vocab, a.seq_len, a.ref_size) == (tiny["vocab_size"], tiny["seq_len"], tiny["ref_blocks"])


def test_prober_auto_resolves_as_documented():
    from workbench.selection.mates import AUTO_BATCHED_MAX_PARAMS, resolve_prober
    small = _gpt2()                                    # ~40k parameters: per-call overhead dominates
    assert sum(p.numel() for p in small.parameters()) < AUTO_BATCHED_MAX_PARAMS
    assert resolve_prober("auto", small) == "batched"
    from transformers import GPT2Config, GPT2LMHeadModel
    notebook = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=128, n_head=2, vocab_size=4096, n_positions=64))
    assert resolve_prober("auto", notebook) == "naive"          # gpt2-tiny at V 4096 on a CPU
    assert resolve_prober("batched", notebook) == "batched" and resolve_prober("naive", small) == "naive"
    with pytest.raises(ConfigError):
        resolve_prober("fast", small)
    with pytest.raises(ConfigError):
        MatesSampler(None, torch.zeros(1, T, dtype=torch.long), prober="fast")
    from workbench.recipes.mates import MatesParams
    assert MatesParams().prober == "auto"
    with pytest.raises(ConfigError):
        MatesParams(prober="fast")


# ----------------------------------------------------------------- the staged sampler: stream, state, resume


def test_influence_model_state_round_trip():
    """state_dict holds the spec, the weights as numpy arrays and the z-scoring constants; the rebuilt model
    predicts the same and continues a warm-started fit exactly as the original does."""
    x, y = _regression_data(60)
    im = _small_model().fit(x, y, epochs=2, seed=0)
    st = im.state_dict()
    assert all(isinstance(v, np.ndarray) for v in st["weights"].values())
    assert st["score_mean"] == im.score_mean and st["score_std"] == im.score_std and st["spec"]["hidden"] == 32
    rng_before = torch.get_rng_state()
    back = InfluenceModel.from_state_dict(st)
    assert torch.equal(torch.get_rng_state(), rng_before)          # rebuilding draws nothing from the global RNG
    np.testing.assert_array_equal(back.predict(x), im.predict(x))
    assert back.metrics == im.metrics
    im.fit(x, y[::-1].copy(), epochs=1, seed=3, warm_start=True)
    back.fit(x, y[::-1].copy(), epochs=1, seed=3, warm_start=True)
    np.testing.assert_array_equal(back.predict(x), im.predict(x))
    assert InfluenceModel.from_state_dict(_small_model().state_dict()).net is None   # unfitted: no weights
    with pytest.raises(MatesError):
        InfluenceModel(64, hidden=16, layers=1, heads=2, max_len=32).load_state_dict(st)


def test_influence_model_does_not_import_mates():
    """No cycle: selection/mates.py imports selection/influence_model.py, never the other way round."""
    import ast
    import inspect

    import workbench.selection.influence_model as im_mod
    names = set()
    for node in ast.walk(ast.parse(inspect.getsource(im_mod))):
        if isinstance(node, ast.ImportFrom):
            names.add(("." * node.level) + (node.module or ""))
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    assert not any("mates" in n for n in names), names


def _ref(p):
    return torch.from_numpy(p.eval.input_ids[:4].astype(np.int64))


def test_sampler_streams_each_stage_in_seeded_epochs(small_prep_clm):
    """The stream is the stage's selection in the order default_rng([seed, stage, epoch, 31]), epoch after
    epoch (as before EpochStream), restarts at each stage, and resumes from its saved position."""
    p = small_prep_clm
    s = MatesSampler(None, _ref(p), stage_steps=2, fraction=0.1, probe_size=8, method="random")
    s.setup(p.train, seed=3)
    with pytest.raises(ConfigError, match="before its first selection"):
        s.next(1)
    s.refresh(None, 0)
    sub = s.subset.copy()
    k = len(sub)
    want = np.concatenate([sub[np.random.default_rng([3, 0, e, 31]).permutation(k)] for e in range(3)])
    got = s.next(k + 5)
    assert got == want[: k + 5].tolist()
    st = s.state_dict()
    again = MatesSampler(None, _ref(p), stage_steps=2, fraction=0.1, probe_size=8, method="random")
    again.setup(p.train, seed=3)
    again.load_state_dict(st)
    assert again.next(k) == s.next(k) == want[k + 5: 2 * k + 5].tolist()
    s.refresh(None, 1)                                   # not a stage boundary: nothing changes
    assert s.stage == 0
    s.refresh(None, 2)
    sub1 = s.subset.copy()
    assert s.stage == 1 and not np.array_equal(sub1, sub)
    assert s.next(k) == sub1[np.random.default_rng([3, 1, 0, 31]).permutation(len(sub1))][:k].tolist()
    st = s.stats()
    assert st["stages"] == 2 and st["select_s"] > 0 and st["selected"] == len(sub1)


def _mates_run(p, path, *, resume=False, crash_at=None, steps=10, **kw):
    from workbench.training import make_optimizer

    class Crash(Exception):
        pass

    def crash(step, **_):
        if step == crash_at:
            raise Crash()
    model = wb.model("gpt2-tiny", vocab_size=len(p.tokenizer), seed=0)
    opt = make_optimizer(model, 1e-3)
    s = MatesSampler(opt, _ref(p), stage_steps=3, fraction=0.2, probe_size=12, im_epochs=2, im_hidden=32, im_layers=1,
                     **kw)
    try:
        res = wb.train(model, p.train, sampler=s, optimizer=opt, budget=wb.Budget(max_steps=steps), batch_size=4,
                       run=wb.Run(path, resume=resume), checkpoint_every=3, seed=1, progress=False,
                       callbacks=(crash,))
    except Crash:
        return None, s
    return res, s


def test_resumed_mates_run_selects_and_trains_as_an_uninterrupted_one(small_prep_clm, tmp_path):
    """Stopped after the stage-1 checkpoint (step 6) and resumed, a MATES run selects stage 2 from the checkpointed
    state: the same pools, selections, predictions and final weights as a run never stopped. The authors' defaults
    (clipped probes, a new disjoint pool each stage) with the influence model warm-started, the case where the
    checkpointed influence model matters (re-initialised each stage, the default, it is rebuilt from the seed)."""
    from safetensors.torch import load_file
    p = small_prep_clm
    kw = dict(pool_size=len(p.train) // 4, warm_start=True)
    full, fs = _mates_run(p, tmp_path / "full", **kw)
    _, killed = _mates_run(p, tmp_path / "part", crash_at=8, **kw)
    assert killed.stage == 2                                     # it got past the stage boundary it resumes before
    part, ps = _mates_run(p, tmp_path / "part", resume=True, **kw)
    assert part.step == full.step == 10 and ps.stage == fs.stage == 3
    runs = {k: wb.Run.open(tmp_path / k) for k in ("full", "part")}
    names = [n for n in runs["full"].score_names() if n.startswith("mates_stage_")]
    assert names == [f"mates_stage_{i:03d}" for i in range(4)] == \
        [n for n in runs["part"].score_names() if n.startswith("mates_stage_")]
    for n in names:
        a, b = runs["full"].load_scores(n), runs["part"].load_scores(n)
        assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a), n
    assert "predicted" in runs["part"].load_scores("mates_stage_002")   # the resumed process selected stage 2
    w_full, w_part = (load_file(tmp_path / k / "model.safetensors") for k in ("full", "part"))
    assert all(torch.equal(w_full[k], w_part[k]) for k in w_full)
    timing = ("wall_s", "im_cv_wall_s")
    strip = lambda recs: [{k: v for k, v in r.items() if k not in timing} for r in recs]   # noqa: E731
    assert strip(ps.per_stage) == strip(fs.per_stage) and len(ps.per_stage) == 4
    np.testing.assert_array_equal(ps.im.predict(p.train.input_ids[:16]), fs.im.predict(p.train.input_ids[:16]))


# --------------------------------------------------------------------------- up-front checks and the reference task

def _sampler_run(p, model, sampler_opt, train_opt, steps=4):
    s = MatesSampler(sampler_opt, _ref(p), stage_steps=2, fraction=0.2, probe_size=8, im_epochs=1)
    wb.train(model, p.train, sampler=s, optimizer=train_opt, budget=wb.Budget(max_steps=steps), batch_size=4,
             progress=False)
    return s


def test_sampler_refuses_an_optimizer_of_another_model_before_training(small_prep_clm):
    """Formerly a probe with a foreign optimizer changed nothing and stage 1 failed with 'training scores
    have zero variance'; now the first refresh (before step 0) says what is wrong."""
    from workbench.training import make_optimizer
    p = small_prep_clm
    model = wb.model("gpt2-tiny", vocab_size=len(p.tokenizer), seed=0)
    other = wb.model("gpt2-tiny", vocab_size=len(p.tokenizer), seed=1)
    before = [q.detach().clone() for q in model.parameters()]
    with pytest.raises(MatesError, match=r"optimizer holds none of the model's \d+ trainable parameters"):
        _sampler_run(p, model, make_optimizer(other, 1e-3), None)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))     # nothing trained
    with pytest.raises(MatesError, match=r"needs the optimizer"):
        _sampler_run(p, model, None, None)
    with pytest.raises(MatesError, match=r"unsupported optimizer RMSprop"):
        _sampler_run(p, model, torch.optim.RMSprop(model.parameters()), None)


def test_sampler_refuses_an_optimizer_the_loop_does_not_step(small_prep_clm):
    """The model's own optimizer, but wb.train made and stepped another: no state after the steps."""
    from workbench.training import make_optimizer
    p = small_prep_clm
    model = wb.model("gpt2-tiny", vocab_size=len(p.tokenizer), seed=0)
    with pytest.raises(MatesError, match=r"no state after 2 training steps: it is not the optimizer wb.train steps"):
        _sampler_run(p, model, make_optimizer(model, 1e-3), None)


def test_sampler_refuses_masked_lm_models(small_prep):
    """MATES probes a next-token loss; an encoder's MLM loss is not one. The random baseline probes nothing."""
    from workbench.selection.mates import is_masked_lm
    from workbench.training import make_optimizer
    p = small_prep
    model = wb.model("bert-tiny", vocab_size=len(p.tokenizer), seed=0)
    assert is_masked_lm(model) and not is_masked_lm(_gpt2()) and not is_masked_lm(_neox())
    opt = make_optimizer(model, 1e-3)
    ref = torch.from_numpy(p.eval.input_ids[:2].astype(np.int64))
    s = MatesSampler(opt, ref, stage_steps=2, fraction=0.2, probe_size=8, im_epochs=1)
    with pytest.raises(MatesError, match=r"MATES probes a causal language model; BertForMaskedLM is a masked-LM"):
        wb.train(model, p.train, sampler=s, optimizer=opt, budget=wb.Budget(max_steps=2), batch_size=4,
                 progress=False)


def test_reference_blocks_from_a_text_file_a_corpus_or_blocks(small_prep_clm, tmp_path):
    from workbench.data.batching import CLMTask
    from workbench.selection.mates import reference_blocks
    p = small_prep_clm
    tok = p.tokenizer
    f = tmp_path / "reference.txt"
    f.write_text("\n\n".join(f"Paragraph {i}: the reference task is text of your own, read from a file, "
                             f"tokenized with the run's tokenizer and packed into blocks." for i in range(40)))
    r = reference_blocks(str(f), tok, 32)
    assert r.dtype == torch.long and r.shape[1] == 32 and 1 <= r.shape[0] <= 256
    assert int(r.max()) < len(tok)
    # a Corpus: the CLM packing of the training data, a fixed sample of at most max_blocks
    full = torch.from_numpy(CLMTask(p.eval_corpus, tok, 32, seed=0).input_ids.astype(np.int64))
    r2 = reference_blocks(p.eval_corpus, tok, 32, max_blocks=5)
    g = torch.Generator().manual_seed(1234)
    assert torch.equal(r2, full[torch.randperm(len(full), generator=g)[:5]])
    assert torch.equal(reference_blocks(r2, tok, 32), r2)                    # already tokenized: as it is
    f2 = tmp_path / "short.txt"
    f2.write_text("too short")
    with pytest.raises(wb.CorpusError, match=r"fewer than 32 tokens"):
        reference_blocks(str(f2), tok, 32)
    with pytest.raises(MatesError, match=r"reference must be a corpus spec"):
        reference_blocks(3.5, tok, 32)
    # and a sampler trains with it
    from workbench.training import make_optimizer
    model = wb.model("gpt2-tiny", vocab_size=len(tok), seed=0)
    opt = make_optimizer(model, 1e-3)
    s = MatesSampler(opt, r[:4], stage_steps=2, fraction=0.2, probe_size=8, im_epochs=1)
    wb.train(model, p.train, sampler=s, optimizer=opt, budget=wb.Budget(max_steps=3), batch_size=4, progress=False)
    assert [x["stage"] for x in s.per_stage] == [0, 1] and "spearman_val" in s.per_stage[1]
