"""Budget training: schedules (golden values), the deadline under an injected clock, time markers,
resume by time, DDP == one process, the DeepSpeed backend on CPU, the budget_bert notebook."""
import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

import workbench as wb
from workbench.cli import main
from workbench.config import parse
from workbench.errors import ConfigError
from workbench.training import Budget, Schedule
from workbench.training.schedules import ramp_micro_batches


# ----------------------------------------------------------------------------------------- schedules

def test_time_linear_golden_values():
    s = Schedule("time-linear", warmup=0.06)                          # 24hBERT
    xs = [0.0, 0.03, 0.06, 0.53, 0.765, 1.0, 1.3]
    want = [0.0, 0.5, 1.0, 0.5, 0.25, 0.0, 0.0]
    assert [s.factor(0, None, x) for x in xs] == pytest.approx(want, abs=1e-12)


def test_triangle_golden_values_and_cramming_formula():
    s = Schedule("triangle")                                          # Cramming's budget-triangle2
    assert (s.peak, s.start) == (0.75, 0.25)
    xs = [0.0, 0.375, 0.75, 0.875, 1.0, 1.5]
    assert [s.factor(0, None, x) for x in xs] == pytest.approx([0.25, 0.625, 1.0, 0.5, 0.0, 0.0], abs=1e-12)
    # Cramming writes it as min(base + x (1 - base) / (1 - falloff), (1 - x) / falloff), base = falloff = 0.25
    for k in range(101):
        x = k / 100
        assert s.factor(0, None, x) == pytest.approx(min(0.25 + x * 0.75 / 0.75, (1 - x) / 0.25), abs=1e-12)
    assert Schedule("triangle", peak=0.5, start=0.0).factor(0, None, 0.25) == pytest.approx(0.5)


def test_step_schedules_and_batch_ramp_golden_values():
    lin, cos = Schedule("linear", warmup=0.2), Schedule("cosine", warmup=0.2)   # 2 of 10 steps
    assert [lin.factor(k, 10) for k in (0, 1, 2, 6, 10)] == pytest.approx([0.5, 1.0, 1.0, 0.5, 0.0])
    assert [cos.factor(k, 10) for k in (2, 6, 10)] == pytest.approx([1.0, 0.5, 0.0])
    with pytest.raises(ValueError, match="elapsed fraction"):
        Schedule("time-linear").factor(3, 10)
    with pytest.raises(ConfigError):
        Schedule("triangle", warmup=0.1)
    # Cramming's ramp: 1 micro-batch at the start, all 8 from 60% of the budget on
    assert [ramp_micro_batches(x, 8, 0.6) for x in (0.0, 0.07, 0.075, 0.3, 0.59, 0.6, 0.9)] == [1, 1, 2, 5, 8, 8, 8]
    assert ramp_micro_batches(0.1, 8, 0.0) == 8


def test_budget_rules():
    t = [0.0]
    b = Budget(max_minutes=1, markers=(0.9, 0.5), early_stop_after=0.5, early_stop_loss=3.0, finish="nearest",
               clock=lambda: t[0])
    b.start()
    t[0] = 29.0
    assert b.exhausted(0, 0) is None and b.due_markers(0, 0) == []
    assert b.early_stop(0, 0, 9.0) is None                            # too early to judge
    t[0] = 31.0
    assert b.due_markers(0, 0) == [0.5] and b.due_markers(0, 0) == []
    assert b.early_stop(0, 0, 9.0) == "eval_loss_above_threshold" and b.early_stop(0, 0, 2.0) is None
    assert b.early_stop(0, 0, float("nan")) == "eval_loss_not_finite"
    t[0] = 57.0
    assert b.exhausted(0, 0) is None and b.exhausted(0, 0, step_s=8.0) == "deadline"   # nearest boundary: stop at 57
    assert b.exhausted(0, 0, step_s=4.0) is None                      # 61 is nearer than 57: one more step
    assert Budget(max_minutes=1, clock=lambda: t[0]).exhausted(0, 0, 57.0, step_s=8.0) is None   # finish="after"
    assert b.state_dict()["fired"] == [0.5] and b.stop() == 57.0 and b.overshoot() == 0.0
    with pytest.raises(ConfigError):
        Budget(max_minutes=1, markers=(1.5,))


# ---------------------------------------------------------------------------------- the loop, by time

class FakeClock:
    def __init__(self, t=0.0):
        self.t = t

    def __call__(self):
        return self.t


class SlowTask:
    """The MLM task whose training loss takes ``dt`` seconds of the fake clock (time passes inside the step)."""

    def __init__(self, task, clock, dt):
        self.task, self.clock, self.dt = task, clock, dt

    def __len__(self):
        return len(self.task)

    def __getattr__(self, k):
        return getattr(self.task, k)

    def loss(self, model, batch):
        self.clock.t += self.dt
        return self.task.loss(model, batch)


def _tiny(prep):
    return wb.model("prelnbert-tiny", vocab_size=len(prep.tokenizer), seed=0, dropout=0.0)


def _timed_train(prep, clock, dt, run=None, **kw):
    budget = kw.pop("budget", None) or Budget(max_minutes=1, markers=(0.5, 0.9), clock=clock)
    return wb.train(_tiny(prep), SlowTask(prep.train, clock, dt), budget=budget,
                    schedule=kw.pop("schedule", Schedule("time-linear", warmup=0.2)), batch_size=4, lr=1e-3,
                    progress=False, seed=1, run=run, **kw)


def test_deadline_and_markers_under_injected_clock(small_prep, tmp_path):
    clock = FakeClock()
    run = wb.Run(tmp_path / "r")
    res = _timed_train(small_prep, clock, 7.0, run=run)             # a step takes 7 s of a 60 s budget
    # finish="after": step until past the deadline; step 9 ends at 63 s, its update applied at the deadline's LR
    assert (res.step, res.stop_reason) == (9, "deadline")
    assert res.train_s == pytest.approx(63.0) and res.overshoot_s == pytest.approx(3.0)
    assert res.lr_factor_end == 0.0
    lrs = [r["lr"] for r in res.history if "loss" in r]
    assert lrs[0] == pytest.approx(1e-3 * (7 / 60) / 0.2) and lrs[-2] == pytest.approx(1e-3 * (1 - 56 / 60) / 0.8)
    marks = [(r["step"], r["marker"]) for r in run.metrics() if r.get("event") == "marker"]
    assert marks == [(5, 0.5), (8, 0.9)]                              # each fired once, at 35 s and 56 s
    assert sorted(p.name for p in (run.path / "markers").iterdir()) == ["marker-0.5", "marker-0.9"]
    end = [r for r in run.metrics() if r.get("event") == "end"][0]
    assert end["overshoot_s"] == pytest.approx(3.0) and end["reason"] == "deadline"

    def nearest(dt):
        clock = FakeClock()
        return _timed_train(small_prep, clock, dt, budget=Budget(max_minutes=1, finish="nearest", clock=clock))
    res = nearest(8.0)                                                 # 56 s is nearer the deadline than 64 s
    assert (res.step, res.train_s, res.overshoot_s) == (7, 56.0, 0.0)
    assert res.lr_factor_end == pytest.approx((1 - 56 / 60) / 0.8)
    res = nearest(7.0)                                                 # 63 s is nearer than 56 s: one more step
    assert (res.step, res.train_s, res.lr_factor_end) == (9, 63.0, 0.0)


def test_resume_continues_the_time_schedule(small_prep, tmp_path):
    clock = FakeClock()
    full = _timed_train(small_prep, clock, 5.0, run=wb.Run(tmp_path / "full"), checkpoint_every=4)

    class Boom(Exception):
        pass

    def crash(step, **_):
        if step == 6:
            raise Boom()
    clock = FakeClock()
    with pytest.raises(Boom):
        _timed_train(small_prep, clock, 5.0, run=wb.Run(tmp_path / "part"), checkpoint_every=4, callbacks=(crash,))
    clock = FakeClock(1000.0)                                          # a new process: its clock reads anything
    resumed = _timed_train(small_prep, clock, 5.0, run=wb.Run(tmp_path / "part", resume=True), checkpoint_every=4)
    assert resumed.step == full.step == 12 and resumed.train_s == pytest.approx(60.0)
    key = lambda rs: [(r["step"], r.get("loss"), r.get("lr"), r.get("elapsed_s")) for r in rs if "loss" in r]
    assert key(wb.Run.open(tmp_path / "full").metrics()) == key(wb.Run.open(tmp_path / "part").metrics())
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "part" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_early_stop_and_non_finite_loss(small_prep):
    res = wb.train(_tiny(small_prep), small_prep.train, eval_data=small_prep.eval,
                   budget=Budget(max_steps=20, early_stop_after=0.2, early_stop_loss=0.01), eval_every=2,
                   eval_batches=1, batch_size=4, progress=False)
    assert (res.stop_reason, res.step) == ("eval_loss_above_threshold", 4)

    class NaNTask(SlowTask):
        def loss(self, model, batch):
            self.n = getattr(self, "n", 0) + 1
            return self.task.loss(model, batch) * (float("nan") if self.n == 3 else 1.0)
    res = wb.train(_tiny(small_prep), NaNTask(small_prep.train, FakeClock(), 0), budget=Budget(max_steps=10),
                   batch_size=4, progress=False)
    assert (res.stop_reason, res.step) == ("loss_not_finite", 2)


# ----------------------------------------------------------------------------------------- backends

_WORKER = textwrap.dedent("""
    import json, os, sys
    import workbench as wb
    from workbench.training import Budget, Schedule
    from workbench.training.backends import shutdown
    p = wb.prepare("pydocs:datasets", "bert-tiny", seq_len=64, vocab_size=1024, seed=0)
    m = wb.model("prelnbert-tiny", vocab_size=len(p.tokenizer), seed=0, dropout=0.0)
    rank0 = int(os.environ["RANK"]) == 0
    run = wb.Run(sys.argv[2]) if rank0 else None          # only rank 0 has (and writes) the run
    r = wb.train(m, p.train, budget=Budget(max_steps=3), schedule=Schedule("linear", warmup=1 / 3), batch_size=4,
                 grad_accum=2, lr=1e-3, progress=False, seed=1, run=run, checkpoint_every=2)
    if rank0:
        json.dump({"loss": [h["loss"] for h in r.history if "loss" in h], "tokens": r.tokens, "world": r.world_size,
                   "w": {k: v.tolist() for k, v in m.state_dict().items() if "layer.1.output.dense" in k}},
                  open(sys.argv[1], "w"))
    shutdown()
""")


def test_ddp_two_processes_equal_one_process(small_prep, tmp_path):
    (tmp_path / "worker.py").write_text(_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(tmp_path / "worker.py"), str(tmp_path / "ddp.json"), str(tmp_path / "run")]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp.json").read_text())
    # one process, the same global batch: 8 per micro-batch
    m = wb.model("prelnbert-tiny", vocab_size=len(small_prep.tokenizer), seed=0, dropout=0.0)
    r = wb.train(m, small_prep.train, budget=Budget(max_steps=3), schedule=Schedule("linear", warmup=1 / 3), batch_size=8,
                 grad_accum=2, lr=1e-3, progress=False, seed=1)
    assert ddp["world"] == 2 and ddp["tokens"] == r.tokens
    logged = wb.Run.open(tmp_path / "run").metrics()
    assert [x["step"] for x in logged if "loss" in x] == [1, 2, 3]
    assert (tmp_path / "run" / "model.safetensors").exists()
    assert (tmp_path / "run" / "checkpoints" / "step-00000002").is_dir()
    assert ddp["loss"] == pytest.approx([h["loss"] for h in r.history if "loss" in h], rel=1e-5)
    for k, v in ddp["w"].items():
        assert torch.allclose(torch.tensor(v), m.state_dict()[k], atol=1e-5), k


def test_deepspeed_backend_takes_optimizer_steps_on_cpu(small_prep, tmp_path):
    pytest.importorskip("deepspeed")
    from workbench.training.backends import deepspeed_config
    cfg = deepspeed_config(4, 2, "bf16", 1.0, 1, {"zero_optimization": {"reduce_bucket_size": 1e6}})
    assert cfg["zero_optimization"] == {"stage": 1, "reduce_bucket_size": 1e6} and cfg["bf16"] == {"enabled": True}
    m = _tiny(small_prep)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    run = wb.Run(tmp_path / "ds")
    res = wb.train(m, small_prep.train, eval_data=small_prep.eval, budget=Budget(max_steps=3),
                   schedule=Schedule("linear", warmup=1 / 3), backend="deepspeed", precision="bf16", zero_stage=1,
                   batch_size=4, grad_accum=2, lr=1e-3, eval_batches=1, progress=False, run=run)
    assert res.step == 3 and res.backend == "deepspeed" and math.isfinite(res.final_eval_loss)
    losses = [h["loss"] for h in res.history if "loss" in h]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert next(m.parameters()).dtype == torch.float32                # cast back after bf16 training
    moved = [k for k, v in m.state_dict().items() if not torch.equal(v, before[k])]
    assert len(moved) > 0.9 * len(before)
    # the engine's own checkpoint: 3 optimizer steps of 2 accumulated micro-batches, ZeRO stage 1, bf16
    ds_dir = run.path / "checkpoints" / "deepspeed" / "step-00000003"
    states = torch.load(ds_dir / "mp_rank_00_model_states.pt", weights_only=False, map_location="cpu")
    assert states["global_steps"] == 3
    assert states["ds_config"]["gradient_accumulation_steps"] == 2
    assert states["ds_config"]["zero_optimization"]["stage"] == 1 and states["ds_config"]["bf16"]["enabled"]
    assert (run.path / "model.safetensors").exists()


def test_backend_and_param_errors(small_prep):
    m = _tiny(small_prep)
    with pytest.raises(ConfigError, match="zero_stage"):
        wb.train(m, small_prep.train, budget=Budget(max_steps=1), zero_stage=2, progress=False)
    with pytest.raises(ConfigError, match="batch_ramp"):
        wb.train(m, small_prep.train, budget=Budget(max_steps=1), batch_ramp=2.0, progress=False)
    from workbench.recipes.budget_bert import BudgetBertParams
    with pytest.raises(ConfigError, match="decoder"):
        parse(BudgetBertParams, {"model": "gpt2-tiny"})
    with pytest.raises(ConfigError, match="budget_minutes"):
        parse(BudgetBertParams, {"budget_minutes": "0"})
    assert parse(BudgetBertParams, {"markers": "0.25,0.75"}).markers == (0.25, 0.75)


def test_finetune_classifier_learns_domains(small_prep):
    from workbench.training.finetune import domain_task, finetune_classifier
    task = domain_task("pydocs:datasets,deepspeed", small_prep.tokenizer, seq_len=64, max_per_class=60, seed=0,
                       exclude_ids=set(small_prep.train_corpus.ids))
    d = task.describe()
    assert d["classes"] == ["datasets", "deepspeed"] and d["test"] > 0
    assert not set(task.meta["doc_ids"]) & set(small_prep.train_corpus.ids)   # only unseen documents
    m = _tiny(small_prep)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    acc = finetune_classifier(m, task, epochs=6, lr=2e-3, batch_size=16, progress=False)
    assert acc > d["majority_acc"]
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())   # the pretrained model is untouched


# --------------------------------------------------------------------------------------- the notebook

def test_budget_bert_notebook_smoke(tmp_path, capsys):
    assert main(["reproduce", "budget_bert", "--scale", "smoke", "--out", str(tmp_path)]) == 0
    s = json.loads((tmp_path / "budget_bert" / "summary.json").read_text())
    assert s["metric"] == "sim_eval_loss" and s["higher_is_better"] is False
    assert s["baseline"]["name"].startswith("step schedule sized") and s["method"]["name"] == "time-linear"
    ex = s["extra"]
    sim = ex["sim"]
    assert set(sim["eval_loss"]) == {"oracle", "step-20%", "step+20%", "time-linear", "triangle"}
    assert sim["lr_at_last_update"]["time-linear"] == 0.0 and sim["lr_at_last_update"]["step+20%"] > 0.1
    assert len(sim["per_run"]) == 5 * sim["seeds"]
    assert set(ex) >= {"budget_s", "overshoot_s", "lr_at_end_fraction", "downstream_acc", "tokens_per_s"}
    assert ex["budget_s"] == pytest.approx(3.0)
    assert set(ex["downstream_acc"]) == {"step-linear", "time-linear", "triangle"}
    assert all(0 <= v <= 1 for v in ex["downstream_acc"].values())
    assert all(r in ("deadline", "max_steps") for r in ex["stop_reason"].values())
    assert ex["lr_at_end_fraction"]["triangle"] < 0.5 and ex["lr_at_end_fraction"]["time-linear"] < 0.5
    run_dir = tmp_path / "budget_bert" / "runs" / "time-linear"
    assert (run_dir / "model.safetensors").exists() and (run_dir / "markers").is_dir()


def test_bench_train_prints_json(capsys):
    args = ["bench", "train", "--json", "--size", "bert-tiny", "--steps", "2", "--warmup", "1", "--batch-size", "4",
            "--seq-len", "32", "--vocab-size", "512", "--corpus", "pydocs:datasets", "--peak-size", "256"]
    assert main(args) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(r) >= {"workbench_tokens_per_s", "hf_tokens_per_s", "ratio", "hf_mfu", "workbench_mfu",
                      "hf_sparse_tokens_per_s", "hf_nodrop_fused_tokens_per_s", "ratio_vs_hf_sparse",
                      "recipe_ratio", "load_avg"}
    assert r["hf_params"] == pytest.approx(r["workbench_params"], rel=0.01)          # same model size
    for side in ("workbench", "hf_sparse", "hf_nodrop_fused"):                        # same batches, same targets
        assert r[f"{side}_first_loss"] == pytest.approx(r["hf_first_loss"], rel=0.05)
    assert r["workbench_tokens_per_s"] > 0 and 0 < r["hf_mfu"] < 1
    assert r["ratio_vs_hf_sparse"] == pytest.approx(r["workbench_tokens_per_s"] / r["hf_sparse_tokens_per_s"])
    assert r["recipe_ratio"] == pytest.approx(r["hf_sparse_tokens_per_s"] / r["hf_tokens_per_s"])
    assert r["interleaved"] is True and r["precision"] == "fp32" and r["size"] == "tiny"   # CPU: auto is fp32


def test_recipe_level_comparison_under_one_cpu_budget(tmp_path):
    """``compare_recipes``: vanilla BERT (post-LN, dense head, BERT's optimizer, probe-sized step schedule),
    24hBERT and Cramming (their presets) at the same size, each under the same CPU-time budget, scored on
    the same held-out batches and by a linear probe."""
    from workbench.recipes import budget_bert as R
    P = parse(R.Params, {"scale": "smoke", "corpus": "pydocs:datasets", "seq_len": 64, "vocab_size": 1024,
                                 "batch_size": 8, "grad_accum": 2, "recipe_minutes": 0.03, "recipe_eval_batches": 3,
                                 "downstream_corpus": "pydocs:datasets,deepspeed", "downstream_max_per_class": 30,
                                 "out_dir": str(tmp_path)})
    A = {a: R.recipe_params(P, a) for a in P.recipe_arms}
    assert (A["vanilla"].model, A["24hbert"].model, A["cramming"].model) == ("bert-tiny", "prelnbert-tiny", "crammed-tiny")
    assert (A["vanilla"].lr, A["vanilla"].beta2, A["vanilla"].dropout, A["vanilla"].grad_accum) == (1e-4, 0.999, 0.1, 1)
    assert A["24hbert"].lr == 1e-3 and A["24hbert"].warmup == 0.06 and A["cramming"].mlm_probability == 0.25
    assert all(a.budget_minutes == 0.03 and a.vocab_size == 1024 for a in A.values())
    t = R.compare_recipes(P)
    assert list(t.index) == ["vanilla", "24hbert", "cramming"]
    assert list(t["schedule"]) == ["step-linear", "time-linear", "triangle"] and not t.loc["vanilla", "sparse_head"]
    assert t["eval_loss"].between(0, 20).all() and t["probe_acc"].between(0, 1).all()
    assert t["probe_acc_untrained"].between(0, 1).all()
    for a in ("24hbert", "cramming"):                 # the deadline (CPU seconds) ends them with the LR at zero
        assert t.loc[a, "stop_reason"] == "deadline" and t.loc[a, "lr_end"] == 0.0
        assert 1.8 <= t.loc[a, "cpu_s"] <= 1.8 + 1.5
    assert t.loc["vanilla", "steps"] == t.loc["vanilla", "planned_steps"] or t.loc["vanilla", "stop_reason"] == "deadline"
    assert (tmp_path / "recipes" / "cramming" / "summary.json").exists()
    with pytest.raises(ConfigError, match="recipe arm"):
        parse(R.Params, {"recipe_arms": "vanilla,bogus"})
