"""The LiGO recipe (``notebooks/ligo.ipynb``): train small, grow, continue, count FLOPs to a target.

The claim (Wang et al., ICLR 2023, Table 1): growing BERT-Small into BERT-Base with a learned
linear growth operator (LiGO) saves 44.7% of the FLOPs (40.7% of the wall time) that training
BERT-Base from scratch needs to reach the scratch model's loss, ahead of StackBERT (34.1%), MSLT
(34.9%) and bert2BERT (29.0%).  The small model is *given*: savings are counted against scratch
training of the large model, the small model's own cost excluded (we report both).

The protocol, phase by phase (every number below comes from the model shapes and the tokens seen):

1. **small**: train the small model for ``small_steps`` (warmup + decay) at its own peak LR
   ``small_lr`` (a small model takes a larger LR than the large one can; the paper's BERT-Small is a
   given, separately trained model).  FLOPs =
   ``flops_per_token(small) x tokens``.
2. **grow**: make the large model's initial weights with each method --
   ``scratch`` (fresh init), ``stackbert`` / ``interpolation`` (depth by copying layers, width by
   Net2Net copies), ``bert2bert_fpi`` (bert2BERT's function-preserving width growth + stacking: with
   depth growth the very ``stackbert`` model, whose numbers it then takes instead of training twice),
   ``bert2bert_aki`` (bert2BERT's AKI width growth + stacking), ``ligo_authors`` (the operator as
   VITA-Group/LiGO releases it: depth first, per-large-layer width expansions, a head expansion,
   ``stackbert_noisy`` + ``rand`` init, AdamW wd 0.1 / eps 1e-6 / clipping 1.0, linear LR decay; every
   setting a ``ligo_*`` field) and ``ligo_canon`` (the workbench's original operator, fitted at constant
   ``ligo_lr``), each fitted for ``ligo_steps`` on the large model's own loss.  ``variant`` names the
   headline one.  The fixed methods are index copies: no FLOPs worth counting (their wall time is
   counted).  An operator's training costs, per step,
   one large-model forward + backward on its batch (``3 x forward``, from :mod:`workbench.models.flops`)
   plus one materialisation of the large weights and its backward, *measured* with
   ``torch.utils.flop_counter`` (:func:`materialize_flops`); the final export adds one more
   materialisation.
3. **large**: train every large model with the *same* steps, schedule, peak LR, seed and data order
   (scratch included), evaluating every ``eval_every`` steps (and before the first step).  Scratch
   warms up for ``warmup``; grown models do not (the authors' ``--warmup_steps 0``) unless ``rewarm``.
4. **accounting**: the target is scratch's final eval loss; a method's FLOPs to target are the
   FLOPs (operator + large training) at the first point where its eval loss is ``<= target``,
   linearly interpolated between the two evaluations that bracket the crossing
   (:func:`flops_to_target`).  Saved = ``1 - FLOPs_method / FLOPs_scratch``.  Wall time likewise,
   with the time spent in evaluations taken out (:func:`train_wall`).  Evaluation FLOPs are counted
   for no method (as in the paper).

**Your own small model.**  ``small`` may also be a directory saved with ``save_pretrained`` (a BERT,
RoBERTa pre-LN, GPT-2 or GPT-NeoX model, see :mod:`workbench.growth.arch`) holding its tokenizer too.
Then phase 1 is skipped: that model *is* the trained small model (its training cost is unknown and
counted as 0 FLOPs, 0 s: the ``*_incl_small`` numbers equal the others, and the summary's extra says
``small_given: true``); the family comes from its config (the ``model`` parameter is ignored, the
summary records the directory's family); ``large`` (a size) is applied to its config (same vocabulary,
positions and head size); ``vocab_size``, ``small_steps`` and ``small_lr`` are unused; the tasks are
built with its tokenizer on the same corpus split (:func:`workbench.data.prepare.prepare`).

Cost: one small run, one large run per method, ``ligo_steps`` operator steps (about one large step
each), and ``(large_steps / eval_every + 1)`` evaluations of ``eval_batches`` batches per method.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
# pandas is imported inside the functions that build frames: the CLI checks these Params, and a one-line
# error must not pay for importing pandas
from safetensors.torch import load_file, save_file
from torch.utils.flop_counter import FlopCounterMode

from ..config import asdict, check
from ..data.prepare import Prepared, prepare
from ..data.tokenizer import has_tokenizer
from ..errors import ConfigError, WorkbenchError
from ..growth import LiGO, grow, train_ligo
from ..growth.arch import GrowthError, arch_for_config, check_growable, dims, with_dims
from ..models import flops_per_token, load_config
from ..models.presets import SIZES, config as preset_config
from ..runs import Run
from ..training import Budget, FullSampler, Schedule, TrainResult, evaluate, resolve_device, train
from ..training.schedules import NAMES as SCHEDULES
from .base import Arm, RecipeParams, Summary

METHODS = ("scratch", "stackbert", "interpolation", "bert2bert_fpi", "bert2bert_aki", "ligo_authors", "ligo_canon")
ALIASES = {"net2net": "bert2bert_fpi"}  # and "ligo": "ligo_<variant>"
VARIANTS = ("authors", "canon")
SAME_AS_STACKBERT = ("same model as stackbert: with depth growth bert2BERT FPI (Net2Net width + stacking) is the "
                     "stackbert model, its numbers are stackbert's (not trained twice)")
CLOCKS = {"wall": time.monotonic, "cpu": time.process_time}
"""``clock="wall"`` is what the paper reports; ``"cpu"`` (the process's CPU time, all its threads) is the
honest stand-in on a machine shared with other jobs, whose load changes a wall-clock comparison
between runs made minutes apart far more than any method does.  On a GPU keep ``wall``: CPU time
does not see asynchronous kernels."""


# --------------------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class LigoParams(RecipeParams):
    """Parameters of ``notebooks/ligo.ipynb`` (its tagged cell is generated from these)."""
    out_dir: str = "runs/ligo"              # run directories, operator weights and summary.json go here
    corpus: str = "pydocs:numpy,sklearn"    # corpus spec: pydocs[:pkgs] | .txt/.jsonl/.parquet | datasets dir
    model: str = "bert"                     # family: bert | prelnbert (encoders, MLM) | gpt2 | pythia (decoders, CLM); ignored when small is a directory
    small: str = "2x64x2"                   # small model: a preset size (tiny, mini, ...), LxH[xA] (layers x hidden x heads), or a save_pretrained directory with its tokenizer (used as trained)
    large: str = "4x128x4"                  # large model, same head size as the small one
    methods: list[str] = field(default_factory=lambda: list(METHODS))  # methods to compare (scratch and ligo_<variant> required; ligo means ligo_<variant>, net2net means bert2bert_fpi)
    variant: str = "authors"                # the headline LiGO: authors (VITA-Group/LiGO's operator) | canon (the workbench's original)
    seq_len: int = 64                       # tokens per example
    vocab_size: int = 4096                  # tokenizer vocabulary (tokens)
    batch_size: int = 16                    # examples per step (small and large phases)
    small_steps: int = 800                  # optimizer steps of the small model
    large_steps: int = 800                  # optimizer steps of every large model (scratch included)
    lr: float = 1e-3                        # peak learning rate (AdamW) of the large models
    small_lr: float = 3e-3                  # peak learning rate (AdamW) of the small model
    warmup: float = 0.1                     # fraction of the small and scratch runs' steps warming up the LR, then decay
    rewarm: bool = False                    # also warm up the grown large models (the authors: warmup_steps 0 for them)
    schedule: str = "linear"                # linear | cosine | constant (step-based)
    weight_decay: float = 0.01              # AdamW decoupled weight decay
    dropout: float = 0.1                    # dropout probability of both models
    ligo_steps: int = 100                   # operator training steps (the paper: 100)
    ligo_batch_size: int = 8                # examples per operator step
    ligo_lr: float = 1e-3                   # operator peak learning rate (AdamW; both variants)
    ligo_depth_init: str = "stackbert_noisy"  # ligo_authors' depth init: stackbert_noisy | interlace
    ligo_width_init: str = "rand"           # ligo_authors' width init: rand (U(0,1) rows, sum 1) | net2net | rand_gauss
    ligo_depth_noise: float = 0.03          # ligo_authors' depth noise: U(0, noise) off the one-hot, rows normalised
    ligo_weight_decay: float = 0.1          # ligo_authors' operator AdamW weight decay
    ligo_eps: float = 1e-6                  # ligo_authors' operator AdamW eps
    ligo_clip: float = 1.0                  # ligo_authors' operator gradient-norm clipping (0: off)
    ligo_schedule: str = "linear"           # ligo_authors' operator LR: linear (decay to 0) | constant
    ligo_warmup_steps: int = 0              # ligo_authors' operator warmup steps (README literally inherits 10000)
    eval_every: int = 40                    # large-phase steps between evaluations
    eval_batches: int = 12                  # batches of batch_size per evaluation (fixed masks)
    clock: str = "wall"                     # wall | cpu: the time axis, in seconds (cpu: this process's CPU time)
    device: str = "auto"                    # auto | cpu | cuda
    jobs: int = 1                           # CPU processes for the methods' runs (0: $WORKBENCH_JOBS or 1)

    def __post_init__(self):
        super().__post_init__()
        growable = sorted(set(_FAMILY_OF.values()))      # the families the growth operators know
        check(self.model in growable, f"model {self.model!r} is not a family LiGO grows: {', '.join(growable)}")
        s = dims_tuple(small_config(self.small)) if is_model_dir(self.small) else parse_size(self.small)
        l = parse_size(self.large)
        for k, a, b in zip(("layers", "hidden", "heads", "ffn"), s, l):
            check(b >= a, f"large model must not be smaller than the small one: {k} {a} -> {b}")
        check(s[1] // s[2] == l[1] // l[2], f"small and large models need the same head size "
              f"({s[1] // s[2]} vs {l[1] // l[2]}): grow by adding heads")
        check(s != l, "small and large sizes are equal: nothing to grow")
        check(self.variant in VARIANTS, f"variant {self.variant!r} is not one of {VARIANTS}")
        if isinstance(self.methods, (list, tuple)):
            alias = {**ALIASES, "ligo": f"ligo_{self.variant}"}
            object.__setattr__(self, "methods", [alias.get(m, m) for m in self.methods])
        bad = [m for m in self.methods if m not in METHODS]
        check(not bad, f"unknown growth method(s) {bad}; choose from {METHODS}")
        check("scratch" in self.methods and f"ligo_{self.variant}" in self.methods,
              f"methods must include 'scratch' (the target) and 'ligo_{self.variant}' (the claim, variant)")
        check(len(set(self.methods)) == len(self.methods), f"methods repeat: {list(self.methods)}")
        for k in ("seq_len", "vocab_size", "batch_size", "small_steps", "large_steps", "ligo_steps",
                  "ligo_batch_size", "eval_every", "eval_batches"):
            check(getattr(self, k) > 0, f"{k} must be positive, got {getattr(self, k)}")
        check(8 <= self.seq_len <= 4096, f"seq_len must be in [8, 4096], got {self.seq_len}")
        check(self.lr > 0 and self.small_lr > 0 and self.ligo_lr > 0, "lr, small_lr and ligo_lr must be positive")
        check(0 <= self.warmup < 1, f"warmup is a fraction of the steps in [0, 1), got {self.warmup}")
        check(self.schedule in SCHEDULES and self.schedule not in ("time-linear", "triangle"),
              f"schedule {self.schedule!r} must be step-based: linear, cosine or constant")
        check(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")
        check(self.ligo_depth_init in ("stackbert_noisy", "interlace"),
              f"ligo_depth_init {self.ligo_depth_init!r} is not stackbert_noisy or interlace")
        check(self.ligo_width_init in ("net2net", "rand", "rand_gauss"),
              f"ligo_width_init {self.ligo_width_init!r} is not rand, net2net or rand_gauss")
        check(self.ligo_depth_noise >= 0 and self.ligo_weight_decay >= 0 and self.ligo_eps > 0 and self.ligo_clip >= 0
              and self.ligo_warmup_steps >= 0, "ligo_depth_noise, ligo_weight_decay, ligo_clip, ligo_warmup_steps "
              "must be >= 0 and ligo_eps > 0")
        check(self.ligo_schedule in ("linear", "constant"), f"ligo_schedule {self.ligo_schedule!r} is not linear or constant")
        check(self.clock in CLOCKS, f"clock {self.clock!r} is not one of {tuple(CLOCKS)}")
        check(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
              f"device {self.device!r} is not auto, cpu or cuda[:N]")
        check(self.jobs >= 0, f"jobs must be >= 0 (0: $WORKBENCH_JOBS or 1), got {self.jobs}")


Params = LigoParams


_SIZE = re.compile(r"(\d+)x(\d+)(?:x(\d+))?")


def parse_size(spec: str) -> tuple[int, int, int, int]:
    """A model size -> ``(layers, hidden, heads, ffn)``.

    ``spec`` is a preset size name (``tiny`` 2/128/2, ``mini`` 4/256/4, ``small`` 4/512/8,
    ``medium`` 8/512/8, ``base`` 12/768/12; see :mod:`workbench.models.presets`) or explicit
    ``LxH`` (heads of size 64, BERT's) or ``LxHxA`` (A heads); explicit sizes get ``ffn = 4 H``.
    """
    if spec in SIZES:
        return tuple(SIZES[spec])
    m = _SIZE.fullmatch(spec.strip())
    if not m:
        raise ConfigError(f"model size {spec!r} is not a preset size ({', '.join(SIZES)}) nor LxH / LxHxA "
                          f"(nor a model directory: give a path with a '/')")
    L, H = int(m.group(1)), int(m.group(2))
    A = int(m.group(3)) if m.group(3) else H // 64
    if L < 1 or H < 1 or A < 1 or H % A:
        raise ConfigError(f"model size {spec!r}: need layers >= 1 and hidden divisible by heads "
                          f"(LxH uses heads of 64: give LxHxA for other head sizes)")
    return L, H, A, 4 * H


#: model_type of a growable config -> the recipe's family name
_FAMILY_OF = {"bert": "bert", "roberta-prelayernorm": "prelnbert", "gpt2": "gpt2", "gpt_neox": "pythia"}


def is_model_dir(spec: str) -> bool:
    """Whether ``small`` names a saved model directory (an existing directory, or any path-like
    spec: one with a ``/`` or starting with ``.`` or ``~``) rather than a size."""
    if spec in SIZES or _SIZE.fullmatch(spec.strip()):
        return False
    return Path(spec).expanduser().is_dir() or "/" in spec or spec.startswith((".", "~"))


def small_config(spec: str):
    """The HF config of a small-model directory, validated for the recipe: it exists, has a
    ``config.json`` and a tokenizer, and its architecture is one :mod:`workbench.growth.arch` grows."""
    d = Path(spec).expanduser()
    if not d.is_dir():
        raise ConfigError(f"small model directory {spec!r} does not exist (small is a size such as 2x64x2, or a "
                          f"directory saved with save_pretrained)")
    if not (d / "config.json").is_file():
        raise ConfigError(f"small model directory {spec!r} has no config.json: save the model there with "
                          f"model.save_pretrained(DIR)")
    if not has_tokenizer(d):
        raise ConfigError(f"small model directory {spec!r} holds no tokenizer: save it next to the model with "
                          f"tokenizer.save_pretrained(DIR)")
    try:
        cfg = load_config(str(d))
        arch_for_config(cfg)
    except GrowthError:
        raise ConfigError(f"small model {spec!r} is a {type(cfg).__name__} ({cfg.model_type}): LiGO grows only "
                          f"BERT, RoBERTa pre-LN, GPT-2 and GPT-NeoX models") from None
    except WorkbenchError as e:
        raise ConfigError(f"small model {spec!r}: {e}") from None
    return cfg


def dims_tuple(config) -> tuple[int, int, int, int]:
    d = dims(config)
    return d["layers"], d["hidden"], d["heads"], d["ffn"]


def family(P: "LigoParams") -> str:
    """The model family the recipe runs: the small directory's (when given), else ``P.model``."""
    return _FAMILY_OF[small_config(P.small).model_type] if is_model_dir(P.small) else P.model


# --------------------------------------------------------------------------------------- setup


@dataclass
class Setup:
    """Everything the phases share: tasks, the two configs, FLOPs per training token of each."""
    params: LigoParams
    prep: Prepared                  # corpus, tokenizer and tasks (its own model is not used)
    small_config: Any
    large_config: Any
    small_fpt: float                # training FLOPs per token of the small model
    large_fpt: float                # ... of the large model
    head_fraction: float            # share of positions the LM head decodes (0.15 for a sparse MLM head)
    device: torch.device
    out: Path
    small_model: Any = None         # the user's trained small model (``small`` a directory), else None


def setup(P: LigoParams, clean: bool = True) -> Setup:
    """Corpus, tokenizer, tasks and the small / large configs for ``P`` (``clean`` empties ``out_dir``'s runs)."""
    given = None
    if is_model_dir(P.small):
        small_config(P.small)       # the one-line errors, before the corpus is read
        # its own tokenizer, checked against it (vocabulary, special tokens, seq_len vs positions)
        prep = prepare(P.corpus, str(Path(P.small).expanduser()), seq_len=P.seq_len, seed=P.seed, dropout=P.dropout)
        given = prep.model.float()
        base = given.config
    else:
        prep = prepare(P.corpus, f"{P.model}-tiny", seq_len=P.seq_len, vocab_size=P.vocab_size, seed=P.seed,
                       dropout=P.dropout)
        base = preset_config(f"{P.model}-tiny", len(prep.tokenizer), max_positions=max(P.seq_len, 128),
                             dropout=P.dropout)

    def sized(spec):
        L, H, A, F = parse_size(spec)
        return with_dims(base, layers=L, hidden=H, heads=A, ffn=F)

    small_cfg, large_cfg = (base if given is not None else sized(P.small)), sized(P.large)
    try:
        check_growable(small_cfg, large_cfg)
    except GrowthError as e:
        raise ConfigError(f"cannot grow {P.small} into {P.large}: {e}") from None
    head_fraction = prep.train.mlm_probability if prep.encoder and prep.train.sparse_head else 1.0
    out = Path(P.out_dir)
    if clean:
        for sub in ("small", "operator", *(f"operator-{v}" for v in VARIANTS), *(f"large-{m}" for m in METHODS)):
            shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    return Setup(P, prep, small_cfg, large_cfg,
                 flops_per_token(small_cfg, P.seq_len, head_fraction=head_fraction),
                 flops_per_token(large_cfg, P.seq_len, head_fraction=head_fraction),
                 head_fraction, resolve_device(None if P.device == "auto" else P.device), out, given)


def new_model(config, seed: int):
    """A freshly initialised HF model of ``config`` (deterministic under ``seed``, global RNG untouched)."""
    cls = arch_for_config(config).model_cls
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(config)


# --------------------------------------------------------------------------------------- phases


@dataclass
class Phase:
    """One phase's cost: ``flops`` from the model FLOP counts, ``wall_s`` without evaluations."""
    phase: str          # small | grow | operator | large
    method: str         # "" for the small model, else the growth method
    steps: int
    tokens: int
    flops: float
    wall_s: float


def train_phase(model, S: Setup, steps: int, fpt: float, run_dir: Path, progress: bool = False,
                tag: dict | None = None, eval_every: int | None = None, lr: float | None = None,
                warmup: float | None = None) -> TrainResult:
    """Train ``model`` for ``steps`` with the recipe's schedule; eval every ``eval_every`` steps.

    Every phase (small and each large model) goes through here, so the schedule, LR, seed and data
    order are the same for all of them; only ``steps`` and the FLOPs per token differ (and the small
    model, whose curve nobody reads, is evaluated only at the end: ``eval_every=0``, and has its own
    peak ``lr``: ``small_lr``).  Returns the
    :class:`~workbench.training.loop.TrainResult` (its records carry cumulative ``flops``).
    """
    P = S.params
    run = Run(run_dir, {"recipe": "ligo", **(tag or {}), **asdict(P)}, overwrite=True)
    run.update_config(corpus_hash=S.prep.corpus.hash, config=model.config.to_dict())
    return train(model, S.prep.train, eval_data=S.prep.eval, budget=Budget(max_steps=steps, clock=CLOCKS[P.clock]),
                 schedule=Schedule(P.schedule, warmup=P.warmup if warmup is None else warmup), run=run,
                 batch_size=P.batch_size, lr=P.lr if lr is None else lr, weight_decay=P.weight_decay,
                 eval_every=P.eval_every if eval_every is None else eval_every,
                 eval_batches=P.eval_batches, seed=P.seed, device=S.device, progress=progress, log_every=1,
                 flops_per_token=fpt)


def train_small(S: Setup, progress: bool = False):
    """Phase 1: the small model, trained from scratch.  Returns ``(model, TrainResult, Phase)``."""
    P = S.params
    model = new_model(S.small_config, P.seed)
    res = train_phase(model, S, P.small_steps, S.small_fpt, S.out / "small", progress, {"phase": "small"},
                      eval_every=0, lr=P.small_lr)
    wall = train_wall(res.history)
    return res.model, res, Phase("small", "", res.step, res.tokens, res.tokens * S.small_fpt,
                                 wall["wall_s"].iloc[-1] if len(wall) else res.wall_s)


def given_small(S: Setup):
    """Phase 1 when the small model is given: no training, only its eval loss.

    Returns ``(model, eval loss, Phase)``; the phase is 0 steps, 0 tokens, 0 FLOPs, 0 s: what the
    user spent training it is unknown, so the ``*_incl_small`` costs equal the others.
    """
    P = S.params
    model = S.small_model.to(S.device)
    loss = evaluate(model, S.prep.eval, P.batch_size, P.eval_batches, S.device)
    return model, float(loss), Phase("small", "", 0, 0, 0.0, 0.0)


def materialize_flops(ligo) -> dict[str, float]:
    """FLOPs of one ``ligo.materialize()`` (``forward``) and of its backward (``backward``), measured.

    Counted with ``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs per multiply-add of every
    matmul / einsum; element-wise scaling and concatenation are not counted -- they are O(parameters),
    negligible next to the matmuls).  The backward is driven with a unit gradient on every produced
    tensor; only the operator's parameters need gradients, which is what autograd computes in a real
    operator step.  Shapes, not values, decide the count, so one measurement serves every step.
    """
    with FlopCounterMode(display=False) as fc:
        params = ligo.materialize()
        fwd = fc.get_total_flops()
        outs = [t for t in params.values() if t.requires_grad]
        torch.autograd.backward(outs, [torch.ones_like(t) for t in outs])
        total = fc.get_total_flops()
    ligo.zero_grad(set_to_none=True)
    return {"forward": float(fwd), "backward": float(total - fwd)}


def operator_batches(S: Setup) -> list[dict]:
    """The operator's ``ligo_steps`` batches: an own seeded pass over the training data.

    Drawn with a sampler seeded ``seed + 1`` and masked with step numbers no training phase uses,
    so the operator does not see the large phase's first batches with the same masks.
    """
    P = S.params
    sampler = FullSampler()
    sampler.setup(S.prep.train, seed=P.seed + 1)
    return [S.prep.train.collate(sampler.next(P.ligo_batch_size), step=10_000_000 + k) for k in range(P.ligo_steps)]


def operator_dir(S: Setup, variant: str) -> Path:
    """Where a variant's operator is saved: ``operator`` for the headline ``variant``, else ``operator-<v>``."""
    return S.out / ("operator" if variant == S.params.variant else f"operator-{variant}")


def train_operator(small, S: Setup, progress: bool = False, variant: str | None = None):
    """Phase 2 for LiGO: fit the operator, export the large model.  Returns ``(model, ligo, Phase, losses, mat)``.

    FLOPs = ``large_fpt x operator tokens`` (forward + backward of the large model on each batch)
    + ``steps x (materialise forward + backward)`` + one materialise forward for the export.
    The operator is fitted on the task's own loss (the sparse MLM head for encoders) via
    :meth:`LiGO.call`.
    """
    P = S.params
    variant = variant or P.variant
    small = small.to(S.device)
    if variant == "authors":   # the authors' operator, every setting a Params field
        ligo = LiGO(small, S.large_config, variant="authors", depth_init=P.ligo_depth_init,
                    width_init=P.ligo_width_init, depth_noise=P.ligo_depth_noise, seed=P.seed)
        opt = dict(weight_decay=P.ligo_weight_decay, eps=P.ligo_eps, max_grad_norm=P.ligo_clip or None,
                   schedule=P.ligo_schedule, warmup_steps=P.ligo_warmup_steps)
    else:                      # the workbench's original operator and fit (constant LR, no decay, no clipping)
        ligo = LiGO(small, S.large_config, variant="canon", depth_init="stackbert_noisy", width_init="net2net",
                    seed=P.seed)
        opt = {}
    ligo = ligo.to(S.device)
    init_state = {k: v.detach().cpu().clone() for k, v in ligo.state_dict().items()}
    mat = materialize_flops(ligo)
    clock = CLOCKS[P.clock]
    t0 = clock()  # the operator's time: its batches, its steps and the export
    batches = operator_batches(S)
    tokens = sum(S.prep.train.tokens(b) for b in batches)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(P.seed)  # dropout inside the operator steps
        losses = train_ligo(ligo, batches, steps=P.ligo_steps, lr=P.ligo_lr, progress=progress,
                            model_loss=S.prep.train.loss, **opt)
    model = ligo.export()
    wall = clock() - t0
    flops = S.large_fpt * tokens + len(losses) * (mat["forward"] + mat["backward"]) + mat["forward"]
    _save_operator(operator_dir(S, variant), ligo, init_state, losses, batches, S)
    return model, ligo, Phase("operator", f"ligo_{variant}", len(losses), tokens, flops, wall), losses, mat


def _save_operator(path: Path, ligo, init_state, losses, batches, S: Setup):
    """``operator/``: the fitted and the initial operator (safetensors) and the per-step losses."""
    run = Run(path, {"recipe": "ligo", "phase": "operator", **asdict(S.params)}, overwrite=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in ligo.state_dict().items()}, str(path / "ligo.safetensors"))
    save_file({k: v.contiguous() for k, v in init_state.items()}, str(path / "ligo_init.safetensors"))
    tok = 0
    for k, (loss, b) in enumerate(zip(losses, batches), 1):
        tok += S.prep.train.tokens(b)
        run.log({"step": k, "tokens": tok, "loss": loss})


def grow_model(method: str, small, S: Setup):
    """Phase 2 for the fixed methods: ``(large model, Phase, note)``; None model when skipped.

    ``stackbert`` / ``interpolation`` / ``net2net`` go through :func:`workbench.growth.grow`
    (Net2Net copies for width, then layer copies for depth).  When the hidden size does not grow by
    an integer factor (e.g. 512 -> 768), function-preserving width growth is impossible and the width
    is grown by the same balanced unit copies *without* the LayerNorm-preserving guarantee: the
    untrained LiGO operator with one-hot depth (exactly these baselines otherwise, see
    ``tests/test_growth.py``).  ``net2net`` with depth growth is bert2BERT's FPI + stacking, the very
    model ``stackbert`` builds: it is skipped with a note rather than trained twice.
    """
    P = S.params
    s, l = dims(S.small_config), dims(S.large_config)
    deepen = s["layers"] != l["layers"]
    if method == "scratch":
        return new_model(S.large_config, P.seed + 1), Phase("grow", method, 0, 0, 0.0, 0.0), "fresh init"
    if method == "bert2bert_fpi" and deepen and "stackbert" in P.methods:
        return None, None, SAME_AS_STACKBERT
    if method.startswith("bert2bert") and l["hidden"] % s["hidden"]:
        return None, None, f"skipped: hidden {s['hidden']} -> {l['hidden']} is not an integer factor (no FPI/AKI)"
    clock = CLOCKS[P.clock]
    t0 = clock()
    note = "function-preserving width (Net2Net copies)" if l["hidden"] != s["hidden"] else "depth only"
    if method == "bert2bert_aki":
        note = "bert2BERT AKI width (new units from the block above) + stacking"
    if l["hidden"] % s["hidden"]:
        depth = "interlace" if method == "interpolation" else "stackbert_noisy"
        with torch.no_grad():
            model = LiGO(small, S.large_config, variant="canon", depth_init=depth, width_init="net2net",
                         depth_noise=0.0, seed=P.seed).export()
        note = "balanced unit copies for width (non-integer factor: not function preserving)"
    else:
        model = grow(small, S.large_config, method=method, seed=P.seed)
    return model, Phase("grow", method, 0, 0, 0.0, clock() - t0), note


def train_large(method: str, model, S: Setup, progress: bool = False):
    """Phase 3: evaluate ``model`` once, then train it exactly like every other large model."""
    P = S.params
    model = model.to(S.device)
    initial = evaluate(model, S.prep.eval, P.batch_size, P.eval_batches, S.device)
    warm = P.warmup if (method == "scratch" or P.rewarm) else 0.0   # grown models: no re-warmup by default
    res = train_phase(model, S, P.large_steps, S.large_fpt, S.out / f"large-{method}", progress,
                      {"phase": "large", "method": method}, warmup=warm)
    wall = train_wall(res.history)
    return res, initial, Phase("large", method, res.step, res.tokens, res.tokens * S.large_fpt,
                               float(wall["wall_s"].iloc[-1]) if len(wall) else res.wall_s)


# --------------------------------------------------------------------------------------- accounting


def train_wall(history: list[dict]):
    """Eval records of a run as a DataFrame ``step, tokens, flops, eval_loss, wall_s``.

    ``wall_s`` is the training time up to that step *without* the time spent in evaluations: the
    loop logs ``elapsed_s`` right after each optimizer step (train record) and again after each
    evaluation at the same step; the difference is that evaluation's cost, subtracted from every
    later point.  Needs ``log_every=1`` (what :func:`train_phase` uses).
    """
    import pandas as pd
    before = {r["step"]: r["elapsed_s"] for r in history if "loss" in r and "elapsed_s" in r}
    rows, spent = [], 0.0
    for r in history:
        if r.get("eval_loss") is None:
            continue
        t = before.get(r["step"], r["elapsed_s"])
        rows.append({"step": r["step"], "tokens": r["tokens"], "flops": r["flops"], "eval_loss": r["eval_loss"],
                     "wall_s": t - spent})
        spent += r["elapsed_s"] - t
    return pd.DataFrame(rows, columns=["step", "tokens", "flops", "eval_loss", "wall_s"])


def curve(method: str, res, initial_eval: float, grow_phase: Phase, small_phase: Phase):
    """One method's eval curve on the cumulative cost axes.

    ``flops`` / ``wall_s`` = growth (operator) + large training, the paper's axis;
    ``flops_total`` / ``wall_total_s`` add the small model's training (zero for scratch, which
    does not use it).  The first row is the grown model before any large-model step.
    """
    import pandas as pd
    ev = train_wall(res.history)
    first = pd.DataFrame([{"step": 0, "tokens": 0, "flops": 0.0, "eval_loss": initial_eval, "wall_s": 0.0}])
    df = pd.concat([first, ev], ignore_index=True)
    df["flops_large"] = df["flops"]                 # large-model training only (the operator's cost left out)
    df["flops"] = df["flops"] + grow_phase.flops
    df["wall_s"] = df["wall_s"] + grow_phase.wall_s
    uses_small = method != "scratch"
    df["flops_total"] = df["flops"] + (small_phase.flops if uses_small else 0.0)
    df["wall_total_s"] = df["wall_s"] + (small_phase.wall_s if uses_small else 0.0)
    df.insert(0, "method", method)
    return df


def flops_to_target(cost, loss, target: float) -> float | None:
    """Cost (FLOPs, seconds, steps ...) at which ``loss`` first reaches ``<= target``; None if never.

    ``cost`` and ``loss`` are the points of one eval curve in training order (cost increasing).
    Between the last point above the target and the first one at or below it the curve is taken
    as linear, so the answer does not depend on where the evaluations happen to fall; a curve that
    starts at or below the target reaches it at its first point.  NaN losses are skipped.
    """
    c = np.asarray(cost, dtype=float)
    y = np.asarray(loss, dtype=float)
    if c.shape != y.shape:
        raise ConfigError(f"cost and loss differ in length: {c.shape} vs {y.shape}")
    ok = ~np.isnan(y)
    c, y = c[ok], y[ok]
    hit = np.flatnonzero(y <= target)
    if len(hit) == 0:
        return None
    i = int(hit[0])
    if i == 0:
        return float(c[0])
    c0, c1, y0, y1 = c[i - 1], c[i], y[i - 1], y[i]
    return float(c0 + (y0 - target) / (y0 - y1) * (c1 - c0))


def saved(method_cost: float | None, scratch_cost: float | None) -> float | None:
    """Fraction of scratch's cost saved: ``1 - method / scratch`` (None when either never reached)."""
    if method_cost is None or not scratch_cost:
        return None
    return 1.0 - method_cost / scratch_cost


def account(curves, target: float):
    """Per method: cost to target on every axis and the fraction saved against scratch (a DataFrame)."""
    import pandas as pd
    rows = []
    for m, df in curves.groupby("method", sort=False):
        row = {"method": m, "final_eval_loss": float(df["eval_loss"].iloc[-1]),
               "initial_eval_loss": float(df["eval_loss"].iloc[0])}
        for col in ("flops", "flops_total", "wall_s", "wall_total_s", "flops_large"):
            if col in df:
                row[f"{col}_to_target"] = flops_to_target(df[col], df["eval_loss"], target)
        row["steps_to_target"] = flops_to_target(df["step"], df["eval_loss"], target)
        rows.append(row)
    out = pd.DataFrame(rows).set_index("method")
    base = out.loc["scratch"]
    for col, name in (("flops", "flops_saved"), ("flops_total", "flops_saved_incl_small"),
                      ("wall_s", "wall_saved"), ("wall_total_s", "wall_saved_incl_small"),
                      ("flops_large", "flops_saved_excl_operator")):
        if f"{col}_to_target" in out:
            out[name] = [saved(v, base[f"{col}_to_target"]) for v in out[f"{col}_to_target"]]
    return out.astype(object).where(out.notna(), None)


# --------------------------------------------------------------------------------------- the whole recipe


CLAIM = ("LiGO saves 44.7% of the FLOPs (40.7% of the wall time) of training BERT-Base from scratch, "
         "ahead of StackBERT (34.1%), MSLT (34.9%) and bert2BERT (29.0%)")
PAPER_RESULT = ("saves up to 50% of the compute of training from scratch; BERT-Base from BERT-Small ~45% FLOPs, "
                "~40% wall time (Wang et al., ICLR 2023)")


@dataclass
class MethodRun:
    """One growth method, grown and trained: its phases, its eval curve, and LiGO's operator if any."""
    method: str
    note: str                           # how it was grown, or why it was skipped
    grow: Phase | None = None
    large: Phase | None = None
    curve: pd.DataFrame | None = None   # from curve(); None when skipped
    ligo: LiGO | None = None
    ligo_init: dict = field(default_factory=dict)
    operator_losses: list[float] = field(default_factory=list)
    materialize: dict[str, float] = field(default_factory=dict)


@dataclass
class Result:
    """Everything ``notebooks/ligo.ipynb`` shows: costs, curves, the accounting and the fitted operator."""
    setup: Setup                        # tasks, the two configs, FLOPs per token, the output folder
    sizes: pd.DataFrame                 # the two models: dims and training FLOPs per token (model_sizes())
    small_eval_loss: float              # the small model's final eval loss
    phases: pd.DataFrame                # one row per phase: phase, method, steps, tokens, flops, wall_s
    curves: pd.DataFrame                # eval curves on the cost axes (curve()), every trained method
    table: pd.DataFrame                 # account(): cost to target and fraction saved, index = method
    target: float                       # scratch's final eval loss
    notes: dict[str, str]               # method -> how it was grown (or why it was skipped) and its eval loss
    training_curves: pd.DataFrame       # train + eval records of every large model (training_curves())
    ligo: LiGO | None                   # the fitted operator
    ligo_init: dict[str, torch.Tensor]  # its state at init (for the "what it learned" views)
    operator_losses: list[float]        # the operator's loss per step
    materialize: dict[str, float]       # FLOPs of one materialisation (forward / backward)
    wall_s: float                       # seconds the recipe ran


def run_method(method: str, small, small_phase: Phase, S: Setup, progress: bool = False) -> MethodRun:
    """Phases 2 and 3 for one method: grow ``small`` (fit the operator for ``ligo``), then train."""
    r = MethodRun(method, "")
    if method.startswith("ligo_"):
        variant = method.removeprefix("ligo_")
        model, r.ligo, r.grow, r.operator_losses, r.materialize = train_operator(small, S, progress, variant)
        r.ligo_init = _load_init(operator_dir(S, variant))
        r.note = (f"operator {len(r.operator_losses)} steps, loss {r.operator_losses[0]:.3f} -> "
                  f"{r.operator_losses[-1]:.3f}")
    else:
        model, r.grow, r.note = grow_model(method, small, S)
        if model is None:
            return r
    res, initial, r.large = train_large(method, model, S, progress)
    r.curve = curve(method, res, initial, r.grow, small_phase)
    r.note += f"; eval loss {initial:.3f} -> {res.final_eval_loss:.3f}"
    return r


def resolve_jobs(jobs: int) -> int:
    """``jobs``, or for 0 the ``WORKBENCH_JOBS`` environment variable (``reproduce`` sets it: the cores
    for one notebook, 1 when notebooks already run side by side), else 1."""
    if jobs:
        return jobs
    try:
        return max(1, int(os.environ.get("WORKBENCH_JOBS", "1") or 1))
    except ValueError:
        raise ConfigError(f"WORKBENCH_JOBS must be a whole number, got {os.environ['WORKBENCH_JOBS']!r}") from None


def _worker_init() -> None:
    torch.set_num_threads(1)   # one compute thread per process (README, Threads)


def _method_worker(P: LigoParams, method: str, config, state: dict, small_phase: Phase) -> MethodRun:
    """:func:`run_method` in a worker process: the same setup (``clean=False``), the small model rebuilt
    from its weights. Every run seeds its own RNG (model init, data order, masks, dropout), so the
    result is the one a single process computes, up to float rounding (a fresh process lays out its
    buffers differently: the operator's losses moved by ~5e-7 in the test). ``jobs`` is therefore a
    parameter of the run, 1 by default: two runs with the same ``jobs`` give the same bits."""
    S = setup(P, clean=False)
    small = arch_for_config(config).model_cls(config)
    small.load_state_dict(state)
    return run_method(method, small.to(S.device), small_phase, S)


def run_methods_parallel(P: LigoParams, small, small_phase: Phase, jobs: int) -> list[MethodRun]:
    """Every method's growth and large-model run, in ``jobs`` one-thread processes (CPU only): the
    methods do not depend on each other once the small model is trained. Measured at ``tiny`` on 2
    cores: two one-thread processes side by side ran the large models 10-16x sooner than one
    process with two threads. Returns the runs in :func:`method_order`."""
    import concurrent.futures as cf
    import multiprocessing as mp
    state = {k: v.detach().cpu().clone() for k, v in small.state_dict().items()}
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"), initializer=_worker_init) as ex:
        futures = [ex.submit(_method_worker, P, m, small.config, state, small_phase) for m in method_order(P)]
        return [f.result() for f in futures]


def method_order(P: LigoParams) -> list[str]:
    """Scratch first (its final loss is everyone's target), then the others as given."""
    return ["scratch"] + [m for m in P.methods if m != "scratch"]


def model_sizes(S: Setup) -> pd.DataFrame:
    """The small and the large model: layers, hidden, heads, ffn and training FLOPs per token."""
    import pandas as pd
    return pd.DataFrame([{"model": name, **dims(cfg), "training FLOPs/token": fpt}
                         for name, cfg, fpt in (("small", S.small_config, S.small_fpt),
                                                ("large", S.large_config, S.large_fpt))])


def run(P: LigoParams, progress: bool = False) -> Result:
    """All phases for ``P``: the small model, every method grown and trained, the accounting.

    Scratch goes first (its final eval loss is the target); ``P.out_dir`` gets the run directories
    (``small``, ``operator``, ``large-<method>``), replacing older ones there.
    """
    import pandas as pd
    t0 = time.perf_counter()
    S = setup(P)
    if S.small_model is not None:
        small, small_eval, small_phase = given_small(S)
    else:
        small, small_res, small_phase = train_small(S, progress)
        small_eval = float(small_res.final_eval_loss)
    jobs = min(resolve_jobs(P.jobs), len(method_order(P)))
    if jobs > 1 and S.device.type == "cpu":
        runs = run_methods_parallel(P, small, small_phase, jobs)
    else:
        runs = [run_method(method, small, small_phase, S, progress) for method in method_order(P)]
    trained = [r.method for r in runs if r.curve is not None]
    stack = next((r for r in runs if r.method == "stackbert" and r.curve is not None), None)
    for r in runs:   # bert2BERT FPI with depth growth is the stackbert model: its numbers, renamed
        if r.note == SAME_AS_STACKBERT and stack is not None:
            r.curve = stack.curve.assign(method=r.method)
            r.grow, r.large = (dataclasses.replace(p, method=r.method) for p in (stack.grow, stack.large))
    done = [r for r in runs if r.curve is not None]
    phases = pd.DataFrame([asdict(p) for p in [small_phase] + [p for r in done for p in (r.grow, r.large)]])
    curves = pd.concat([r.curve for r in done], ignore_index=True)
    target = float(curves[curves.method == "scratch"]["eval_loss"].iloc[-1])
    lg = next(r for r in runs if r.method == f"ligo_{P.variant}")
    return Result(setup=S, sizes=model_sizes(S), small_eval_loss=small_eval, phases=phases,
                  curves=curves, table=account(curves, target), target=target,
                  notes={r.method: r.note for r in runs},
                  training_curves=training_curves(S.out, phases, trained),
                  ligo=lg.ligo, ligo_init=lg.ligo_init, operator_losses=lg.operator_losses,
                  materialize=lg.materialize, wall_s=time.perf_counter() - t0)


def training_curves(out: Path, phases: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """Train and eval records of the large models of ``methods`` (run directories ``out/large-<method>``),
    on the recipe's cost axes, for :class:`workbench.viz.curves.CurvesView`.

    Read from each large run's ``metrics.jsonl``; ``flops`` and ``elapsed_s`` are shifted by the
    method's growth phase in ``phases`` (LiGO's operator fit), so the x-axis is the same cumulative
    cost the accounting table uses (``elapsed_s`` still includes evaluations; the table's ``wall_s``
    does not).
    """
    grow = {row.method: row for row in phases.itertuples() if row.phase in ("grow", "operator")}
    from ..viz.curves import load_curves    # viz pulls in plotly and the widgets: only when drawing
    df = load_curves({m: Path(out) / f"large-{m}" for m in methods})
    for m in methods:
        if m in grow:
            rows = df["run"] == m
            df.loc[rows, "flops"] += float(grow[m].flops)
            df.loc[rows, "elapsed_s"] += float(grow[m].wall_s)
    return df


def _load_init(path: Path) -> dict:
    return load_file(str(path / "ligo_init.safetensors"))


def summary(P: LigoParams, result: Result) -> Summary:
    """The headline numbers (metric ``flops_to_target``; None where never reached)."""
    R, t = result, result.table
    col = lambda c: {m: _num(t.loc[m, c]) for m in t.index}
    return Summary(
        paper="ligo", scale=P.scale, claim=CLAIM, metric="flops_to_target", paper_result=PAPER_RESULT,
        baseline=Arm("scratch", _num(t.loc["scratch", "flops_to_target"])),
        method=Arm(f"ligo_{P.variant}", _num(t.loc[f"ligo_{P.variant}", "flops_to_target"])),
        extra={
            "flops_saved": col("flops_saved"), "wall_saved": col("wall_saved"),
            "flops_saved_excl_operator": col("flops_saved_excl_operator") if "flops_saved_excl_operator" in t else None,
            "gap_to_stackbert": gap_to(R.curves, "stackbert"), "variant": P.variant, "rewarm": P.rewarm,
            "flops_saved_incl_small": col("flops_saved_incl_small"),
            "wall_saved_incl_small": col("wall_saved_incl_small"),
            "target_eval_loss": R.target,
            "flops_to_target": col("flops_to_target"), "flops_to_target_incl_small": col("flops_total_to_target"),
            "wall_to_target_s": col("wall_s_to_target"), "steps_to_target": col("steps_to_target"),
            "final_eval_loss": col("final_eval_loss"), "initial_eval_loss": col("initial_eval_loss"),
            "small_eval_loss": R.small_eval_loss,
            "phases": R.phases.to_dict(orient="records"),
            "materialize_flops": R.materialize,
            "operator_loss": [R.operator_losses[0], R.operator_losses[-1]] if R.operator_losses else None,
            "notes": R.notes,
            "small_given": R.setup.small_model is not None,
            "small_flops_note": ("small model given: its training FLOPs and time are unknown, counted as 0"
                                 if R.setup.small_model is not None else "small model trained here"),
            "clock": P.clock, "model": family(P), "small": P.small, "large": P.large, "corpus": P.corpus,
            "corpus_hash": R.setup.prep.corpus.hash,
        },
        wall_s=R.wall_s)


def gap_to(curves: pd.DataFrame, ref: str = "stackbert") -> dict | None:
    """Eval-loss gap ``method - ref`` at every evaluation step of the large phase, per method (None without ``ref``).

    ``{"step": [...], method: [...]}``: the same steps for every method (the large runs share the schedule);
    negative = below ``ref``'s loss at that step.
    """
    import pandas as pd
    if ref not in set(curves["method"]):
        return None
    r = curves[curves.method == ref].set_index("step")["eval_loss"]
    out = {"step": [int(x) for x in r.index]}
    for m, df in curves.groupby("method", sort=False):
        if m != ref:
            d = df.set_index("step")["eval_loss"].reindex(r.index) - r
            out[m] = [None if pd.isna(x) else float(x) for x in d]
    return out


def write_summary(P: LigoParams, result: Result) -> Summary:
    """Write ``P.out_dir/summary.json``; returns the summary."""
    s = summary(P, result)
    s.write(P.out_dir)
    return s


def _num(v):
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None
