"""Budget BERT: the academic-budget recipe (Izsak et al. 2021, "24hBERT") and Cramming (Geiping &
Goldstein 2022), and the comparison ``notebooks/budget_bert.ipynb`` runs.

The recipe: a pre-LN encoder (stable at high learning rates), a sparse MLM prediction head (the
vocabulary decoder runs only on the masked positions), no next-sentence objective, sequences of 128
tokens, AdamW with beta2 = 0.98, large effective batches through gradient accumulation, bf16
autocast where the device has it (``precision="auto"``). The budget is wall-clock minutes, checked
every step. ``preset`` fills the training settings of one paper (:data:`PRESETS`): ``24hbert``
(Izsak et al.'s README command: dropout 0.1, no clipping, lr 1e-3, eps 1e-6, warmup 6%, MLM 15%) or
``cramming`` (Cramming's ``bert-o4`` / ``adam`` configs: no dropout, clipping 0.5, lr 1e-3, eps 1e-12,
MLM 25%, batch ramp over 60% of the budget, and ``arch="crammed"``: the scale file's model size as
crammed-BERT, Cramming's architecture, :mod:`workbench.models.crammed`). A preset sets only the fields
left at their defaults here; any other value given wins. Model size and batch come from the scale
file, not the preset.

The question of the notebook: with the same budget, how much does the LR schedule matter?

**Headline: a simulated clock** (:func:`simulate`). Each run's clock is a
:class:`~workbench.training.budget.SimClock`: one simulated second per step times a seeded drift of
+-``sim_drift`` (optionally a slowdown halfway), so the outcome does not depend on the machine's load and
is the same on every run. Five arms under the same simulated budget, ``sim_seeds`` clock/data seeds:

``oracle``       warmup + linear decay over the *exact* number of steps the budget holds (known in
                 advance only because the clock is simulated)
``step-20%``,    the same step schedule sized 20% too short (reaches zero early and stops, wasting the
``step+20%``     rest of the budget) or 20% too long (the deadline stops it with the LR still high)
``time-linear``  warmup over 6% of the budget, linear decay to zero exactly at the deadline (24hBERT)
``triangle``     Cramming's budget triangle (25% -> peak at 75% of the budget -> zero at the deadline)

**Second section: the real clock** (:func:`run_schedule`). The same model under ``budget_minutes`` of
wall time, step-linear sized from a timing probe (the usual practice) against time-linear and
triangle (optionally with the batch ramp, ``batch_ramp``); the result depends on the machine's load.
Each pretrained encoder (and the untrained one) is then fine-tuned on the offline downstream check
(:mod:`workbench.training.finetune`: domain of unseen pydocs documents).

**Third section: the recipes** (:func:`compare_recipes`, on when ``recipe_minutes`` > 0). Under one
fixed budget of *CPU time* (``time.process_time``: one thread's work, whatever else the machine
runs) per arm, three whole recipes at the scale's model size, each with its own settings
(:data:`RECIPE_ARMS`): ``vanilla`` (BERT as Devlin et al. trained it: post-LN, dense MLM head with its
transform, dropout 0.1, AdamW 1e-4 (0.9, 0.999) eps 1e-6, clipping 1.0, warmup 1% then linear decay
over a step count sized from a timing probe, one micro-batch per step), ``24hbert`` (the preset, pre-LN,
time-linear) and ``cramming`` (the preset: crammed-BERT, triangle, batch ramp). Measured: held-out MLM
loss (15% masking, the same fixed batches for every arm) and a linear probe of the frozen encoder
(package of unseen documents, :func:`workbench.training.finetune.linear_probe`).

:func:`run` does all of it and returns a :class:`Result`; :func:`summary` is the ``summary.json``
of the notebook; the figures are in :mod:`workbench.viz.budget`.

Several GPUs: run one schedule per launch with ``torchrun --nproc_per_node N -m
workbench.recipes.budget_bert --schedule time-linear --scale paper --out runs/bb`` (DDP), or add
``-p backend=deepspeed`` for the DeepSpeed engine (see the README).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
# pandas is imported inside the functions that build frames: the CLI checks these Params, and a one-line
# error must not pay for importing pandas

from ..config import asdict, check, load_yaml, parse, parse_overrides
from ..data.prepare import Prepared, prepare
from ..errors import ConfigError
from ..models import check_spec, flops_per_token, is_encoder, param_count, presets
from ..runs import Run
from ..training.backends import dist_env, shutdown
from ..training.budget import Budget, EvalCadence, SimClock
from ..training.hooks import FullSampler
from ..training.finetune import ClassificationTask, domain_task, finetune_classifier, linear_probe
from ..training.loop import TrainResult, evaluate, make_optimizer, resolve_device, train
from ..training.schedules import Schedule
from . import params_file
from .base import Arm, RecipeParams, Summary

SCHEDULES = ("step-linear", "time-linear", "triangle")
#: the arms of the simulated-clock comparison
SIM_ARMS = ("oracle", "step-20%", "step+20%", "time-linear", "triangle")

CLAIM = ("inside the same budget a time-based schedule (LR reaching zero exactly at the deadline) "
         "ends at a lower loss than a step-based schedule sized from a step count guessed 20% wrong "
         "(a simulated clock with a drifting step time, the same numbers on every run)")

#: each paper's training settings, read from its authors' code (field -> value); see the card's table
PRESETS = {
    "": {},
    # academic-budget-bert README (run_pretraining.py command) and pretraining/schedules.py
    "24hbert": dict(lr=1e-3, dropout=0.1, grad_clip=0.0, weight_decay=0.01, beta2=0.98, eps=1e-6, warmup=0.06,
                    mlm_probability=0.15, batch_ramp=0.0, eval_dense=3, eval_begin=0.05, eval_end=0.01),
    # cramming/config/train/bert-o4.yaml, train/optim/adam.yaml (pretrain_in_train_mode: False = no dropout)
    # + cramming/config/arch/crammed-bert.yaml (arch: the same size as crammed-BERT)
    "cramming": dict(lr=1e-3, dropout=0.0, grad_clip=0.5, weight_decay=0.01, beta2=0.98, eps=1e-12,
                     mlm_probability=0.25, batch_ramp=0.6, triangle_peak=0.75, triangle_start=0.25, arch="crammed"),
}

#: the recipe-level comparison's arms (:func:`compare_recipes`): settings over the scale's corpus, sizes and batch
#: (vanilla BERT: google-research/bert ``optimization.py`` (AdamW 1e-4, eps 1e-6, wd 0.01, clip 1.0, linear warmup
#: 10k of 1M steps = 1%, linear decay) and ``modeling.py`` (post-LN, dropout 0.1, dense head with transform))
RECIPE_ARMS = {
    "vanilla": dict(family="bert", preset="", schedule="step-linear", sparse_head=False, lr=1e-4, beta2=0.999,
                    eps=1e-6, weight_decay=0.01, dropout=0.1, grad_clip=1.0, warmup=0.01, mlm_probability=0.15,
                    grad_accum=1, batch_ramp=0.0),
    "24hbert": dict(family="prelnbert", preset="24hbert", schedule="time-linear", sparse_head=True),
    "cramming": dict(family="prelnbert", preset="cramming", schedule="triangle", sparse_head=True),
    # an ablation, not in the default arms: 24hBERT's training settings on crammed-BERT's architecture, which
    # splits the Cramming arm's lead over 24hbert into what the architecture and what the training settings give
    "24hbert_crammed": dict(family="crammed", preset="24hbert", schedule="time-linear", sparse_head=True),
}
#: fields of the notebook's parameters every recipe arm keeps (the scale's data, size, batch and evaluation)
RECIPE_SHARED = ("corpus", "seq_len", "vocab_size", "batch_size", "grad_accum", "eval_every", "eval_batches",
                 "precision", "seed", "downstream_corpus", "downstream_max_per_class", "out_dir", "scale")

#: the recipe arms a study over seeds pairs (``study.json`` ``extras_paired``,
#: :func:`workbench.reproduce.study.study_pairs`): each recipe against vanilla BERT and Cramming against 24hBERT, on held-out MLM loss and the linear probe
STUDY_PAIRS = [(f"recipes.{k}", b, m) for k in ("eval_loss", "probe_acc")
               for b, m in (("vanilla", "24hbert"), ("vanilla", "cramming"), ("24hbert", "cramming"))]

#: what the papers report (for the reproduction report's "paper reports" column)
PAPER_RESULT = ("24hBERT: a BERT-large-shaped model pretrained in 24 h on 8 12-GB GPUs is close to BERT-base on GLUE "
                "(Izsak et al., EMNLP 2021); Cramming: GLUE about 78.6 after 24 h on one GPU (Geiping & Goldstein, "
                "ICML 2023)")


@dataclass(frozen=True)
class BudgetBertParams(RecipeParams):
    """Parameters of ``notebooks/budget_bert.ipynb`` (its tagged cell is generated from these)."""
    out_dir: str = "runs/budget_bert"            # run directories and summary.json go here
    preset: str = ""                             # "" (the fields below) | 24hbert | cramming: fills the fields left at their defaults
    corpus: str = "pydocs:numpy,sklearn"         # pretraining corpus spec: pydocs[:pkgs] | .txt/.jsonl/.parquet | datasets dir
    model: str = "prelnbert-tiny"                # encoder preset (pre-LN, as both papers)
    arch: str = ""                               # "" (model as is) | crammed: model's size as crammed-BERT (prelnbert-tiny -> crammed-tiny)
    budget_minutes: float = 2.0                  # wall-clock budget of each pretraining run (minutes)
    batch_size: int = 32                         # sequences per micro-batch (per process)
    grad_accum: int = 2                          # micro-batches per optimizer step
    seq_len: int = 128                           # tokens per sequence
    vocab_size: int = 8192                       # WordPiece vocabulary (tokens)
    lr: float = 2e-3                             # peak learning rate (AdamW)
    weight_decay: float = 0.01                   # AdamW decoupled weight decay
    beta2: float = 0.98                          # AdamW beta2 (24hBERT, Cramming)
    eps: float = 1e-6                            # AdamW epsilon
    mlm_probability: float = 0.15                # share of tokens masked in pretraining (Cramming: 0.25; evals mask 0.15)
    grad_clip: float = 0.5                       # max gradient norm (Cramming: 0.5; 0: off)
    dropout: float = 0.0                         # dropout probability in pretraining (Cramming: none)
    warmup: float = 0.06                         # fraction of the budget warming up (time-linear: wall time; step-linear: guessed steps)
    min_decay_hours: float = 0.0                 # time-linear: floor of the decay span, hours (24hBERT's code: 1.0; 0: off)
    triangle_peak: float = 0.75                  # triangle: fraction of the budget elapsed at the LR peak
    triangle_start: float = 0.25                 # triangle: LR multiplier at the start (fraction of the peak)
    batch_ramp: float = 0.0                      # triangle run: fraction of the budget over which the batch ramps up (0: off)
    guess_steps: int = 0                         # step-linear: planned optimizer steps (0: budget / probed step time)
    probe_steps: int = 6                         # optimizer steps timed to make that guess
    markers: tuple[float, ...] = (0.5, 0.9)      # fractions of the budget with a fine-tuning checkpoint
    early_stop_after: float = 0.5                # early stop: fraction of the budget after which ...
    early_stop_loss: float = 0.0                 # ... a held-out loss above this (nats) ends the run (0: off)
    eval_every: int = 25                         # optimizer steps between held-out evals
    eval_dense: int = 1                          # evals this many times as often in the budget's first eval_begin and last eval_end (24hBERT: 3)
    eval_begin: float = 0.0                      # share of the budget at the start with dense evals (24hBERT: 0.05)
    eval_end: float = 0.0                        # share of the budget at the end with dense evals (24hBERT: 0.01)
    eval_batches: int = 4                        # batches per eval
    precision: str = "auto"                      # auto (bf16 on a bf16 GPU, else fp32) | fp32 | bf16 | fp16
    backend: str = "torch"                       # torch (DDP under torchrun) | deepspeed
    zero_stage: int = 0                          # deepspeed: ZeRO stage 0-2
    downstream_corpus: str = "pydocs:pandas,scipy,datasets"   # documents to classify by package (unseen in pretraining)
    downstream_max_per_class: int = 300          # documents per package (balanced)
    downstream_epochs: float = 3.0               # fine-tuning epochs (passes over the downstream train split)
    downstream_lr: float = 2e-3                  # fine-tuning peak learning rate
    sim_steps: int = 60                          # simulated-clock comparison: budget in nominal steps of 1 simulated s (0: skip it)
    sim_seeds: int = 5                           # clock-drift and data-order seeds of the simulated comparison
    sim_drift: float = 0.2                       # step time drifts within +- this share (seeded, slowly varying)
    sim_slowdown: float = 1.0                    # step time multiplier from half the simulated budget on (1: none)
    sim_miss: float = 0.2                        # the mis-sized step schedules plan (1 -+ this) x the oracle's steps
    sim_batch_size: int = 8                      # sequences per step in the simulated comparison (one micro-batch)
    recipe_minutes: float = 0.0                  # recipe-level comparison: CPU minutes (process time) per recipe (0: skip it)
    recipe_arms: tuple[str, ...] = ("vanilla", "24hbert", "cramming")   # its arms (RECIPE_ARMS)
    recipe_eval_batches: int = 16                # its held-out MLM loss: fixed batches of batch_size sequences

    def __post_init__(self):
        super().__post_init__()
        check(self.preset in PRESETS, f"preset {self.preset!r} is not one of {sorted(PRESETS)}")
        defaults = {f.name: f.default for f in dataclasses.fields(type(self))}
        for k, v in PRESETS[self.preset].items():       # the preset fills the fields left at their defaults
            if getattr(self, k) == defaults[k]:
                object.__setattr__(self, k, v)
        check(self.arch in ("", "crammed"), f"arch {self.arch!r} is not '' (the model as is) or crammed")
        if self.arch == "crammed":
            size = self.model.partition("-")[2]
            check(self.model in presets() and is_encoder(self.model) and f"crammed-{size}" in presets(),
                  f"arch=crammed takes an encoder preset's size (e.g. prelnbert-tiny -> crammed-tiny); "
                  f"{self.model!r} is not one")
            object.__setattr__(self, "model", f"crammed-{size}")
        check_spec(self.model)
        check(is_encoder(self.model), f"budget_bert pretrains an encoder; {self.model!r} is a decoder")
        check(self.budget_minutes > 0 and math.isfinite(self.budget_minutes),
              f"budget_minutes must be positive, got {self.budget_minutes}")
        check(self.batch_size > 0 and self.grad_accum > 0, "batch_size and grad_accum must be positive")
        check(8 <= self.seq_len <= 4096, f"seq_len must be in [8, 4096], got {self.seq_len}")
        check(self.vocab_size >= 64, f"vocab_size must be >= 64, got {self.vocab_size}")
        check(self.lr > 0 and self.downstream_lr > 0, "lr and downstream_lr must be positive")
        check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        check(0 < self.beta2 < 1 and self.eps > 0, "beta2 must be in (0, 1) and eps positive")
        check(0 < self.mlm_probability < 1, f"mlm_probability must be in (0, 1), got {self.mlm_probability}")
        check(self.min_decay_hours >= 0, f"min_decay_hours must be >= 0, got {self.min_decay_hours}")
        check(self.sim_steps >= 0 and self.sim_seeds >= 1 and self.sim_batch_size >= 1,
              "sim_steps must be >= 0, sim_seeds and sim_batch_size >= 1")
        check(0 <= self.sim_drift < 1 and self.sim_slowdown > 0 and 0 < self.sim_miss < 1,
              "sim_drift must be in [0, 1), sim_slowdown positive and sim_miss in (0, 1)")
        check(self.grad_clip >= 0, f"grad_clip must be >= 0 (0: off), got {self.grad_clip}")
        check(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")
        check(0 <= self.warmup < 1, f"warmup is a fraction of the budget in [0, 1), got {self.warmup}")
        check(0 < self.triangle_peak <= 1 and 0 <= self.triangle_start <= 1,
              "triangle_peak must be in (0, 1] and triangle_start in [0, 1]")
        check(0 <= self.batch_ramp <= 1, f"batch_ramp must be in [0, 1], got {self.batch_ramp}")
        check(self.guess_steps >= 0 and self.probe_steps >= 2, "guess_steps must be >= 0 and probe_steps >= 2")
        check(all(0 < m < 1 for m in self.markers), f"markers must be fractions in (0, 1), got {self.markers}")
        check(0 <= self.early_stop_after <= 1 and self.early_stop_loss >= 0,
              "early_stop_after must be in [0, 1] and early_stop_loss >= 0")
        check(self.eval_every >= 0 and self.eval_batches > 0, "eval_every must be >= 0 and eval_batches > 0")
        check(self.eval_dense >= 1, f"eval_dense must be >= 1, got {self.eval_dense}")
        check(0 <= self.eval_begin <= 1 and 0 <= self.eval_end <= 1 and self.eval_begin + self.eval_end <= 1,
              f"eval_begin and eval_end are shares of the budget summing to at most 1, got {self.eval_begin}, "
              f"{self.eval_end}")
        check(self.precision in ("auto", "fp32", "bf16", "fp16"),
              f"precision {self.precision!r} is not auto, fp32, bf16 or fp16")
        check(self.backend in ("torch", "deepspeed"), f"backend {self.backend!r} is not torch or deepspeed")
        check(self.zero_stage in (0, 1, 2) and (self.zero_stage == 0 or self.backend == "deepspeed"),
              f"zero_stage must be 0, 1 or 2 and needs backend=deepspeed, got {self.zero_stage}")
        check(self.downstream_max_per_class >= 10 and self.downstream_epochs > 0,
              "downstream_max_per_class must be >= 10 and downstream_epochs positive")
        check(self.recipe_minutes >= 0 and math.isfinite(self.recipe_minutes),
              f"recipe_minutes must be >= 0 (0: skip the recipe comparison), got {self.recipe_minutes}")
        bad = [a for a in self.recipe_arms if a not in RECIPE_ARMS]
        check(not bad, f"unknown recipe arm(s) {bad}; choose from {', '.join(RECIPE_ARMS)}")
        check(self.recipe_eval_batches >= 1, f"recipe_eval_batches must be >= 1, got {self.recipe_eval_batches}")


Params = BudgetBertParams


@dataclass
class Setup:
    """What every run of the comparison shares."""
    prep: Prepared                      # corpus, tokenizer, train / eval MLM tasks, a fresh model
    downstream: ClassificationTask      # unseen documents labelled by package
    precision: str                      # the resolved precision
    flops_per_token: float              # training FLOPs per token of the model


@dataclass
class Result:
    """Everything :func:`run` computed."""
    setup: Setup                        # the shared data, tokenizer, initial model and downstream task
    step_s: float                       # probed seconds per optimizer step
    planned_steps: int                  # step-linear's planned (guessed) optimizer steps
    runs: dict[str, TrainResult]        # schedule -> its pretraining run (``run.path``: the run directory)
    downstream_acc: dict[str, float]    # schedule -> test accuracy of its fine-tuned encoder
    untrained_acc: float                # test accuracy of the fine-tuned untrained encoder
    table: pd.DataFrame                 # one row per schedule: run_summary() and downstream_acc
    curves: pd.DataFrame                # one row per logged record: schedule, elapsed_s, step, loss, eval_loss, lr
    wall_s: float                       # seconds the recipe ran
    sim: pd.DataFrame | None = None     # simulated clock: one row per (arm, seed), see :func:`simulate`
    sim_curves: pd.DataFrame | None = None   # simulated clock, first seed: curves_frame of every arm
    recipes: pd.DataFrame | None = None      # recipe-level comparison: one row per arm, see :func:`compare_recipes`

    @property
    def n_params(self) -> int:
        return param_count(self.setup.prep.model)

    def planned(self, name: str) -> int | None:
        """The planned steps of run ``name`` (only the step-based baseline has them)."""
        return self.planned_steps if name == "step-linear" else None


def resolve_precision(precision: str, device=None) -> str:
    """``auto``: bf16 on a GPU that supports it (the papers' mixed precision), else fp32 (CPU bf16
    without native instructions is slower than fp32)."""
    if precision != "auto":
        return precision
    dev = resolve_device(device)
    return "bf16" if dev.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


def setup(P: BudgetBertParams, sparse_head: bool = True, tokenizer=None) -> Setup:
    """Corpus -> split -> tokenizer -> MLM tasks -> model, and the downstream task of unseen documents
    (``sparse_head=False``: the dense MLM head, whose FLOPs count every position; ``tokenizer``: reuse one)."""
    prep = prepare(P.corpus, P.model, P.seq_len, P.vocab_size, P.seed, dropout=P.dropout, sparse_head=sparse_head,
                   tokenizer=tokenizer)
    prep.train.mlm_probability = P.mlm_probability     # pretraining masks; the held-out loss keeps 15%
    ds = domain_task(P.downstream_corpus, prep.tokenizer, P.seq_len, exclude_ids=set(prep.train_corpus.ids),
                     max_per_class=P.downstream_max_per_class, seed=P.seed)
    fpt = flops_per_token(prep.model, P.seq_len, head_fraction=0.15 if sparse_head else 1.0)
    return Setup(prep=prep, downstream=ds, precision=resolve_precision(P.precision), flops_per_token=fpt)


def fresh_model(P: BudgetBertParams, S: Setup):
    """A copy of the freshly initialised model (every run starts from the same weights)."""
    return copy.deepcopy(S.prep.model)


def _optimizer(P: BudgetBertParams, model):
    # torch's fused AdamW (CPU and CUDA): the same update as the per-parameter loop, one fused call per group
    return make_optimizer(model, P.lr, P.weight_decay, (0.9, P.beta2), P.eps, fused=True)


def eval_cadence(P: BudgetBertParams):
    """``eval_every`` steps, or an :class:`EvalCadence` ``eval_dense`` times denser in the budget's
    first ``eval_begin`` and last ``eval_end`` (24hBERT: 3x, 5% and 1%)."""
    if not P.eval_every or (P.eval_dense == 1 or P.eval_begin + P.eval_end == 0):
        return P.eval_every
    dense = max(1, P.eval_every // P.eval_dense)
    return EvalCadence(P.eval_every, dense, dense, P.eval_begin, P.eval_end)


def _train_kwargs(P: BudgetBertParams, S: Setup) -> dict:
    return dict(eval_data=S.prep.eval, batch_size=P.batch_size, grad_accum=P.grad_accum, lr=P.lr,
                weight_decay=P.weight_decay, betas=(0.9, P.beta2), eps=P.eps, grad_clip=P.grad_clip or None,
                eval_every=eval_cadence(P), eval_batches=P.eval_batches, seed=P.seed, precision=S.precision,
                backend=P.backend, zero_stage=P.zero_stage, flops_per_token=S.flops_per_token)


def probe_step_time(P: BudgetBertParams, S: Setup, progress: bool = False, clock=None) -> float:
    """Seconds per optimizer step, timed over ``probe_steps`` steps of a throwaway copy of the model
    (the first step, which pays for warm-up allocations, is not counted); ``clock`` (default the
    wall clock) is what the seconds are, e.g. ``time.process_time``."""
    model = fresh_model(P, S)
    kw = _train_kwargs(P, S)
    kw.update(eval_data=None, eval_every=0)
    budget = Budget(max_steps=P.probe_steps) if clock is None else Budget(max_steps=P.probe_steps, clock=clock)
    res = train(model, S.prep.train, budget=budget, optimizer=_optimizer(P, model),
                progress=progress, **kw)
    recs = [r for r in res.history if "loss" in r]
    return (recs[-1]["elapsed_s"] - recs[0]["elapsed_s"]) / max(len(recs) - 1, 1)


def guess_steps(P: BudgetBertParams, step_s: float) -> int:
    """The step-based baseline's plan: the budget divided by the probed step time."""
    if P.guess_steps:
        return P.guess_steps
    return max(2, int(60.0 * P.budget_minutes / max(step_s, 1e-9)))


def schedule_for(P: BudgetBertParams, name: str, budget_hours: float | None = None) -> Schedule:
    """The LR schedule of run ``name``; ``warmup`` is a fraction of the budget for both linear ones
    (step-linear: ``round(warmup * planned_steps)`` warmup steps). ``budget_hours`` (default
    ``budget_minutes / 60``) is what ``min_decay_hours`` compares with."""
    if name == "step-linear":
        return Schedule("linear", warmup=P.warmup)
    if name == "time-linear":
        hours = P.budget_minutes / 60.0 if budget_hours is None else budget_hours
        return Schedule("time-linear", warmup=P.warmup, min_decay_hours=P.min_decay_hours,
                        budget_hours=hours if P.min_decay_hours else None)
    if name == "triangle":
        return Schedule("triangle", peak=P.triangle_peak, start=P.triangle_start)
    raise ConfigError(f"unknown schedule {name!r}; choose one of {SCHEDULES}")


def run_schedule(P: BudgetBertParams, S: Setup, name: str, planned_steps: int | None = None,
                 progress: bool = False, run_dir: str | Path | None = None) -> TrainResult:
    """Pretrain a fresh copy of the model for ``P.budget_minutes`` under schedule ``name``.

    The run goes to ``run_dir`` (default ``P.out_dir/runs/<name>``; only rank 0 writes under a
    launcher). Returns the :class:`~workbench.training.loop.TrainResult`.
    """
    if name not in SCHEDULES:
        raise ConfigError(f"unknown schedule {name!r}; choose one of {SCHEDULES}")
    if name == "step-linear" and not planned_steps:
        raise ConfigError("the step-linear baseline needs its planned (guessed) number of steps")
    main = (dist_env() or {"rank": 0})["rank"] == 0
    path = Path(run_dir) if run_dir is not None else Path(P.out_dir) / "runs" / name
    run = None
    if main:
        shutil.rmtree(path, ignore_errors=True)
        run = Run(path, {"recipe": "budget_bert", "schedule": name, "planned_steps": planned_steps, **asdict(P)})
        run.update_config(corpus_hash=S.prep.corpus.hash, precision=S.precision)
    budget = Budget(max_minutes=P.budget_minutes, max_steps=planned_steps if name == "step-linear" else None,
                    markers=P.markers, early_stop_after=P.early_stop_after if P.early_stop_loss else None,
                    early_stop_loss=P.early_stop_loss or None)
    model = fresh_model(P, S)
    res = train(model, S.prep.train, budget=budget, schedule=schedule_for(P, name), run=run,
                optimizer=_optimizer(P, model), batch_ramp=P.batch_ramp if name == "triangle" else 0.0,
                progress=progress, **_train_kwargs(P, S))
    if run is not None:
        run.write_summary(run_summary(P, name, res, planned_steps), complete=True)
    return res


def run_summary(P: BudgetBertParams, name: str, res: TrainResult, planned_steps: int | None = None) -> dict:
    """The headline numbers of one run."""
    return {"recipe": "budget_bert", "schedule": name, "budget_s": 60.0 * P.budget_minutes, "steps": res.step,
            "planned_steps": planned_steps, "tokens": res.tokens, "stop_reason": res.stop_reason,
            "train_s": res.train_s, "overshoot_s": res.overshoot_s, "lr_at_end_fraction": res.lr_factor_end,
            "final_eval_loss": res.final_eval_loss, "tokens_per_s": res.tokens / max(res.train_s or 0.0, 1e-9),
            "world_size": res.world_size, "backend": res.backend}


def downstream_accuracy(P: BudgetBertParams, S: Setup, model, progress: bool = False) -> float:
    """Fine-tune a copy of ``model`` on the downstream task; test accuracy."""
    return finetune_classifier(model, S.downstream, epochs=P.downstream_epochs, lr=P.downstream_lr, seed=P.seed,
                               batch_size=32, progress=progress)


def curves_frame(runs: dict[str, TrainResult]) -> pd.DataFrame:
    """One row per logged record of every run: schedule, elapsed_s, step, loss / eval_loss / lr."""
    import pandas as pd
    rows = []
    for name, res in runs.items():
        for r in res.history:
            if "loss" in r or "eval_loss" in r:
                rows.append({"schedule": name, "elapsed_s": r.get("elapsed_s"), "step": r.get("step"),
                             "loss": r.get("loss"), "eval_loss": r.get("eval_loss"), "lr": r.get("lr")})
    return pd.DataFrame(rows, columns=["schedule", "elapsed_s", "step", "loss", "eval_loss", "lr"])


# --------------------------------------------------------------------------- the simulated clock

def sim_clock(P: BudgetBertParams, k: int) -> SimClock:
    """The simulated clock of seed ``k``: 1 simulated s per step at nominal speed, drift knots every
    tenth of the budget, the optional slowdown from half the budget on."""
    return SimClock(micro_s=1.0, drift=P.sim_drift, seed=1000 * P.seed + k, period=max(P.sim_steps / 10, 1.0),
                    slowdown=P.sim_slowdown, slowdown_at=P.sim_steps / 2 if P.sim_slowdown != 1 else None)


def sim_plan(P: BudgetBertParams, arm: str, oracle_steps: int) -> int | None:
    """Planned steps of a step-schedule arm (None for the time-based ones)."""
    if arm == "oracle":
        return oracle_steps
    if arm in ("step-20%", "step+20%"):
        sign = -1 if arm == "step-20%" else 1
        return max(2, int(round(oracle_steps * (1 + sign * P.sim_miss))))
    if arm in ("time-linear", "triangle"):
        return None
    raise ConfigError(f"unknown simulated arm {arm!r}; choose one of {SIM_ARMS}")


def sim_run(P: BudgetBertParams, S: Setup, arm: str, k: int) -> TrainResult:
    """Pretrain a fresh copy of the model under arm ``arm`` and the simulated clock of seed ``k``
    (budget ``sim_steps`` simulated seconds, one micro-batch of ``sim_batch_size`` per step, data
    order seeded by ``k``, no evaluation until the deadline)."""
    clock = sim_clock(P, k)
    budget_s = float(P.sim_steps)
    planned = sim_plan(P, arm, clock.steps_within(budget_s))
    sched = Schedule("linear", warmup=P.warmup) if planned else schedule_for(P, arm, budget_hours=budget_s / 3600)
    budget = Budget(max_minutes=budget_s / 60.0, max_steps=planned, clock=clock)
    model = fresh_model(P, S)
    kw = _train_kwargs(P, S)
    kw.update(batch_size=P.sim_batch_size, grad_accum=1, eval_every=0, seed=1000 * P.seed + k,
              eval_batch_size=P.batch_size)
    return train(model, S.prep.train, sampler=clock.sampler(FullSampler()), budget=budget, schedule=sched,
                 optimizer=_optimizer(P, model), progress=False, **kw)


def simulate(P: BudgetBertParams, S: Setup) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The simulated-clock comparison: every arm of :data:`SIM_ARMS` under ``sim_seeds`` clocks.

    Returns one row per (arm, seed): ``eval_loss`` (held-out MLM loss at the deadline), ``lr_end``
    (LR multiplier of the last update), ``steps``, ``planned_steps``, ``oracle_steps``, ``sim_s``
    (simulated seconds trained), ``stop_reason``; and the curves of the first seed's runs.
    """
    import pandas as pd
    rows, first = [], {}
    for k in range(P.sim_seeds):
        oracle = sim_clock(P, k).steps_within(float(P.sim_steps))
        for arm in SIM_ARMS:
            res = sim_run(P, S, arm, k)
            rows.append({"arm": arm, "seed": k, "eval_loss": res.final_eval_loss, "lr_end": res.lr_factor_end,
                         "steps": res.step, "planned_steps": sim_plan(P, arm, oracle), "oracle_steps": oracle,
                         "sim_s": res.train_s, "stop_reason": res.stop_reason})
            if k == 0:
                first[arm] = res
    return pd.DataFrame(rows), curves_frame(first)


def sim_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per arm: mean and standard error of the loss at the deadline over seeds, mean LR at the last
    update, mean steps, and the seeds where time-linear's loss is lower (``time_linear_wins``)."""
    import pandas as pd
    tl = df[df.arm == "time-linear"].set_index("seed")["eval_loss"]
    out = []
    for arm in SIM_ARMS:
        g = df[df.arm == arm].set_index("seed")
        n = len(g)
        out.append({"arm": arm, "eval_loss": g.eval_loss.mean(),
                    "eval_loss_se": g.eval_loss.std(ddof=1) / math.sqrt(n) if n > 1 else float("nan"),
                    "lr_end": g.lr_end.mean(), "steps": g.steps.mean(),
                    "time_linear_wins": int((tl < g.eval_loss.reindex(tl.index)).sum()) if arm != "time-linear" else None,
                    "seeds": n})
    return pd.DataFrame(out).set_index("arm")


def recipe_params(P: BudgetBertParams, arm: str) -> BudgetBertParams:
    """The parameters of recipe arm ``arm``: the fields in :data:`RECIPE_SHARED` from ``P``, the model
    at ``P.model``'s size in the arm's family, its preset (or, for ``vanilla``, BERT's own settings),
    a budget of ``P.recipe_minutes``."""
    spec = RECIPE_ARMS[arm]
    size = P.model.partition("-")[2]
    raw = {k: getattr(P, k) for k in RECIPE_SHARED}
    raw.update({k: v for k, v in spec.items() if k not in ("family", "schedule", "sparse_head")},
               model=f"{spec['family']}-{size}", budget_minutes=P.recipe_minutes, sim_steps=0,
               out_dir=str(Path(P.out_dir) / "recipes" / arm))
    return BudgetBertParams(**raw)


def run_recipe(P: BudgetBertParams, arm: str, tokenizer=None) -> dict:
    """Pretrain recipe ``arm`` for ``P.recipe_minutes`` of this process's CPU time; returns its row:
    ``eval_loss`` (held-out MLM loss, 15% masking, ``recipe_eval_batches`` fixed batches),
    ``probe_acc`` (linear probe of the frozen encoder), ``probe_acc_untrained`` (the same probe of the
    arm's encoder before pretraining: what pretraining added), steps, tokens, CPU seconds, the LR multiplier
    at the last update, the model, batch and settings it ran with. The run goes to
    ``P.out_dir/recipes/<arm>``."""
    A, spec = recipe_params(P, arm), RECIPE_ARMS[arm]
    S = setup(A, sparse_head=spec["sparse_head"], tokenizer=tokenizer)
    name = spec["schedule"]
    planned = None
    if name == "step-linear":                   # BERT's step schedule, sized from a timing probe (CPU seconds)
        planned = guess_steps(A, probe_step_time(A, S, clock=time.process_time))
    path = Path(A.out_dir)
    shutil.rmtree(path, ignore_errors=True)
    run = Run(path, {"recipe": "budget_bert", "recipe_arm": arm, "schedule": name, "planned_steps": planned,
                     **asdict(A)})
    budget = Budget(max_minutes=A.budget_minutes, max_steps=planned, clock=time.process_time)
    model = fresh_model(A, S)
    untrained = linear_probe(model, S.downstream)     # the reference: this arm's encoder before pretraining
    kw = _train_kwargs(A, S)
    kw.update(eval_every=0)                     # one evaluation, at the end, on the same batches for every arm
    res = train(model, S.prep.train, budget=budget, schedule=schedule_for(A, name), run=run,
                optimizer=_optimizer(A, model), batch_ramp=A.batch_ramp if name == "triangle" else 0.0,
                progress=False, **kw)
    run.write_summary(run_summary(A, name, res, planned), complete=True)
    eval_loss = evaluate(res.model, S.prep.eval, batch_size=A.batch_size, max_batches=P.recipe_eval_batches,
                         precision=S.precision)
    return {"arm": arm, "model": A.model, "schedule": name, "eval_loss": eval_loss,
            "probe_acc": linear_probe(res.model, S.downstream), "probe_acc_untrained": untrained,
            "steps": res.step, "planned_steps": planned,
            "tokens": res.tokens, "cpu_s": res.train_s, "lr_end": res.lr_factor_end,
            "effective_batch": A.batch_size * A.grad_accum, "lr": A.lr, "dropout": A.dropout,
            "mlm_probability": A.mlm_probability, "sparse_head": spec["sparse_head"], "stop_reason": res.stop_reason}


def compare_recipes(P: BudgetBertParams, tokenizer=None):
    """The recipe-level comparison: every arm of ``P.recipe_arms`` (:func:`run_recipe`), one after the
    other in this process, under the same CPU-time budget; one row per arm (a DataFrame)."""
    import pandas as pd
    return pd.DataFrame([run_recipe(P, arm, tokenizer) for arm in P.recipe_arms]).set_index("arm")


def run(P: BudgetBertParams, progress: bool = False) -> Result:
    """The notebook's comparison: set up, probe the step time and guess the step-based plan, pretrain
    under each of :data:`SCHEDULES` for ``P.budget_minutes`` (runs in ``P.out_dir/runs/<schedule>``),
    fine-tune every encoder and the untrained one downstream, and tabulate."""
    import pandas as pd
    t0 = time.perf_counter()
    S = setup(P)
    sim, sim_curves = simulate(P, S) if P.sim_steps else (None, None)
    step_s = probe_step_time(P, S)
    planned = guess_steps(P, step_s)
    runs = {name: run_schedule(P, S, name, planned if name == "step-linear" else None, progress=progress)
            for name in SCHEDULES}
    accs = {name: downstream_accuracy(P, S, r.model) for name, r in runs.items()}
    untrained = downstream_accuracy(P, S, fresh_model(P, S))
    table = pd.DataFrame([{**run_summary(P, n, r, planned if n == "step-linear" else None), "downstream_acc": accs[n]}
                          for n, r in runs.items()]).set_index("schedule")
    recipes = compare_recipes(P, tokenizer=S.prep.tokenizer) if P.recipe_minutes else None
    return Result(setup=S, step_s=step_s, planned_steps=planned, runs=runs, downstream_acc=accs,
                  untrained_acc=untrained, table=table, curves=curves_frame(runs), wall_s=time.perf_counter() - t0,
                  sim=sim, sim_curves=sim_curves, recipes=recipes)


def summary(P: BudgetBertParams, result: Result) -> Summary:
    """``summary.json`` of the notebook. Headline: held-out loss at the simulated deadline, time-linear
    (method) vs. the mean of the step schedules mis-sized by -+``sim_miss`` (baseline), each a mean
    over ``sim_seeds``; without the simulated comparison (``sim_steps=0``) the real-clock runs'
    time-linear vs. step-linear. The real-clock numbers are in ``extra`` either way."""
    runs, S = result.runs, result.setup
    per = {n: run_summary(P, n, r, result.planned(n)) for n, r in runs.items()}
    last = max(per, key=lambda n: per[n]["train_s"] or 0.0)
    sim_extra = {}
    if result.sim is not None:
        t = sim_table(result.sim)
        miss = result.sim[result.sim.arm.isin(["step-20%", "step+20%"])].groupby("seed").eval_loss.mean()
        tl = result.sim[result.sim.arm == "time-linear"].set_index("seed").eval_loss
        metric = "sim_eval_loss"
        baseline = Arm(f"step schedule sized -+{P.sim_miss:.0%} (mean)", float(miss.mean()))
        method = Arm("time-linear", float(tl.mean()))
        sim_extra = {"sim": {
            "budget_sim_s": float(P.sim_steps), "seeds": P.sim_seeds, "drift": P.sim_drift,
            "slowdown": P.sim_slowdown, "batch_size": P.sim_batch_size,
            "eval_loss": {a: float(t.loc[a, "eval_loss"]) for a in SIM_ARMS},
            "eval_loss_se": {a: float(t.loc[a, "eval_loss_se"]) for a in SIM_ARMS},
            "lr_at_last_update": {a: float(t.loc[a, "lr_end"]) for a in SIM_ARMS},
            "steps": {a: float(t.loc[a, "steps"]) for a in SIM_ARMS},
            "time_linear_wins": {a: int(t.loc[a, "time_linear_wins"]) for a in SIM_ARMS if a != "time-linear"},
            "time_linear_minus_missized_per_seed": [float(x) for x in (tl - miss).tolist()],
            "per_run": [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
                        for r in result.sim.astype(object).to_dict(orient="records")]}}
    else:
        metric = "eval_loss"
        baseline = Arm("step-linear", runs["step-linear"].final_eval_loss)
        method = Arm("time-linear", runs["time-linear"].final_eval_loss)
    return Summary(
        paper="budget_bert", scale=P.scale, claim=CLAIM, metric=metric, paper_result=PAPER_RESULT,
        baseline=baseline, method=method, higher_is_better=False,
        extra={**sim_extra, "preset": P.preset, "real_clock_eval_loss_time_linear_minus_step_linear":
               runs["time-linear"].final_eval_loss - runs["step-linear"].final_eval_loss,
            "budget_s": 60.0 * P.budget_minutes,
            "overshoot_s": per[last]["overshoot_s"],
            "overshoot_run": last,
            "lr_at_end_fraction": {n: per[n]["lr_at_end_fraction"] for n in per},
            "eval_loss": {n: per[n]["final_eval_loss"] for n in per},
            "downstream_acc": dict(result.downstream_acc),
            "downstream_acc_untrained": result.untrained_acc,
            "tokens_per_s": {n: per[n]["tokens_per_s"] for n in per},
            "train_s": {n: per[n]["train_s"] for n in per},
            "steps": {n: per[n]["steps"] for n in per},
            "stop_reason": {n: per[n]["stop_reason"] for n in per},
            "guessed_steps": result.planned_steps, "probed_step_s": result.step_s,
            "model": P.model, "corpus": P.corpus, "precision": S.precision, "backend": P.backend,
            "effective_batch": P.batch_size * P.grad_accum,
            "downstream_task": S.downstream.describe(),
            **({"recipes": {"cpu_minutes": P.recipe_minutes,
                            **{k: {a: _plain(result.recipes.loc[a, k]) for a in result.recipes.index}
                               for k in ("eval_loss", "probe_acc", "probe_acc_untrained", "steps", "tokens", "cpu_s",
                                         "lr_end", "model", "effective_batch")}}}
               if result.recipes is not None else {}),
        },
        wall_s=result.wall_s)


def _plain(v):
    """A pandas / numpy scalar as a JSON value (NaN: None)."""
    if hasattr(v, "item"):
        v = v.item()
    return None if isinstance(v, float) and math.isnan(v) else v


def write_summary(P: BudgetBertParams, result: Result) -> Summary:
    """Write ``P.out_dir/summary.json``; returns the summary."""
    s = summary(P, result)
    s.write(P.out_dir)
    return s


# --------------------------------------------------------------------------- torchrun / deepspeed entry

def _rank0(obj):
    """Rank 0's (picklable) ``obj`` on every rank of an initialised process group; ``obj`` otherwise."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def main(argv: list[str] | None = None) -> int:
    """``[torchrun --nproc_per_node N] python -m workbench.recipes.budget_bert --schedule S --scale X --out DIR``:
    one pretraining run of the recipe (parameters from ``papers/budget_bert/<scale>.yaml`` plus
    ``-p key=value``); rank 0 writes the run and prints its summary as one JSON line."""
    import argparse
    import os
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    ap = argparse.ArgumentParser(prog="python -m workbench.recipes.budget_bert", description=main.__doc__.splitlines()[0])
    ap.add_argument("--schedule", default="time-linear", choices=SCHEDULES)
    ap.add_argument("--scale", default="tiny")
    ap.add_argument("--out", default="runs/budget_bert")
    ap.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--no-downstream", action="store_true", help="skip the fine-tuning check")
    a = ap.parse_args(argv)
    raw = {**load_yaml(params_file("budget_bert", a.scale)), **parse_overrides(a.param), "scale": a.scale,
           "out_dir": a.out}
    P = parse(BudgetBertParams, raw)
    S = setup(P)
    main_rank = (dist_env() or {"rank": 0})["rank"] == 0
    planned = None
    if a.schedule == "step-linear":
        # every rank probes its own step time: all must plan rank 0's number of steps, or the ranks
        # stop at different steps and the last collective of the longer ones never returns
        planned = _rank0(P.guess_steps or guess_steps(P, probe_step_time(P, S)))
    res = run_schedule(P, S, a.schedule, planned, progress=main_rank, run_dir=Path(a.out) / a.schedule)
    if main_rank:
        s = run_summary(P, a.schedule, res, planned)
        if not a.no_downstream:
            s["downstream_acc"] = downstream_accuracy(P, S, res.model, progress=True)
        print(json.dumps(s))
    shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
