"""The INGENIOUS experiment (``notebooks/ingenious.ipynb``): five arms at the same number of steps.

``full`` (all the data), ``random_fixed`` (one random 25%), ``random_online`` (a fresh random 25%
every R steps, the authors' "Random-Online"), ``ingenious_authors`` (the released configuration)
and ``ingenious_sharp`` (the workbench's sharper variant): the same model, data order seed, LR
schedule, warm start on the full data and number of steps, so the comparison isolates *which* data
is kept. The headline is INGENIOUS (``variant``, the authors' by default) against random online.

Each arm is measured on held-out MLM loss (documents no run trained on), a linear probe of its
frozen encoder on package classification of held-out documents (logistic regression on the
mean-pooled last layer: less noisy than a short fine-tune), the share of its last subset that
repeats a document already in it (exact duplicates, and the known copies of ``redundancy``), the
total-variation distance of the subset's domain mix from the corpus', and the share of wall time and
FLOPs spent selecting. ``redundancy=0.3`` adds perturbed copies of a seeded 30% of the training
documents (:mod:`workbench.data.redundancy`), so the redundancy the method exploits is present and
its removal measurable.
"""
from __future__ import annotations

import dataclasses
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import check
from ..data.prepare import Prepared, make_task, prepare
from ..data.redundancy import add_redundancy, group_ids
from ..models import flops_per_token
from ..runs import Run
from ..selection.ingenious import FUNCTIONS, OPTIMIZERS, PARTITION_STRATEGIES, VARIANTS, IngeniousSampler
from ..training import Budget, FullSampler, RandomOnlineSampler, RandomSubsetSampler, Schedule, TrainResult, train
from ..training.finetune import domain_task, linear_probe as probe_accuracy
from .base import Arm, RecipeParams, Summary

CLAIM = "INGENIOUS 25% subset reaches ~99% of full-data quality (paper: Table 2, BERT GLUE)"
PAPER_RESULT = ("BERT/GPT-2 pretrained on informative subsets reach up to ~99% of the fully trained models' "
                "downstream performance (Renduchintala et al., Findings of EMNLP 2023)")

#: every arm, in the order :func:`run` trains them
ARMS = ("full", "random_fixed", "random_online", "ingenious_authors", "ingenious_sharp")
#: the headline's baseline
BASELINE = "random_online"


@dataclass(frozen=True)
class IngeniousParams(RecipeParams):
    """Parameters of ``notebooks/ingenious.ipynb`` (its tagged cell is generated from these)."""
    out_dir: str = "runs/ingenious"                  # one run directory per arm and summary.json go here
    corpus: str = "pydocs:numpy,sklearn,datasets,deepspeed"   # corpus spec: pydocs[:pkgs] | .txt/.jsonl/.parquet | datasets dir
    redundancy: float = 0.0                          # share of training documents given 2-4 perturbed copies (0: none)
    model: str = "bert-tiny"                         # bert-* / prelnbert-* (encoder) or gpt2-* / pythia-* (decoder)
    seq_len: int = 128                               # tokens per example
    vocab_size: int = 8192                           # tokenizer vocabulary (tokens)
    max_steps: int = 300                             # optimizer steps of every arm
    batch_size: int = 32                             # examples per step
    lr: float = 1e-3                                 # peak learning rate (AdamW)
    warmup: float = 0.1                              # fraction of max_steps warming up the LR, then linear decay to zero
    arms: str = "full,random_fixed,random_online,ingenious_authors,ingenious_sharp"   # comma-separated arms to train
    variant: str = "authors"                         # the headline INGENIOUS arm: authors | sharp
    fraction: float = 0.25                           # share of the data kept by the subset arms, in (0, 1]
    warm_start_epochs: float = 1.0                   # epochs over the full data before the first selection (authors: 1 BERT, 2 GPT-2)
    warm_start_steps: int = -1                       # the warm start in optimizer steps instead (-1: from warm_start_epochs)
    resample_every: int = 60                         # R: optimizer steps between re-samplings (and random-online draws)
    recompute_every: int = 0                         # M: optimizer steps between gain recomputations (0: once)
    partitions: int = 4                              # partitions (count) for the submodular ordering
    partition_strategy: str = "random"               # random | kmeans (faiss k-means on the embeddings)
    function: str = "fl"                             # fl (facility location) | gc (graph cut) | logdet
    temperature: float | None = None                 # Taylor-softmax temperature of the headline arm (None: its variant's)
    layer: int | None = None                         # hidden_states index of the headline arm (None: its variant's)
    center: bool | None = None                       # centre the headline arm's embeddings (None: its variant's)
    optimizer: str | None = None                     # stochastic | lazy | naive for the headline arm (None: its variant's)
    eval_every: int = 50                             # optimizer steps between held-out evals
    probe: bool = True                               # linear probe of each frozen encoder on package classification

    def __post_init__(self):
        super().__post_init__()
        check(0 < self.fraction <= 1, f"fraction must be in (0, 1], got {self.fraction}")
        check(0 <= self.redundancy <= 1, f"redundancy must be in [0, 1], got {self.redundancy}")
        check(0 <= self.warmup < 1, f"warmup is a fraction of max_steps in [0, 1), got {self.warmup}")
        check(self.warm_start_epochs >= 0, f"warm_start_epochs must be >= 0, got {self.warm_start_epochs}")
        check(-1 <= self.warm_start_steps < self.max_steps, "warm_start_steps must be -1 or in [0, max_steps)")
        check(self.resample_every >= 1 and self.recompute_every >= 0, "resample_every >= 1, recompute_every >= 0")
        check(self.partitions >= 1, "partitions must be >= 1")
        check(self.temperature is None or self.temperature > 0, f"temperature must be > 0, got {self.temperature}")
        check(self.max_steps > 0 and self.batch_size > 0 and self.lr > 0, "max_steps, batch_size, lr must be > 0")
        check(self.variant in VARIANTS, f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        check(self.partition_strategy in PARTITION_STRATEGIES,
              f"partition_strategy must be one of {', '.join(PARTITION_STRATEGIES)}, got {self.partition_strategy!r}")
        check(self.function in FUNCTIONS, f"function must be one of {', '.join(FUNCTIONS)}, got {self.function!r}")
        check(self.optimizer is None or self.optimizer in OPTIMIZERS,
              f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        bad = [a for a in self.arm_list if a not in ARMS]
        check(not bad, f"unknown arm(s) {bad}; choose from {', '.join(ARMS)}")
        need = {BASELINE, f"ingenious_{self.variant}"}
        check(need <= set(self.arm_list), f"arms must include {sorted(need)} (the headline compares them)")

    @property
    def arm_list(self) -> list[str]:
        return [a.strip() for a in self.arms.split(",") if a.strip()]

    @property
    def method(self) -> str:
        return f"ingenious_{self.variant}"


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


def duplicate_share(keys) -> float:
    """Share of a subset's members whose key (text, or known original) an earlier member already has."""
    keys = list(keys)
    return 1.0 - len(set(keys)) / len(keys) if keys else 0.0


def domain_tv(domains_subset, domains_all) -> float:
    """Total-variation distance between a subset's domain mix and the corpus' (0: the same shares)."""
    names = sorted(set(domains_all))
    sub, allc = np.asarray(domains_subset), np.asarray(domains_all)
    if len(sub) == 0:
        return 1.0
    return 0.5 * float(sum(abs((sub == d).mean() - (allc == d).mean()) for d in names))


@dataclass
class ArmRun:
    """One of the training runs."""
    arm: str                                         # one of ARMS
    train: TrainResult                               # the training (model, history, final eval loss)
    run: Run                                         # its run directory, ``out_dir/<arm>``
    prep: Prepared                                   # the data (and the model, trained in place) it used
    wall_s: float                                    # seconds of training, selection included
    select_s: float                                  # seconds of those spent selecting (0 for the others)
    train_flops: float                               # FLOPs of the training steps
    select_flops: float                              # FLOPs of selection (embedding pass + ordering)
    subset: np.ndarray | None                        # the last subset (dataset indices); None for full data
    duplicate_share: float | None                    # share of ``subset`` repeating a document already in it
    domain_tv: float | None                          # total-variation distance of the subset's domain mix
    config: dict = field(default_factory=dict)       # the sampler's resolved configuration (INGENIOUS arms)
    dup_of: np.ndarray | None = field(default=None, repr=False)   # source of each known copy (-1: original)
    probe_acc: float | None = None                   # linear-probe accuracy of the frozen encoder (None: skipped)

    @property
    def eval_loss(self) -> float | None:
        return self.train.final_eval_loss

    @property
    def model(self):
        return self.train.model


@dataclass
class Result:
    runs: dict[str, ArmRun]                          # by arm name
    duplicate_share_corpus: float                    # the same share over all training examples
    n_train: int                                     # training examples (copies included)
    warm_start_steps: int                            # the warm start, in optimizer steps
    texts: list[str] = field(repr=False)             # each training example's text (for the views)
    dup_of: np.ndarray | None = field(default=None, repr=False)   # source of each known copy (-1: original)
    wall_s: float = 0.0                              # seconds the recipe ran

    @property
    def probe_acc(self) -> dict[str, float | None]:
        return {m: r.probe_acc for m, r in self.runs.items()}

    def table(self):
        """One row per arm: eval loss, probe accuracy, duplicate share, domain distance, selection cost."""
        import pandas as pd
        return pd.DataFrame([{"arm": m, "eval_loss": r.eval_loss, "probe_acc": r.probe_acc,
                              "duplicate_share": r.duplicate_share, "domain_tv": r.domain_tv,
                              "wall_s": r.wall_s, "select_s": r.select_s,
                              "select_flops_share": r.select_flops / (r.select_flops + r.train_flops)}
                             for m, r in self.runs.items()]).set_index("arm")


def resolve_warm_start(P: IngeniousParams, n: int) -> int:
    """The warm start in optimizer steps: ``warm_start_steps``, or ``warm_start_epochs`` over ``n``
    examples at ``batch_size`` (rounded up); refused when it leaves no step for the subset."""
    w = P.warm_start_steps if P.warm_start_steps >= 0 else int(math.ceil(P.warm_start_epochs * n / P.batch_size))
    check(w < P.max_steps, f"the warm start ({w} steps: {P.warm_start_epochs:g} epoch(s) of {n} examples at batch "
                           f"{P.batch_size}) leaves no step of max_steps {P.max_steps} for the subset; lower "
                           f"warm_start_epochs or set warm_start_steps")
    return w


def make_sampler(P: IngeniousParams, arm: str, warm: int):
    if arm == "full":
        return FullSampler()
    if arm == "random_fixed":
        return RandomSubsetSampler(P.fraction, warm_start_steps=warm)
    if arm == "random_online":
        return RandomOnlineSampler(P.fraction, warm_start_steps=warm, resample_every=P.resample_every)
    variant = arm.split("_", 1)[1]
    over = {} if variant != P.variant else {k: getattr(P, k) for k in ("temperature", "layer", "center", "optimizer")}
    return IngeniousSampler(P.fraction, warm, P.resample_every, P.recompute_every, P.partitions, variant=variant,
                            partition_strategy=P.partition_strategy, function=P.function, **over)


def prepare_data(P: IngeniousParams) -> tuple[Prepared, np.ndarray]:
    """The prepared data with a fresh model; with ``redundancy``, the training split gets its copies."""
    prep = prepare(P.corpus, P.model, P.seq_len, P.vocab_size, P.seed)
    dup_of = np.full(len(prep.train_corpus), -1, dtype=np.int64)
    if P.redundancy > 0:
        tr, dup_of = add_redundancy(prep.train_corpus, P.redundancy, seed=P.seed)
        prep = dataclasses.replace(prep, train_corpus=tr,
                                   train=make_task(tr, prep.tokenizer, prep.encoder, P.seq_len, P.seed))
    return prep, dup_of


def example_keys(task, dup_of: np.ndarray) -> list:
    """A key per training example that copies share: the original's text (known copies) for
    documents, the token row for packed blocks."""
    if getattr(task, "kind", "") == "mlm":
        texts = task.corpus.texts
        roots = group_ids(dup_of)
        return [texts[r] for r in roots]
    return example_texts(task, range(len(task)))


def run_arm(P: IngeniousParams, arm: str, progress: bool = False) -> ArmRun:
    """Train one arm into ``out_dir/<arm>`` (replacing an older run)."""
    check(arm in ARMS, f"arm {arm!r} is not one of {ARMS}")
    prep, dup_of = prepare_data(P)
    warm = resolve_warm_start(P, len(prep.train))
    run_dir = Path(P.out_dir) / arm
    shutil.rmtree(run_dir, ignore_errors=True)
    run = Run(run_dir, {"arm": arm, **{k: getattr(P, k) for k in P.__dataclass_fields__}})
    sampler = make_sampler(P, arm, warm)
    fpt = flops_per_token(prep.model, P.seq_len, head_fraction=0.15 if prep.encoder else 1.0)
    t0 = time.perf_counter()
    res = train(prep.model, prep.train, eval_data=prep.eval, sampler=sampler, budget=Budget(max_steps=P.max_steps),
                schedule=Schedule("linear", warmup=P.warmup), batch_size=P.batch_size, lr=P.lr,
                eval_every=P.eval_every, seed=P.seed, run=run, progress=progress, flops_per_token=fpt)
    wall = time.perf_counter() - t0
    subset = getattr(sampler, "subset", None)
    subset = None if subset is None else np.asarray(subset)
    keys = example_keys(prep.train, dup_of)
    doms = prep.train.domains
    st = sampler.stats()
    select_flops = 0.0
    if isinstance(sampler, IngeniousSampler):      # an embedding pass: the body's forward, without the LM head
        select_flops = st["embedded_tokens"] * flops_per_token(prep.model, P.seq_len, training=False,
                                                               head_fraction=0.0) + st["order_flops"]
    rec = ArmRun(arm=arm, train=res, run=run, prep=prep, wall_s=wall, select_s=st["select_s"],
                 train_flops=fpt * res.tokens, select_flops=select_flops, subset=subset,
                 duplicate_share=None if subset is None else duplicate_share(keys[i] for i in subset),
                 domain_tv=None if subset is None else domain_tv([doms[i] for i in subset], doms),
                 config=sampler.config() if isinstance(sampler, IngeniousSampler) else {}, dup_of=dup_of)
    run.write_summary({"arm": arm, "eval_loss": rec.eval_loss, "wall_s": wall, "steps": res.step,
                       "select_s": rec.select_s, "warm_start_steps": warm,
                       **({} if subset is None else {"duplicate_share": rec.duplicate_share,
                                                     "domain_tv": rec.domain_tv})}, complete=True)
    return rec


def linear_probe(P: IngeniousParams, rec: ArmRun) -> float | None:
    """Accuracy of a logistic regression (scikit-learn, standardised features) on the frozen encoder's
    features, classifying the package of held-out documents (the eval split: no arm trained on them);
    ``None`` when ``probe`` is off."""
    if not P.probe:
        return None
    task = domain_task(rec.prep.eval_corpus, rec.prep.tokenizer, P.seq_len, min_per_class=5, seed=P.seed)
    return probe_accuracy(rec.model, task)


def run(P: IngeniousParams, progress: bool = False) -> Result:
    """Every arm of ``P.arms``, each encoder's linear probe, and the duplicate share of the corpus."""
    t0 = time.perf_counter()
    runs = {a: run_arm(P, a, progress) for a in P.arm_list}
    for rec in runs.values():
        rec.probe_acc = linear_probe(P, rec)
    first = next(iter(runs.values()))
    data, dup_of = first.prep.train, first.dup_of
    texts = example_texts(data, range(len(data)))
    return Result(runs=runs, duplicate_share_corpus=duplicate_share(example_keys(data, dup_of)), n_train=len(data),
                  warm_start_steps=resolve_warm_start(P, len(data)), texts=[str(t) for t in texts], dup_of=dup_of,
                  wall_s=time.perf_counter() - t0)


def summary(P: IngeniousParams, result: Result) -> Summary:
    R = result.runs
    ing, base = R[P.method], R[BASELINE]

    def per_arm(f):
        return {a: f(r) for a, r in R.items()}

    sel_flops = ing.select_flops / (ing.select_flops + ing.train_flops)
    return Summary(paper="ingenious", scale=P.scale, claim=CLAIM, metric="eval_loss", paper_result=PAPER_RESULT,
                   baseline=Arm(BASELINE, base.eval_loss), method=Arm(P.method, ing.eval_loss),
                   extra={"eval_loss": per_arm(lambda r: r.eval_loss),
                          "probe_acc": per_arm(lambda r: r.probe_acc),
                          "duplicate_share": per_arm(lambda r: r.duplicate_share),
                          "domain_tv": per_arm(lambda r: r.domain_tv),
                          "select_s": per_arm(lambda r: r.select_s),
                          "wall_s": per_arm(lambda r: r.wall_s),
                          "duplicate_share_corpus": result.duplicate_share_corpus,
                          "quality_vs_full": (R["full"].eval_loss / ing.eval_loss) if "full" in R else None,
                          "selection_wall_fraction": ing.select_s / ing.wall_s,
                          "selection_flops_fraction": sel_flops,
                          "ingenious_config": {a: r.config for a, r in R.items() if r.config},
                          "n_train": result.n_train, "warm_start_steps": result.warm_start_steps,
                          "steps": P.max_steps, "fraction": P.fraction, "redundancy": P.redundancy,
                          "model": P.model, "corpus": P.corpus},
                   wall_s=result.wall_s)


def write_summary(P: IngeniousParams, result: Result) -> Summary:
    """Write ``P.out_dir/summary.json``; returns the summary."""
    s = summary(P, result)
    s.write(P.out_dir)
    return s
