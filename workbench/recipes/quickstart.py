"""The quickstart recipe (``python -m workbench train`` and ``notebooks/quickstart.ipynb``).

``train`` trains a model (a preset, a local Hugging Face directory or a hub id) on a corpus into a
run directory, with any of the loop's samplers (``full``, ``random``, ``ingenious``, ``mates``) and
batch filters (``rho_loss``, ``train_loss``, ``token_rho``), a budget in steps, tokens and/or
wall-clock minutes, a step- or time-based LR schedule, held-out eval loss and checkpoints; resumable
with ``--resume``. Every parameter is a field of :class:`TrainParams` (``train --help`` lists them).

What each method needs is built here, before any training starts (a bad input fails in one line
and leaves no run behind):

* ``mates``: the reference blocks ``[ref_blocks, seq_len]`` its probes evaluate
  (:func:`~workbench.selection.mates.reference_blocks`), from ``reference`` (a domain of the corpus,
  held out of training; or a corpus spec / text file, tokenized with the run's tokenizer); empty: a
  fixed sample of the eval split's blocks. Causal LMs only.
* ``rho_loss``: an IL model (a copy of the untrained model) trained for ``il_steps`` on a holdout
  split of ``holdout_fraction`` of the training documents (``holdout_irreducible``). On an MLM task
  the IL model recomputes the IL of each large batch on the same masked targets training uses; on
  a causal LM it scores the training set once, or recomputes per large batch when the step budget
  draws fewer examples than the training set holds (then ``scores/irreducible_loss`` is NaN and the
  per-batch record has the values).
* ``token_rho``: a reference model trained the same way on the ``reference`` data (else on the
  holdout split). Causal LMs only.

The IL / reference model is trained again, deterministically, when a run resumes.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import shutil
import time
import typing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import models
from ..config import asdict, check, parse
from ..data.corpus import corpus as load_corpus
from ..data.prepare import make_task, prepare
from ..errors import ConfigError, RunError, WorkbenchError
from ..runs import Run
from ..selection.ingenious import IngeniousSampler
from ..selection.irreducible import IrreducibleLosses, fit_il_model, holdout_irreducible
from ..selection.mates import MatesSampler, reference_blocks
from ..selection.rho_loss import BatchSelector
from ..selection.rho_tokens import TokenExcessLoss
from ..training import Budget, Schedule, TrainResult, evaluate, make_optimizer, train
from ..training.hooks import FullSampler, RandomSubsetSampler
from ..training.schedules import NAMES as SCHEDULES
from .base import Arm, RecipeParams, Summary, _field_comments

CLAIM = "a tiny model learns the pydocs corpus: held-out loss falls well below its untrained value"
PAPER_RESULT = ""

#: the ``train`` command's samplers and batch filters
SAMPLERS = ("full", "random", "ingenious", "mates")
FILTERS = ("none", "rho_loss", "train_loss", "token_rho")
_STEP_SCHEDULES = ("linear", "cosine")
_DEFAULT_TEMPERATURE = {"ingenious": 1.0, "mates": 0.5}          # used when temperature is 0 (ingenious: the authors')
_DEFAULT_FILTER_FRACTION = {"rho_loss": 0.1, "train_loss": 0.1, "token_rho": 0.6}


def _is_encoder(spec: str) -> bool | None:
    """Validate ``model`` (a preset, a local Hugging Face directory or a hub id) without loading weights;
    whether it is a masked LM (None for a hub id: known once it is loaded)."""
    check(bool(spec.strip()), "model must be a preset, a model directory or a hub id, got an empty string")
    kind = models.check_spec(spec)
    return models.is_encoder(spec) if kind in ("preset", "directory") else None


@dataclass(frozen=True)
class TrainParams:
    """The parameters of ``python -m workbench train`` (``-p KEY=VALUE``; ``train --help`` lists them)."""
    corpus: str = "pydocs:numpy,sklearn"   # pydocs[:pkgs] | .txt/.jsonl/.json/.csv/.parquet | datasets dir
    model: str = "bert-tiny"               # a preset (workbench.models.presets()), an HF model directory or a hub id
    tokenizer: str = ""                    # tokenizer directory ("": the model's own, else trained on the corpus)
    max_steps: int = 200                   # budget in optimizer steps (0: no step limit)
    max_tokens: int = 0                    # budget in training tokens (0: no token limit)
    max_minutes: float = 0.0               # budget in wall-clock minutes, evals included (0: no time limit)
    batch_size: int = 32                   # examples per micro-batch (with a filter: the small batch)
    grad_accum: int = 1                    # micro-batches per optimizer step
    seq_len: int = 128                     # tokens per example
    vocab_size: int = 0                    # tokens of a tokenizer trained on the corpus (0: 8192, or the model's table)
    lr: float = 1e-3                       # peak learning rate (AdamW)
    weight_decay: float = 0.01             # AdamW decoupled weight decay (fraction of lr x weight per step)
    warmup: float = 0.1                    # fraction of the budget warming up the LR (triangle: unused)
    schedule: str = "linear"               # constant | linear | cosine (steps) | time-linear | triangle (budget share)
    eval_fraction: float = 0.05            # share of the corpus documents held out for the eval loss, in (0, 1)
    sampler: str = "full"                  # full | random | ingenious | mates
    fraction: float = 0.25                 # share of the training data kept (random, ingenious, mates)
    temperature: float = 0.0               # ingenious: gain units (0: 1.0, the authors'); mates: oracle std units (0: 0.5)
    warm_start_steps: int = 0              # random, ingenious: steps on all the data before selecting
    resample_every: int = 50               # optimizer steps between selections (ingenious: re-sampling; mates: a stage)
    probe_size: int = 64                   # mates: candidate blocks whose oracle influence is probed per stage
    reference: str = ""                    # mates, token_rho: a corpus domain (held out), a corpus spec or a text file
    ref_blocks: int = 16                   # mates: reference blocks (of seq_len tokens) each probe evaluates
    batch_filter: str = "none"             # none | rho_loss | train_loss | token_rho
    filter_fraction: float = 0.0           # share of each large batch (token_rho: of its tokens) (0: 0.1/0.6)
    filter_temperature: float = 0.0        # rho_loss: 0 = top-k reducible loss (paper), > 0 = Boltzmann draws (nats)
    holdout_fraction: float = 0.1          # rho_loss, token_rho: share of training docs for the IL model
    il_steps: int = 100                    # rho_loss, token_rho: steps training the IL / reference model
    seed: int = 0                          # seeds model init, data order, masking
    eval_every: int = 50                   # steps between held-out evals (0: only at the end)
    eval_batches: int = 8                  # batches per eval
    checkpoint_every: int = 100            # steps between checkpoints (0: only at the end)
    min_chars: int = 200                   # pydocs: shortest docstring kept (characters)
    precision: str = "fp32"                # fp32 | bf16 | fp16 (autocast)
    dropout: float | None = None           # dropout probability (None: 0.1 for a preset, a saved model's own)

    def __post_init__(self):
        for k in ("max_steps", "max_tokens"):
            v = getattr(self, k)
            check(v >= 0, f"{k} must be positive (or 0: no {k[4:-1]} limit), got {v}")
        check(self.max_minutes >= 0 and math.isfinite(self.max_minutes),
              f"max_minutes must be positive (or 0: no time limit), got {self.max_minutes}")
        check(self.max_steps > 0 or self.max_tokens > 0 or self.max_minutes > 0,
              "no budget: set max_steps, max_tokens or max_minutes (at least one above 0)")
        check(self.batch_size > 0, f"batch_size must be positive, got {self.batch_size}")
        check(self.grad_accum > 0, f"grad_accum must be positive, got {self.grad_accum}")
        check(8 <= self.seq_len <= 4096, f"seq_len must be in [8, 4096], got {self.seq_len}")
        check(self.lr > 0, f"lr must be positive, got {self.lr}")
        check(0 <= self.warmup < 1, f"warmup is a fraction of the budget in [0, 1), got {self.warmup}")
        check(self.eval_every >= 0 and self.checkpoint_every >= 0, "eval_every and checkpoint_every must be >= 0")
        check(self.dropout is None or 0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")
        check(self.precision in ("fp32", "bf16", "fp16"), f"precision {self.precision!r} is not fp32, bf16 or fp16")
        # checked here, not when the run starts: a bad value must not leave a half-made run directory
        check(self.vocab_size == 0 or 64 <= self.vocab_size <= 1_000_000,
              f"vocab_size must be in [64, 1000000] (or 0: the default), got {self.vocab_size}")
        check(self.eval_batches > 0, f"eval_batches must be positive, got {self.eval_batches}")
        check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        check(self.min_chars >= 0, f"min_chars must be >= 0, got {self.min_chars}")
        check(bool(self.corpus.strip()), "corpus must be a corpus spec, got an empty string")
        check(0 < self.eval_fraction < 1, f"eval_fraction must be in (0, 1), got {self.eval_fraction}")
        self._check_schedule()
        self._check_methods()
        if self.tokenizer:
            check(os.path.isdir(self.tokenizer), f"tokenizer directory {self.tokenizer} does not exist")
        enc = _is_encoder(self.model)
        for what, on in (("sampler=mates", self.sampler == "mates"), ("batch_filter=token_rho",
                                                                       self.batch_filter == "token_rho")):
            check(not (on and enc), f"{what} needs a causal LM (e.g. model=gpt2-tiny); {self.model!r} is an encoder")

    def _check_schedule(self) -> None:
        check(self.schedule in SCHEDULES, f"schedule {self.schedule!r} is not one of {', '.join(SCHEDULES)}")
        by_step = self.schedule in _STEP_SCHEDULES or (self.schedule == "constant" and self.warmup > 0)
        check(not by_step or self.max_steps > 0,
              f"schedule {self.schedule!r}{' with warmup' if self.schedule == 'constant' else ''} counts optimizer "
              f"steps and needs max_steps; with only max_minutes or max_tokens use schedule=time-linear or triangle")

    def _check_methods(self) -> None:
        check(self.sampler in SAMPLERS, f"sampler {self.sampler!r} is not one of {', '.join(SAMPLERS)}")
        check(self.batch_filter in FILTERS, f"batch_filter {self.batch_filter!r} is not one of {', '.join(FILTERS)}")
        check(0 < self.fraction <= 1, f"fraction must be in (0, 1], got {self.fraction}")
        check(self.temperature >= 0 and math.isfinite(self.temperature),
              f"temperature must be >= 0 (0: the sampler's default), got {self.temperature}")
        check(self.temperature == 0 or self.sampler in _DEFAULT_TEMPERATURE,
              f"temperature applies to sampler=ingenious or mates, not sampler={self.sampler}")
        check(self.warm_start_steps >= 0, f"warm_start_steps must be >= 0, got {self.warm_start_steps}")
        check(self.warm_start_steps == 0 or self.max_steps == 0 or self.warm_start_steps < self.max_steps,
              f"warm_start_steps ({self.warm_start_steps}) must be below max_steps ({self.max_steps})")
        check(self.resample_every >= 1, f"resample_every must be >= 1 optimizer step, got {self.resample_every}")
        check(self.probe_size >= 8, f"probe_size must be >= 8 blocks, got {self.probe_size}")
        check(self.ref_blocks >= 1, f"ref_blocks must be >= 1, got {self.ref_blocks}")
        check(not self.reference or self.sampler == "mates" or self.batch_filter == "token_rho",
              "reference= is used by sampler=mates and batch_filter=token_rho only")
        check(0 <= self.filter_fraction <= 1, f"filter_fraction must be in (0, 1] (0: the filter's default), "
                                              f"got {self.filter_fraction}")
        check(self.filter_temperature >= 0 and math.isfinite(self.filter_temperature),
              f"filter_temperature must be >= 0, got {self.filter_temperature}")
        check(self.filter_temperature == 0 or self.batch_filter == "rho_loss",
              f"filter_temperature applies to batch_filter=rho_loss, not batch_filter={self.batch_filter}")
        check(0 < self.holdout_fraction < 1, f"holdout_fraction must be in (0, 1), got {self.holdout_fraction}")
        check(self.il_steps >= 1, f"il_steps must be >= 1, got {self.il_steps}")


def params_help() -> str:
    """Every ``-p`` parameter of ``train``: name, type, default and comment (from :class:`TrainParams`)."""
    hints = typing.get_type_hints(TrainParams)
    comments = _field_comments(TrainParams)
    rows = [(f.name, getattr(hints[f.name], "__name__", str(hints[f.name])).replace(" ", ""), repr(f.default))
            for f in dataclasses.fields(TrainParams)]
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["parameters (-p KEY=VALUE; name, type, default, meaning):"]
    lines += [f"  {n:<{w[0]}}  {t:<{w[1]}}  {d:<{w[2]}}  {comments.get(n, '')}" for n, t, d in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------- the run

def _stored_params(run: Run, out: str) -> TrainParams:
    """The parameters a run made with the ``train`` command stored; other runs are refused in one line."""
    stored = dict(run.config.get("params", {}))
    if stored.get("recipe") != "quickstart":
        raise RunError(f"run {out} was not made with the train command, and only such runs can be resumed from "
                       f"the CLI; resume a run made through the API with wb.train(..., run=wb.Run(DIR, resume=True))")
    stored.pop("recipe")
    try:
        return parse(TrainParams, stored)
    except ConfigError as e:
        raise RunError(f"run {out} cannot be resumed: its stored parameters are invalid: {e}") from None


@dataclass
class _Built:
    prep: object                            # workbench.data.prepare.Prepared
    train: object                           # the training task (without the holdout split, if any)
    sampler: object
    batch_filter: object | None
    optimizer: object | None
    info: dict


def _prepare(params: TrainParams):
    """Corpus -> split -> tokenizer -> tasks -> model; a corpus domain named by ``reference`` is held out."""
    c = load_corpus(params.corpus, min_chars=params.min_chars)
    hold = [params.reference] if params.reference and params.reference in set(c.domains) else []
    p = prepare(c, params.model, seq_len=params.seq_len, vocab_size=params.vocab_size or None, seed=params.seed,
                eval_fraction=params.eval_fraction, holdout_domains=hold, min_chars=params.min_chars,
                dropout=params.dropout, tokenizer=params.tokenizer or None)
    return p, bool(hold)


def _reference_task(params: TrainParams, p, held_out: bool):
    """The ``reference`` data as a causal-LM task with the run's tokenizer (None when not given)."""
    if not params.reference:
        return None
    rc = p.holdout_corpus if held_out else load_corpus(params.reference, min_chars=params.min_chars)
    return make_task(rc, p.tokenizer, False, params.seq_len, params.seed)


def _build(params: TrainParams) -> _Built:
    """Everything the run trains with, checked and built before the first step."""
    p, held_out = _prepare(params)
    causal = not p.encoder
    for what, on in (("sampler=mates", params.sampler == "mates"),
                     ("batch_filter=token_rho", params.batch_filter == "token_rho")):
        if on and not causal:
            raise ConfigError(f"{what} needs a causal LM; model {params.model!r} is a masked LM")
    initial = copy.deepcopy(p.model)               # the IL / reference model starts where the target does
    ref_task = _reference_task(params, p, held_out) if params.batch_filter == "token_rho" else None
    train_task, holdout, info = p.train, None, {}
    if params.batch_filter == "rho_loss" or (params.batch_filter == "token_rho" and ref_task is None):
        tr, ho = p.train_corpus.split(params.holdout_fraction, seed=1)
        sparse = getattr(p.train, "sparse_head", True)
        train_task = make_task(tr, p.tokenizer, p.encoder, params.seq_len, params.seed, sparse)
        holdout = make_task(ho, p.tokenizer, p.encoder, params.seq_len, params.seed + 2, sparse)
        info["holdout_docs"] = len(ho)
    fit = dict(steps=params.il_steps, batch_size=params.batch_size, lr=params.lr, weight_decay=params.weight_decay,
               eval_every=max(1, params.il_steps // 10), seed=params.seed)
    opt, bf = None, None
    ff = params.filter_fraction or _DEFAULT_FILTER_FRACTION.get(params.batch_filter, 0.1)
    if params.batch_filter == "rho_loss":
        # MLM: the IL is recomputed on each large batch, under the same masks the training step uses; CLM:
        # scored once for the whole training set, unless the step budget draws fewer examples than that
        drawn = params.max_steps * params.grad_accum * math.ceil(params.batch_size / ff) if params.max_steps else None
        recompute = p.encoder or (drawn is not None and drawn < len(train_task))
        if recompute:
            ilm, fit_info = fit_il_model(copy.deepcopy(initial), holdout, p.eval, **fit)
            il = IrreducibleLosses(train_task.ids, np.full(len(train_task), np.nan), models=[ilm])
        else:
            il, fit_info = holdout_irreducible(lambda: copy.deepcopy(initial), train_task, holdout, p.eval, **fit)
        rule = "boltzmann_rho" if params.filter_temperature > 0 else "rho_loss"
        bf = BatchSelector(rule, ff, irreducible=il, temperature=params.filter_temperature or 1.0,
                           recompute=recompute)
        info["il_valid_loss"] = fit_info["best_valid_loss"]
    elif params.batch_filter == "token_rho":
        refm, fit_info = fit_il_model(copy.deepcopy(initial), ref_task if ref_task is not None else holdout, p.eval,
                                       **fit)
        bf = TokenExcessLoss(refm, fraction=ff)
        info["reference_valid_loss"] = fit_info["best_valid_loss"]
    elif params.batch_filter == "train_loss":
        bf = BatchSelector("train_loss", ff)
    temp = params.temperature or _DEFAULT_TEMPERATURE.get(params.sampler, 0.0)
    if params.sampler == "full":
        sampler = FullSampler()
    elif params.sampler == "random":
        sampler = RandomSubsetSampler(params.fraction, warm_start_steps=params.warm_start_steps)
    elif params.sampler == "ingenious":
        sampler = IngeniousSampler(params.fraction, params.warm_start_steps, params.resample_every,
                                   temperature=temp)
    else:
        # the reference task: the held-out domain, the reference spec, else the eval split
        src = (p.holdout_corpus if held_out else params.reference) if params.reference else p.eval_corpus
        ref = reference_blocks(src, p.tokenizer, params.seq_len, max_blocks=params.ref_blocks, seed=params.seed)
        opt = make_optimizer(p.model, params.lr, params.weight_decay)
        sampler = MatesSampler(opt, ref, stage_steps=params.resample_every, fraction=params.fraction,
                               probe_size=params.probe_size, temperature=temp,
                               flops_per_token=models.flops_per_token(p.model, params.seq_len))
        info["reference_blocks"] = int(ref.shape[0])
    return _Built(prep=p, train=train_task, sampler=sampler, batch_filter=bf, optimizer=opt, info=info)


def _select_s(*hooks) -> float:
    return sum(float(h.stats().get("select_s", 0.0)) for h in hooks if h is not None and hasattr(h, "stats"))


def run_train(params: TrainParams, out: str, resume: bool = False, progress: bool = True, callbacks=()):
    """Train per ``params`` into run directory ``out``; returns the TrainResult.

    ``resume=True`` continues the run in ``out`` with its stored parameters (``params`` is ignored);
    only runs made by this function (the ``train`` command) can be resumed here. ``callbacks`` are
    passed to :func:`workbench.train`.
    """
    if resume:
        run = Run(out, resume=True)
        try:
            params = _stored_params(run, out)
            if run.complete:
                raise ConfigError(f"run {out} is already complete; nothing to resume")
        except BaseException:
            run.close()
            raise
    else:
        run = Run(out, {"recipe": "quickstart", **asdict(params)})
    try:
        try:
            b = _build(params)
        except WorkbenchError:
            run.discard()    # a new run that never started leaves nothing behind: the same --out works again
            raise
        p = b.prep
        run.update_config(corpus_hash=p.corpus.hash, corpus_stats={"docs": len(p.corpus),
                          "train_docs": len(p.train_corpus), "eval_docs": len(p.eval_corpus), **b.info})
        fpt = models.flops_per_token(p.model, params.seq_len, head_fraction=0.15 if p.encoder else 1.0)
        budget = Budget(max_steps=params.max_steps or None, max_tokens=params.max_tokens or None,
                        max_minutes=params.max_minutes or None)
        schedule = Schedule(params.schedule, warmup=0.0 if params.schedule == "triangle" else params.warmup)
        res = train(p.model, b.train, eval_data=p.eval, sampler=b.sampler, batch_filter=b.batch_filter,
                    optimizer=b.optimizer, budget=budget, schedule=schedule, run=run,
                    batch_size=params.batch_size, grad_accum=params.grad_accum, lr=params.lr,
                    weight_decay=params.weight_decay, eval_every=params.eval_every,
                    eval_batches=params.eval_batches, checkpoint_every=params.checkpoint_every, seed=params.seed,
                    precision=params.precision, progress=progress, flops_per_token=fpt, callbacks=tuple(callbacks))
        first = next((r["loss"] for r in res.history if "loss" in r), None)
        run.write_summary({"recipe": "quickstart", "steps": res.step, "tokens": res.tokens,
                           "stop_reason": res.stop_reason, "first_train_loss": first,
                           "final_eval_loss": res.final_eval_loss, "wall_s": res.wall_s, "train_s": res.train_s,
                           "corpus_hash": p.corpus.hash, "model": params.model, "sampler": params.sampler,
                           "batch_filter": params.batch_filter, "select_s": _select_s(b.sampler, b.batch_filter),
                           **b.info}, complete=True)
    finally:
        run.close()                  # the directory is free for `train --resume` or a rerun in another process
    return res


@dataclass(frozen=True)
class QuickstartParams(RecipeParams):
    """Parameters of ``notebooks/quickstart.ipynb`` (its tagged cell is generated from these)."""
    out_dir: str = "runs/quickstart"       # the run directory and summary.json go here
    corpus: str = "pydocs:numpy,sklearn"   # corpus spec: pydocs[:pkgs] | .txt/.jsonl/.parquet | datasets dir
    model: str = "bert-tiny"               # model preset, e.g. bert-tiny, prelnbert-mini, gpt2-tiny
    max_steps: int = 300                   # optimizer steps
    batch_size: int = 32                   # examples per step
    seq_len: int = 128                     # tokens per example
    vocab_size: int = 8192                 # tokenizer vocabulary (tokens)
    lr: float = 1e-3                       # peak learning rate (AdamW)
    warmup: float = 0.1                    # fraction of max_steps warming up, then linear decay to zero
    eval_every: int = 50                   # steps between held-out evaluations

    def train_params(self) -> TrainParams:
        return TrainParams(corpus=self.corpus, model=self.model, max_steps=self.max_steps,
                           batch_size=self.batch_size, seq_len=self.seq_len, vocab_size=self.vocab_size,
                           lr=self.lr, warmup=self.warmup, seed=self.seed, eval_every=self.eval_every,
                           checkpoint_every=0)


Params = QuickstartParams


@dataclass
class Result:
    train: TrainResult                     # the training run (its ``run`` is the run directory)
    initial_eval_loss: float               # held-out loss of the untrained model
    wall_s: float                          # seconds the recipe ran


def run(P: QuickstartParams, progress: bool = False) -> Result:
    """Train per ``P`` into ``P.out_dir/run`` (replacing an older run there)."""
    t0 = time.perf_counter()
    tp = P.train_params()
    pre = prepare(tp.corpus, tp.model, tp.seq_len, tp.vocab_size, tp.seed)
    initial = evaluate(pre.model, pre.eval, tp.batch_size, tp.eval_batches)
    run_dir = Path(P.out_dir) / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    res = run_train(tp, str(run_dir), progress=progress)
    return Result(train=res, initial_eval_loss=initial, wall_s=time.perf_counter() - t0)


def summary(P: QuickstartParams, result: Result) -> Summary:
    res = result.train
    return Summary(paper="quickstart", scale=P.scale, claim=CLAIM, metric="eval_loss", paper_result=PAPER_RESULT,
                   baseline=Arm("untrained", result.initial_eval_loss), method=Arm("trained", res.final_eval_loss),
                   extra={"steps": res.step, "tokens": res.tokens, "train_wall_s": res.wall_s, "model": P.model,
                          "corpus": P.corpus},
                   wall_s=result.wall_s)


def write_summary(P: QuickstartParams, result: Result) -> Summary:
    """Write ``P.out_dir/summary.json``; returns the summary."""
    s = summary(P, result)
    s.write(P.out_dir)
    return s
