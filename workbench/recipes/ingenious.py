"""The INGENIOUS experiment (``notebooks/ingenious.ipynb``): full data vs. a random 25% vs. INGENIOUS
25%, the same model, data order seed, schedule and number of steps for each.

All three runs share a warm start on the full data (INGENIOUS needs it for meaningful embeddings;
the random baseline gets the same so the comparison isolates *which* 25% is kept). Each pretrained
encoder is then fine-tuned to classify the package of held-out documents (the offline GLUE
stand-in), and the share of exact duplicates is counted in the corpus and in each subset.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import check
from ..data.prepare import Prepared, prepare
from ..models import flops_per_token
from ..runs import Run
from ..selection.ingenious import IngeniousSampler
from ..training import Budget, FullSampler, RandomSubsetSampler, Schedule, TrainResult, train
from ..training.finetune import domain_task, finetune_classifier
from .base import Arm, RecipeParams, Summary

CLAIM = "INGENIOUS 25% subset reaches ~99% of full-data quality (paper: Table 2, BERT GLUE)"
PAPER_RESULT = ("BERT/GPT-2 pretrained on informative subsets reach up to ~99% of the fully trained models' "
                "downstream performance (Renduchintala et al., Findings of EMNLP 2023)")

#: the three runs, in the order :func:`run` trains them
METHODS = ("full", "random", "ingenious")


@dataclass(frozen=True)
class IngeniousParams(RecipeParams):
    """Parameters of ``notebooks/ingenious.ipynb`` (its tagged cell is generated from these)."""
    out_dir: str = "runs/ingenious"                  # one run directory per method and summary.json go here
    corpus: str = "pydocs:numpy,sklearn,datasets,deepspeed"   # corpus spec: pydocs[:pkgs] | .txt/.jsonl/.parquet | datasets dir
    model: str = "bert-tiny"                         # bert-* / prelnbert-* (encoder) or gpt2-* / pythia-* (decoder)
    seq_len: int = 128                               # tokens per example
    vocab_size: int = 8192                           # tokenizer vocabulary (tokens)
    max_steps: int = 300                             # optimizer steps of every run
    batch_size: int = 32                             # examples per step
    lr: float = 1e-3                                 # peak learning rate (AdamW)
    warmup: float = 0.1                              # fraction of max_steps warming up the LR, then linear decay to zero
    fraction: float = 0.25                           # share of the data kept by the subset methods, in (0, 1]
    warm_start_steps: int = 60                       # optimizer steps on the full data before the first selection
    resample_every: int = 60                         # R: optimizer steps between re-samplings
    recompute_every: int = 0                         # M: optimizer steps between gain recomputations (0: once)
    partitions: int = 4                              # random partitions (count) for facility location
    temperature: float = 0.1                         # Taylor-softmax temperature dividing the gains (mean gain is 1)
    layer: int = -1                                  # hidden layer (index, -1: last) giving the embeddings
    eval_every: int = 50                             # optimizer steps between held-out evals
    downstream_steps: int = 100                      # fine-tuning steps of the domain classifier (0: skip it)

    def __post_init__(self):
        super().__post_init__()
        check(0 < self.fraction <= 1, f"fraction must be in (0, 1], got {self.fraction}")
        check(0 <= self.warmup < 1, f"warmup is a fraction of max_steps in [0, 1), got {self.warmup}")
        check(0 <= self.warm_start_steps < self.max_steps, "warm_start_steps must be in [0, max_steps)")
        check(self.resample_every >= 1 and self.recompute_every >= 0, "resample_every >= 1, recompute_every >= 0")
        check(self.partitions >= 1 and self.temperature > 0, "partitions >= 1 and temperature > 0")
        check(self.max_steps > 0 and self.batch_size > 0 and self.lr > 0, "max_steps, batch_size, lr must be > 0")
        check(self.downstream_steps >= 0, "downstream_steps must be >= 0")


Params = IngeniousParams


def duplicate_fraction(texts) -> float:
    """Share of ``texts`` whose exact text occurs earlier in the list."""
    seen, dup = set(), 0
    for t in texts:
        dup += t in seen
        seen.add(t)
    return dup / max(len(texts), 1)


def example_texts(task, indices) -> list:
    """The text of each example (documents for MLM; token rows for packed CLM blocks)."""
    if getattr(task, "kind", "") == "mlm":
        texts = task.corpus.texts
        return [texts[i] for i in indices]
    return [task.input_ids[i].tobytes() for i in indices]


@dataclass
class MethodRun:
    """One of the three training runs."""
    method: str                                      # full | random | ingenious
    train: TrainResult                               # the training (model, history, final eval loss)
    run: Run                                         # its run directory, ``out_dir/<method>``
    prep: Prepared                                   # the data (and the model, trained in place) it used
    wall_s: float                                    # seconds of training, selection included
    select_s: float                                  # seconds of those spent selecting (0 for full data)
    subset: np.ndarray | None                        # the last subset (dataset indices); None for full data
    duplicate_fraction_selected: float | None        # share of exact duplicates in ``subset``
    downstream_acc: float | None = None              # test accuracy of the domain classifier (None: skipped)

    @property
    def eval_loss(self) -> float | None:
        return self.train.final_eval_loss

    @property
    def model(self):
        return self.train.model


@dataclass
class Result:
    runs: dict[str, MethodRun]                       # full, random, ingenious
    duplicate_fraction_corpus: float                 # share of exact duplicates among all training examples
    texts: list[str] = field(repr=False)             # each training example's text (for the views)
    wall_s: float = 0.0                              # seconds the recipe ran

    @property
    def downstream_acc(self) -> dict[str, float | None]:
        return {m: r.downstream_acc for m, r in self.runs.items()}

    def table(self):
        """One row per method: eval loss, wall and selection seconds, duplicate share, downstream accuracy."""
        import pandas as pd
        return pd.DataFrame([{"method": m, "eval_loss": r.eval_loss, "wall_s": r.wall_s, "select_s": r.select_s,
                              "duplicate_fraction": r.duplicate_fraction_selected,
                              "downstream_acc": r.downstream_acc} for m, r in self.runs.items()]).set_index("method")


def make_sampler(P: IngeniousParams, method: str):
    if method == "full":
        return FullSampler()
    if method == "random":
        return RandomSubsetSampler(P.fraction, warm_start_steps=P.warm_start_steps)
    return IngeniousSampler(P.fraction, P.warm_start_steps, P.resample_every, P.recompute_every,
                            P.partitions, P.temperature, P.layer)


def run_method(P: IngeniousParams, method: str, progress: bool = False) -> MethodRun:
    """Train one of ``full`` / ``random`` / ``ingenious`` into ``out_dir/<method>`` (replacing an older run)."""
    check(method in METHODS, f"method {method!r} is not one of {METHODS}")
    prep = prepare(P.corpus, P.model, P.seq_len, P.vocab_size, P.seed)
    run_dir = Path(P.out_dir) / method
    shutil.rmtree(run_dir, ignore_errors=True)
    run = Run(run_dir, {"method": method, **{k: getattr(P, k) for k in P.__dataclass_fields__}})
    sampler = make_sampler(P, method)
    t0 = time.perf_counter()
    res = train(prep.model, prep.train, eval_data=prep.eval, sampler=sampler, budget=Budget(max_steps=P.max_steps),
                schedule=Schedule("linear", warmup=P.warmup), batch_size=P.batch_size, lr=P.lr,
                eval_every=P.eval_every, seed=P.seed, run=run, progress=progress,
                flops_per_token=flops_per_token(prep.model, P.seq_len, head_fraction=0.15 if prep.encoder else 1.0))
    wall = time.perf_counter() - t0
    subset = getattr(sampler, "subset", None)
    subset = None if subset is None else np.asarray(subset)
    dup = None if subset is None else duplicate_fraction(example_texts(prep.train, subset))
    rec = MethodRun(method=method, train=res, run=run, prep=prep, wall_s=wall, select_s=sampler.stats()["select_s"],
                    subset=subset, duplicate_fraction_selected=dup)
    run.write_summary({"method": method, "eval_loss": rec.eval_loss, "wall_s": wall, "steps": res.step,
                       "select_s": rec.select_s,
                       **({} if dup is None else {"duplicate_fraction_selected": dup})}, complete=True)
    return rec


def downstream_accuracy(P: IngeniousParams, rec: MethodRun) -> float | None:
    """Fine-tune a copy of the run's encoder to classify the package of held-out documents; test accuracy.

    The documents come from the eval split, so no pretraining run has read them. ``None`` when
    ``downstream_steps`` is 0.
    """
    if P.downstream_steps == 0:
        return None
    task = domain_task(rec.prep.eval_corpus, rec.prep.tokenizer, P.seq_len, min_per_class=5, seed=P.seed)
    epochs = max(P.downstream_steps * P.batch_size / max(len(task.train_idx), 1), 0.01)
    return finetune_classifier(rec.model, task, epochs=epochs, batch_size=P.batch_size, seed=P.seed, progress=False)


def run(P: IngeniousParams, progress: bool = False) -> Result:
    """The three runs, each encoder's downstream accuracy, and the duplicate share of the corpus."""
    t0 = time.perf_counter()
    runs = {m: run_method(P, m, progress) for m in METHODS}
    for rec in runs.values():
        rec.downstream_acc = downstream_accuracy(P, rec)
    data = runs["full"].prep.train
    texts = example_texts(data, range(len(data)))
    return Result(runs=runs, duplicate_fraction_corpus=duplicate_fraction(texts), texts=[str(t) for t in texts],
                  wall_s=time.perf_counter() - t0)


def summary(P: IngeniousParams, result: Result) -> Summary:
    ing, rnd, full = result.runs["ingenious"], result.runs["random"], result.runs["full"]
    return Summary(paper="ingenious", scale=P.scale, claim=CLAIM, metric="eval_loss", paper_result=PAPER_RESULT,
                   baseline=Arm("random 25%", rnd.eval_loss), method=Arm("INGENIOUS 25%", ing.eval_loss),
                   extra={"full_data_eval_loss": full.eval_loss,
                          "quality_vs_full": full.eval_loss / ing.eval_loss,
                          "random_quality_vs_full": full.eval_loss / rnd.eval_loss,
                          "selection_wall_fraction": ing.select_s / ing.wall_s,
                          "duplicate_fraction_selected": ing.duplicate_fraction_selected,
                          "duplicate_fraction_random": rnd.duplicate_fraction_selected,
                          "duplicate_fraction_corpus": result.duplicate_fraction_corpus,
                          "downstream_acc": result.downstream_acc,
                          "steps": P.max_steps, "fraction": P.fraction, "model": P.model, "corpus": P.corpus},
                   wall_s=result.wall_s)


def write_summary(P: IngeniousParams, result: Result) -> Summary:
    """Write ``P.out_dir/summary.json``; returns the summary."""
    s = summary(P, result)
    s.write(P.out_dir)
    return s
