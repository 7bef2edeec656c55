"""The INGENIOUS experiment (``notebooks/ingenious.ipynb``): full data vs. a random 25% vs. INGENIOUS
25%, the same model, data order seed, schedule and number of steps for each.

All three runs share a warm start on the full data (INGENIOUS needs it for meaningful embeddings;
the random baseline gets the same so the comparison isolates *which* 25% is kept).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import check


@dataclass(frozen=True)
class IngeniousParams:
    scale: str = "tiny"                              # smoke | tiny | small | paper
    out_dir: str = "runs/ingenious"                  # runs and summary.json go here
    corpus: str = "pydocs:numpy,sklearn,datasets,deepspeed"   # corpus spec
    model: str = "bert-tiny"                         # bert-* / prelnbert-* (encoder) or gpt2-* / pythia-* (decoder)
    seq_len: int = 128                               # tokens per example
    vocab_size: int = 8192                           # tokenizer vocabulary
    max_steps: int = 300                             # optimizer steps of every run
    batch_size: int = 32                             # examples per step
    lr: float = 1e-3                                 # peak learning rate
    warmup: int = 30                                 # LR warmup steps
    fraction: float = 0.25                           # share of the data kept by the subset methods
    warm_start_steps: int = 60                       # full-data steps before the first selection
    resample_every: int = 60                         # R: steps between re-samplings
    recompute_every: int = 0                         # M: steps between gain recomputations (0 = once)
    partitions: int = 4                              # random partitions for facility location
    temperature: float = 0.1                         # Taylor-softmax temperature on the gains
    layer: int = -1                                  # hidden layer giving the embeddings
    eval_every: int = 50                             # steps between held-out evals
    downstream_steps: int = 100                      # fine-tuning steps of the domain classifier
    seed: int = 0                                    # seed of init, data order, masking, sampling

    def __post_init__(self):
        from . import SCALES
        check(self.scale in SCALES, f"scale {self.scale!r} is not one of {SCALES}")
        check(0 < self.fraction <= 1, f"fraction must be in (0, 1], got {self.fraction}")
        check(0 <= self.warm_start_steps < self.max_steps, "warm_start_steps must be in [0, max_steps)")
        check(self.resample_every >= 1 and self.recompute_every >= 0, "resample_every >= 1, recompute_every >= 0")
        check(self.partitions >= 1 and self.temperature > 0, "partitions >= 1 and temperature > 0")
        check(self.max_steps > 0 and self.batch_size > 0 and self.lr > 0, "max_steps, batch_size, lr must be > 0")
        check(self.downstream_steps >= 0, "downstream_steps must be >= 0")


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


def run_method(P: IngeniousParams, method: str, prep_fn, progress: bool = False) -> dict:
    """Train one of ``full`` / ``random`` / ``ingenious`` into ``out_dir/<method>``; returns its record."""
    import shutil

    from ..models import flops_per_token
    from ..runs import Run
    from ..training import Budget, FullSampler, RandomSubsetSampler, Schedule, train
    from ..selection.ingenious import IngeniousSampler
    prep = prep_fn()
    run_dir = Path(P.out_dir) / method
    shutil.rmtree(run_dir, ignore_errors=True)
    run = Run(run_dir, {"method": method, **{k: getattr(P, k) for k in P.__dataclass_fields__}})
    if method == "full":
        sampler = FullSampler()
    elif method == "random":
        sampler = RandomSubsetSampler(P.fraction, warm_start_steps=P.warm_start_steps)
    else:
        sampler = IngeniousSampler(P.fraction, P.warm_start_steps, P.resample_every, P.recompute_every,
                                   P.partitions, P.temperature, P.layer)
    t0 = time.perf_counter()
    res = train(prep.model, prep.train, eval_data=prep.eval, sampler=sampler, budget=Budget(max_steps=P.max_steps),
                schedule=Schedule("linear", warmup=P.warmup), batch_size=P.batch_size, lr=P.lr,
                eval_every=P.eval_every, seed=P.seed, run=run, progress=progress,
                flops_per_token=flops_per_token(prep.model, P.seq_len, head_fraction=0.15 if prep.encoder else 1.0))
    wall = time.perf_counter() - t0
    subset = getattr(sampler, "subset", None)
    rec = {"method": method, "eval_loss": res.final_eval_loss, "wall_s": wall, "steps": res.step,
           "selection_wall_s": getattr(sampler, "selection_wall_s", 0.0), "history": res.history,
           "subset": None if subset is None else np.asarray(subset), "model": res.model, "prep": prep, "run": run}
    if subset is not None:
        rec["duplicate_fraction_selected"] = duplicate_fraction(example_texts(prep.train, subset))
    run.write_summary({k: v for k, v in rec.items() if k in ("method", "eval_loss", "wall_s", "steps",
                       "selection_wall_s", "duplicate_fraction_selected")}, complete=True)
    return rec


def composition(domains_all, selections: dict) -> "pd.DataFrame":
    """Domain shares of the corpus and of each selection: columns domain, set, share."""
    import pandas as pd
    rows = []
    for name, doms in {"corpus": list(domains_all), **selections}.items():
        s = pd.Series(list(doms)).value_counts(normalize=True)
        rows += [{"set": name, "domain": d, "share": float(v)} for d, v in s.items()]
    return pd.DataFrame(rows)


def downstream_accuracy(P: IngeniousParams, rec: dict) -> float | None:
    """Fine-tune the run's encoder to classify the package of held-out documents; test accuracy.

    The documents come from the eval split, so no pretraining run has read them. ``None`` when
    ``downstream_steps`` is 0.
    """
    if P.downstream_steps == 0:
        return None
    from ..training.finetune import domain_task, finetune_classifier
    prep = rec["prep"]
    task = domain_task(prep.eval_corpus, prep.tokenizer, P.seq_len, min_per_class=5, seed=P.seed)
    epochs = max(P.downstream_steps * P.batch_size / max(len(task.train_idx), 1), 0.01)
    return finetune_classifier(rec["model"], task, epochs=epochs, batch_size=P.batch_size, seed=P.seed,
                               progress=False)
