"""The quickstart recipe (``python -m workbench train`` and ``notebooks/quickstart.ipynb``).

Trains a model preset on a corpus with a step budget, warmup + linear decay, held-out eval loss and
checkpoints, into a run directory; resumable with ``--resume``.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .. import models
from ..config import asdict, check, parse
from ..data.prepare import prepare
from ..errors import ConfigError, RunError, WorkbenchError
from ..runs import Run
from ..training import Budget, Schedule, TrainResult, evaluate, train
from ..training.hooks import SAMPLERS, make_sampler
from ..training.schedules import NAMES as SCHEDULES
from .base import Arm, RecipeParams, Summary

CLAIM = "a tiny model learns the pydocs corpus: held-out loss falls well below its untrained value"
PAPER_RESULT = ""


@dataclass(frozen=True)
class TrainParams:
    corpus: str = "pydocs:numpy,sklearn"   # corpus spec: pydocs[:pkgs] | file | datasets dir
    model: str = "bert-tiny"               # model preset (see workbench.models.presets())
    max_steps: int = 200                   # optimizer steps
    batch_size: int = 32                   # examples per step
    grad_accum: int = 1                    # micro-batches per step
    seq_len: int = 128                     # tokens per example
    vocab_size: int = 8192                 # tokenizer vocabulary
    lr: float = 1e-3                       # peak learning rate (AdamW)
    weight_decay: float = 0.01             # AdamW decoupled weight decay
    warmup: float = 0.1                    # fraction of max_steps spent warming up the LR
    schedule: str = "linear"               # constant | linear | cosine
    sampler: str = "full"                  # full | random (a random subset)
    fraction: float = 0.25                 # share of the data kept by sampler=random
    seed: int = 0                          # seeds model init, data order, masking
    eval_every: int = 50                   # steps between held-out evals (0: only at the end)
    eval_batches: int = 8                  # batches per eval
    checkpoint_every: int = 100            # steps between checkpoints (0: only at the end)
    min_chars: int = 200                   # pydocs: shortest docstring kept
    precision: str = "fp32"                # fp32 | bf16 | fp16 (autocast)
    dropout: float = 0.1                   # dropout of the model

    def __post_init__(self):
        check(self.max_steps > 0, f"max_steps must be positive, got {self.max_steps}")
        check(self.batch_size > 0, f"batch_size must be positive, got {self.batch_size}")
        check(self.grad_accum > 0, f"grad_accum must be positive, got {self.grad_accum}")
        check(8 <= self.seq_len <= 4096, f"seq_len must be in [8, 4096], got {self.seq_len}")
        check(self.lr > 0, f"lr must be positive, got {self.lr}")
        check(0 <= self.warmup < 1, f"warmup is a fraction of max_steps in [0, 1), got {self.warmup}")
        check(self.eval_every >= 0 and self.checkpoint_every >= 0, "eval_every and checkpoint_every must be >= 0")
        check(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")
        check(self.precision in ("fp32", "bf16", "fp16"), f"precision {self.precision!r} is not fp32, bf16 or fp16")
        # checked here, not when the run starts: a bad value must not leave a half-made run directory
        check(64 <= self.vocab_size <= 1_000_000, f"vocab_size must be in [64, 1000000], got {self.vocab_size}")
        check(self.eval_batches > 0, f"eval_batches must be positive, got {self.eval_batches}")
        check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        check(self.min_chars >= 0, f"min_chars must be >= 0, got {self.min_chars}")
        check(bool(self.corpus.strip()), "corpus must be a corpus spec, got an empty string")
        check(self.schedule in SCHEDULES, f"schedule {self.schedule!r} is not one of {', '.join(SCHEDULES)}")
        check(self.sampler in SAMPLERS, f"sampler {self.sampler!r} is not one of {', '.join(SAMPLERS)}")
        check(0 < self.fraction <= 1, f"fraction must be in (0, 1], got {self.fraction}")
        models.parse_preset(self.model)


def run_train(params: TrainParams, out: str, resume: bool = False, progress: bool = True):
    """Train per ``params`` into run directory ``out``; returns the TrainResult."""
    run = Run(out, {"recipe": "quickstart", **asdict(params)}, resume=resume)
    if resume:
        stored = {k: v for k, v in run.config.get("params", {}).items() if k != "recipe"}
        try:
            params = parse(TrainParams, stored)
        except ConfigError as e:
            raise RunError(f"run {out} cannot be resumed: its stored parameters are invalid: {e}") from None
        if run.complete:
            raise ConfigError(f"run {out} is already complete; nothing to resume")
    try:
        p = prepare(params.corpus, params.model, params.seq_len, params.vocab_size, params.seed,
                    min_chars=params.min_chars, dropout=params.dropout)
    except WorkbenchError:
        run.discard()    # a new run that never started leaves nothing behind: the same --out works again
        raise
    run.update_config(corpus_hash=p.corpus.hash, corpus_stats={"docs": len(p.corpus),
                      "train_docs": len(p.train_corpus), "eval_docs": len(p.eval_corpus)})
    fpt = models.flops_per_token(p.model, params.seq_len, head_fraction=0.15 if p.encoder else 1.0)
    res = train(p.model, p.train, eval_data=p.eval, sampler=make_sampler(params.sampler, params.fraction),
                budget=Budget(max_steps=params.max_steps),
                schedule=Schedule(params.schedule, warmup=params.warmup), run=run,
                batch_size=params.batch_size, grad_accum=params.grad_accum, lr=params.lr,
                weight_decay=params.weight_decay, eval_every=params.eval_every, eval_batches=params.eval_batches,
                checkpoint_every=params.checkpoint_every, seed=params.seed, precision=params.precision,
                progress=progress, flops_per_token=fpt)
    first = next((r["loss"] for r in res.history if "loss" in r), None)
    run.write_summary({"recipe": "quickstart", "steps": res.step, "tokens": res.tokens, "stop_reason": res.stop_reason,
                       "first_train_loss": first, "final_eval_loss": res.final_eval_loss,
                       "wall_s": res.wall_s, "corpus_hash": p.corpus.hash}, complete=True)
    run.close()                      # the directory is free for `train --resume` or a rerun in another process
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
