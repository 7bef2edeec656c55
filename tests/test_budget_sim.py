"""Budget training under a simulated clock: SimClock's drift and slowdown, the loop's steps and LRs under
it (an oracle step count known in advance), the budget_bert comparison giving the same numbers twice,
the 24hbert / cramming presets, 24hBERT's one-hour clamp (min_decay_hours), the prelnbert-large preset."""
import math

import pytest

from workbench.config import parse
from workbench.errors import ConfigError
from workbench.training import Budget, Schedule
from workbench.training.budget import SimClock
from workbench.training.hooks import FullSampler
from workbench.training.loop import train




# ----------------------------------------------------------------------------------------- the clock

def test_sim_clock_drift_slowdown_and_oracle_count():
    c = SimClock(micro_s=1.0, drift=0.2, seed=3, period=5.0)
    ts = [c.tick() for _ in range(200)]
    steps = [b - a for a, b in zip([0.0] + ts, ts)]
    assert all(0.8 - 1e-12 <= s <= 1.2 + 1e-12 for s in steps)
    assert max(steps) - min(steps) > 0.1                       # it does drift
    assert c.fresh().tick(200) == pytest.approx(ts[-1], abs=0)  # same seed, same times
    assert SimClock(seed=4, period=5.0).tick(200) != ts[-1]
    assert c() == ts[-1] and c.ticks == 200
    # steps_within: the first step ending at or past the deadline is the last (finish="after")
    n = c.steps_within(50.0)
    assert ts[n - 2] < 50.0 <= ts[n - 1]
    assert c.steps_within(50.0, micro_per_step=2) == next(k + 1 for k in range(200) if ts[2 * k + 1] >= 50.0)
    # a slowdown halfway: every step after it costs `slowdown` times more
    s = SimClock(drift=0.0, slowdown=2.0, slowdown_at=10.0)
    assert [s.tick() for _ in range(12)][-3:] == [10.0, 12.0, 14.0]
    assert s.fresh().steps_within(20.0) == 15
    with pytest.raises(ConfigError):
        SimClock(drift=1.0)


def test_loop_under_sim_clock_matches_the_oracle(small_prep, one_thread):
    kw = dict(batch_size=4, lr=1e-3, progress=False, eval_every=0)
    runs = {}
    for name, sched, planned in (("time", Schedule("time-linear", warmup=0.1), None),
                                 ("oracle", Schedule("linear", warmup=0.1), "oracle")):
        clock = SimClock(drift=0.2, seed=1, period=3.0)
        oracle = clock.steps_within(8.0)
        b = Budget(max_minutes=8.0 / 60, max_steps=oracle if planned else None, clock=clock)
        runs[name] = train(small_prep.model.__class__(small_prep.model.config), small_prep.train, budget=b,
                           schedule=sched, sampler=clock.sampler(FullSampler()), **kw)
        assert runs[name].step == oracle
    t, o = runs["time"], runs["oracle"]
    assert t.stop_reason == "deadline" and o.stop_reason == "max_steps"
    assert t.lr_factor_end == 0.0                              # the last update is applied at the deadline
    assert o.lr_factor_end == pytest.approx(1 / (o.step - round(0.1 * o.step)))
    # the LR of each update is the schedule's value at the simulated end of that step
    clock = SimClock(drift=0.2, seed=1, period=3.0)
    ends = [clock.tick() for _ in range(t.step)]
    lrs = [r["lr"] for r in t.history if "lr" in r]
    want = [1e-3 * Schedule("time-linear", warmup=0.1).factor(0, None, e / 8.0) for e in ends]
    assert lrs == pytest.approx(want, rel=1e-9, abs=1e-15)
    assert t.train_s == pytest.approx(ends[-1])


# ----------------------------------------------------------------------------------------- the recipe

def _params(**kw):
    from workbench.recipes import budget_bert as R
    return parse(R.Params, {"scale": "smoke", "corpus": "pydocs:datasets", "seq_len": 64, "vocab_size": 1024,
                            "batch_size": 8, "eval_batches": 2, "downstream_corpus": "pydocs:datasets,deepspeed",
                            "downstream_max_per_class": 40, **kw})


def test_simulated_comparison_is_deterministic(small_prep, one_thread):
    from workbench.recipes import budget_bert as R
    P = _params(sim_steps=6, sim_seeds=2, sim_slowdown=1.5)
    S = R.Setup(prep=small_prep, downstream=None, precision="fp32", flops_per_token=1.0)   # simulate needs no more
    a, _ = R.simulate(P, S)
    b, _ = R.simulate(P, S)
    assert a.equals(b)                                         # bit for bit: same losses, LRs and steps
    assert list(a.arm.unique()) == list(R.SIM_ARMS) and sorted(a.seed.unique()) == [0, 1]
    for _, g in a.groupby("seed"):
        g = g.set_index("arm")
        o = g.loc["oracle", "steps"]
        assert g.loc["time-linear", "steps"] == o == g.loc["triangle", "steps"]
        assert g.loc["step-20%", "steps"] == g.loc["step-20%", "planned_steps"] < o     # stops early
        assert g.loc["step+20%", "stop_reason"] == "deadline" and g.loc["step+20%", "lr_end"] > 0.1
        assert g.loc["time-linear", "lr_end"] == 0.0 == g.loc["triangle", "lr_end"]
    t = R.sim_table(a)
    assert t.loc["time-linear", "eval_loss"] == pytest.approx(a[a.arm == "time-linear"].eval_loss.mean())
    assert all(math.isfinite(v) for v in a.eval_loss)


def test_presets_fill_defaults_and_yield_to_overrides():
    from workbench.recipes import budget_bert as R
    P = _params(preset="24hbert")
    assert (P.lr, P.dropout, P.grad_clip, P.eps, P.beta2, P.warmup, P.mlm_probability, P.batch_ramp) == \
        (1e-3, 0.1, 0.0, 1e-6, 0.98, 0.06, 0.15, 0.0)
    C = _params(preset="cramming")
    assert (C.lr, C.dropout, C.grad_clip, C.eps, C.beta2, C.mlm_probability, C.batch_ramp, C.triangle_peak,
            C.triangle_start) == (1e-3, 0.0, 0.5, 1e-12, 0.98, 0.25, 0.6, 0.75, 0.25)
    assert _params(preset="cramming", lr=5e-4, mlm_probability=0.2).lr == 5e-4    # a given value wins
    assert _params(preset="cramming", mlm_probability=0.2).mlm_probability == 0.2
    assert parse(R.Params, {k: getattr(C, k) for k in R.Params.__dataclass_fields__}) == C   # idempotent
    assert _params().lr == 2e-3 and _params().grad_clip == 0.5                    # no preset: the fields
    assert (P.eval_dense, P.eval_begin, P.eval_end) == (3, 0.05, 0.01)                # 24hBERT's validation cadence
    assert R.eval_cadence(P) == R.EvalCadence(P.eval_every, P.eval_every // 3, P.eval_every // 3, 0.05, 0.01)
    assert R.eval_cadence(C) == C.eval_every                                        # Cramming: a fixed cadence
    with pytest.raises(ConfigError, match="preset"):
        _params(preset="roberta")
    with pytest.raises(ConfigError, match="mlm_probability"):
        _params(mlm_probability=1.0)


def test_min_decay_hours_is_24hberts_clamp():
    from workbench.recipes import budget_bert as R
    # 24hBERT's code: max(0, T - t) / max(1 h, T - warmup); a half-hour budget, warmup 6%
    s = Schedule("time-linear", warmup=0.06, min_decay_hours=1.0, budget_hours=0.5)
    T, w = 0.5, 0.06 * 0.5
    for x in (0.06, 0.3, 0.8, 1.0):
        assert s.factor(0, None, x) == pytest.approx(max(0.0, T - x * T) / max(1.0, T - w))
    assert s.factor(0, None, 0.03) == pytest.approx(0.5)                 # the warmup is untouched
    long = Schedule("time-linear", warmup=0.06, min_decay_hours=1.0, budget_hours=24.0)
    assert [long.factor(0, None, x) for x in (0.06, 0.53)] == pytest.approx([1.0, 0.5])   # does not bind
    with pytest.raises(ConfigError, match="budget_hours"):
        Schedule("time-linear", min_decay_hours=1.0)
    with pytest.raises(ConfigError, match="time-linear"):
        Schedule("triangle", min_decay_hours=1.0, budget_hours=1.0)
    sched = R.schedule_for(_params(min_decay_hours=1.0, budget_minutes=30), "time-linear")
    assert sched.budget_hours == 0.5 and sched.factor(0, None, 0.06) == pytest.approx(0.47)


def test_prelnbert_large_preset():
    import workbench as wb
    cfg = wb.models.config("prelnbert-large", vocab_size=1024)
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size) == \
        (24, 1024, 16, 4096)
    assert "prelnbert-large" in wb.models.presets() and "gpt2-large" not in wb.models.presets()


def test_eval_cadence_is_denser_at_the_start_and_end_of_the_budget(small_prep, one_thread):
    """24hBERT's validation_begin/end_proportion: evals every 2 steps in the first 20% and last 10% of a
    50-step budget, every 10 steps between; by the budget's share (steps here, time under a deadline)."""
    from workbench.training import EvalCadence
    import workbench as wb
    c = EvalCadence(10, 2, 2, begin=0.2, end=0.1)
    assert [c.period(f) for f in (0.0, 0.19, 0.2, 0.5, 0.9, 0.91, 1.0)] == [2, 2, 10, 10, 10, 2, 2]
    m = wb.model("bert-tiny", vocab_size=len(small_prep.tokenizer), seed=0)
    res = train(m, small_prep.train, eval_data=small_prep.eval, budget=Budget(max_steps=50), batch_size=4,
                eval_every=c, eval_batches=1, progress=False)
    steps = [r["step"] for r in res.history if "eval_loss" in r]
    assert steps == [2, 4, 6, 8, 10, 20, 30, 40, 46, 48, 50]
    with pytest.raises(ConfigError, match="begin and end"):
        EvalCadence(10, begin=0.7, end=0.5)
    with pytest.raises(ConfigError, match="every_begin"):
        EvalCadence(10, every_begin=0)
