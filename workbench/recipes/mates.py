"""The MATES recipe (``notebooks/mates.ipynb``): MATES against random staged selection.

Yu, Das & Xiong (NeurIPS 2024) select each training stage's data by its influence on a reference
task, as the model learns (:class:`workbench.selection.mates.MatesSampler`: probe, fit the
influence model, predict, Gumbel top-k). Here a GPT-2-style decoder trains on ``pydocs`` with one
package held out as the reference task, whose LM loss drives the probes and is the reported metric;
a LAMBADA-style last-word prediction built from the same held-out documents is reported next to it.
The reference task can instead come from outside the training corpus: ``reference=`` takes a corpus
spec or a text file, tokenized with the run's tokenizer. Both are validated before any training:
what needs no reading in :class:`MatesParams`, the rest (is ``reference_package`` a domain of the
corpus? does the reference yield a block?) in :func:`prepare_mates`, which runs before the first step.
Both methods run the same stages, pool, steps and data-order seed; ``method="random"`` picks each
stage's selection at random.

``variant="authors"`` (default) runs the authors' released configuration (cxcscmu/MATES): probes
clipped to the training ``grad_clip``, AdamW betas (0.9, 0.95) and weight decay 0.1, a
warmup-stable-decay schedule (constant LR while probing), dropout 0, a new disjoint candidate pool
each stage, a last-word (LAMBADA-style) probe loss and the influence model re-initialised each stage.
``variant="workbench"`` restores the workbench's earlier choices; a single option set away from the
authors' value (``clip_probes=False``, ``probe_loss="full"``, ``warm_start=True``, ...) is kept under
either variant. The held-out reference documents are split in two disjoint halves: one feeds the
probes, the other is what the reported losses are measured on. The headline is FLOPs to the target
(random selection's final reference loss) with selection FLOPs counted; the equal-steps reference
losses stay in ``extra``.
"""
from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
# pandas is imported inside the functions that build frames: the CLI checks these Params, and a one-line
# error must not pay for importing pandas

from ..config import check
from ..data import pydocs as _pydocs
from ..data.corpus import check_spec, corpus as load_corpus
from ..data.prepare import prepare
from ..errors import ConfigError, CorpusError, WorkbenchError
from ..models import flops_per_token, is_encoder
from ..runs import Run
from ..selection.mates import (IM_KINDS, PROBERS, MatesSampler, check_cv_folds, last_word_batch, reference_blocks,
                               reference_loss)
from ..training import Budget, Schedule, make_optimizer, train
from ..training.schedules import warmup_stable_decay
from .base import Arm, RecipeParams, Summary

CLAIM = "MATES reaches random selection's downstream quality with about half the FLOPs (paper: Fig. 1 / Table 1)"
PAPER_RESULT = ("Pythia-410M/1B on C4: doubles the gains of reference-model selection and halves the FLOPs to reach "
                "a given downstream performance (Yu et al., NeurIPS 2024)")
METHODS = ("mates", "random")
VARIANTS = ("authors", "workbench")
#: the option values of each variant (``variant="workbench"`` applies the second to every option left at the first)
AUTHORS = {"clip_probes": True, "probe_loss": "last_word", "warm_start": False, "disjoint_pools": True,
           "dropout": 0.0, "adam_beta2": 0.95, "weight_decay": 0.1, "schedule": "wsd"}
WORKBENCH = {"clip_probes": False, "probe_loss": "full", "warm_start": True, "disjoint_pools": False,
             "dropout": -1.0, "adam_beta2": 0.999, "weight_decay": 0.01, "schedule": "linear"}


# ----------------------------------------------------------------------------------- reference task

def lambada_style(corpus, tokenizer, max_tokens: int = 64, n: int = 200) -> list[tuple[list[int], list[int]]]:
    """LAMBADA-style items from held-out documents: (context tokens, last-word tokens).

    Each document's first ``max_tokens`` tokens are cut back to the last whole word; the model must
    predict that word from everything before it.
    """
    items = []
    for text in corpus.texts:
        words = text.split()
        if len(words) < 8:
            continue
        ids = tokenizer(" ".join(words))["input_ids"][:max_tokens]
        prefix = tokenizer.decode(ids).split()
        if len(prefix) < 8:
            continue
        ctx = tokenizer(" ".join(prefix[:-1]))["input_ids"]
        tgt = tokenizer(" " + prefix[-1])["input_ids"]
        if ctx and tgt and len(ctx) + len(tgt) <= max_tokens + 4:
            items.append((ctx, tgt))
        if len(items) >= n:
            break
    if not items:
        raise ConfigError(f"the reference corpus {corpus.spec!r} yields no LAMBADA-style item "
                          f"(documents of 8 or more words)")
    return items


@torch.no_grad()
def lambada_eval(model, items) -> dict:
    """Mean last-word loss (nats per target token) and exact last-word accuracy (greedy)."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    tot, ntok, correct = 0.0, 0, 0
    for ctx, tgt in items:
        ids = torch.tensor([ctx + tgt], device=dev)
        logits = model(input_ids=ids).logits[0, len(ctx) - 1: len(ctx) + len(tgt) - 1].float()
        t = torch.tensor(tgt, device=dev)
        tot += float(torch.nn.functional.cross_entropy(logits, t, reduction="sum"))
        ntok += len(tgt)
        correct += bool((logits.argmax(-1) == t).all())
    model.train(was)
    return {"lambada_loss": tot / ntok, "lambada_acc": correct / len(items)}


# ----------------------------------------------------------------------------------- parameters

@dataclass(frozen=True)
class MatesParams(RecipeParams):
    """Parameters of ``notebooks/mates.ipynb`` (its tagged cell is generated from these)."""
    out_dir: str = "runs/mates"                 # runs and summary.json go here
    corpus: str = "pydocs:numpy,sklearn,datasets,deepspeed,papermill"   # corpus spec: pydocs[:pkgs] | .txt/.jsonl/.json/.csv/.parquet | datasets dir
    reference_package: str = "deepspeed"        # domain (pydocs package) of the corpus held out as the reference task, when reference is ""
    reference: str = ""                         # reference task from outside the corpus: a corpus spec or text file, tokenized with the run's tokenizer ("": hold out reference_package)
    model: str = "gpt2-tiny"                    # decoder preset
    seq_len: int = 64                           # tokens per block
    vocab_size: int = 4096                      # tokenizer vocabulary (tokens)
    max_steps: int = 200                        # optimizer steps of each run
    batch_size: int = 16                        # blocks per step
    lr: float = 1e-3                            # peak learning rate (AdamW)
    warmup: float = 0.1                         # fraction of max_steps warming up the LR, then linear decay to zero
    stage_steps: int = 50                       # optimizer steps per stage (selection every stage)
    fraction: float = 0.2                       # share of each stage's pool that is kept
    pool_size: int = 0                          # candidate pool per stage, in blocks (0: every training block)
    probe_size: int = 384                       # oracle probes per stage (blocks)
    temperature: float = 0.5                    # Gumbel top-k temperature, in oracle standard deviations
    im_epochs: int = 6                          # influence-model epochs per stage
    im_cv_folds: int = 5                        # k-fold check of the influence model per stage (0: off; not selection cost)
    ref_blocks: int = 16                        # reference blocks the probes evaluate
    prober: str = "auto"                        # oracle prober: auto (the faster for the model's size and device) | naive | batched
    variant: str = "authors"                    # authors (cxcscmu/MATES's choices) | workbench (earlier choices); an option below set away from the authors' value wins
    clip_probes: bool = True                    # clip each probe's gradient to grad_clip (1.0) before its step, as training does
    probe_loss: str = "last_word"               # probe target: last_word (LAMBADA-style last-word loss) | full (every next token)
    warm_start: bool = False                    # fine-tune the previous stage's influence model (False: re-initialise each stage)
    disjoint_pools: bool = True                 # each stage selects from a new slice of the training set (pool_size 0: n / stages)
    dropout: float = 0.0                        # dropout of the trained model (-1: the preset's own, 0.1)
    adam_beta2: float = 0.95                    # AdamW beta2 (beta1 0.9)
    weight_decay: float = 0.1                   # AdamW weight decay
    schedule: str = "wsd"                       # wsd (warmup, constant, then decay over the last `decay`) | linear (warmup, then linear decay)
    decay: float = 0.1                          # wsd: fraction of max_steps in the final decay
    im_kind: str = "bert"                       # influence model that selects: bert (small, from scratch) | pretrained (im_pretrained) | ridge
    im_pretrained: str = ""                     # local encoder directory (save_pretrained) for the pretrained kind; also cross-validated beside the others when set
    curve_points: int = 2                       # reference-loss evaluations per stage (the FLOPs curve)

    def __post_init__(self):
        super().__post_init__()
        check(self.max_steps > 0 and self.stage_steps > 0, "max_steps and stage_steps must be positive")
        check(0 <= self.warmup < 1, f"warmup is a fraction of max_steps in [0, 1), got {self.warmup}")
        check(0 < self.fraction <= 1, f"fraction must be in (0, 1], got {self.fraction}")
        check(self.probe_size >= 8 and self.temperature > 0 and self.ref_blocks >= 1,
              "probe_size >= 8, temperature > 0, ref_blocks >= 1")
        check(self.pool_size >= 0 and self.im_epochs >= 1, "pool_size >= 0 and im_epochs >= 1")
        check_cv_folds(self.im_cv_folds, self.probe_size)
        check(self.prober in PROBERS, f"prober must be one of {', '.join(PROBERS)}, got {self.prober!r}")
        check(self.variant in VARIANTS, f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        check(self.probe_loss in ("last_word", "full"), f"probe_loss must be last_word or full, got {self.probe_loss!r}")
        check(self.schedule in ("wsd", "linear"), f"schedule must be wsd or linear, got {self.schedule!r}")
        check(self.dropout == -1 or 0 <= self.dropout < 1, f"dropout must be in [0, 1) or -1, got {self.dropout}")
        check(0 < self.adam_beta2 < 1 and self.weight_decay >= 0, "adam_beta2 in (0, 1) and weight_decay >= 0")
        check(0 <= self.decay <= 1 and self.warmup + self.decay <= 1, "decay in [0, 1] with warmup + decay <= 1")
        check(self.im_kind in IM_KINDS, f"im_kind must be one of {', '.join(IM_KINDS)}, got {self.im_kind!r}")
        check(self.im_kind != "pretrained" or bool(self.im_pretrained.strip()),
              "im_kind='pretrained' needs im_pretrained, a local encoder directory saved with save_pretrained")
        check(self.curve_points >= 1, f"curve_points must be >= 1, got {self.curve_points}")
        self._check_data()

    def _check_data(self):
        """What can be checked without reading a corpus: specs that exist, a held-out package that is one
        of a pydocs corpus's packages, a decoder model."""
        for name in ("corpus", "reference"):
            spec = getattr(self, name)
            if name == "corpus" or spec.strip():
                try:
                    check_spec(spec)
                except CorpusError as e:
                    raise ConfigError(f"{name}: {e}") from None
        if not self.reference.strip():
            rp = self.reference_package
            check(bool(rp.strip()), "reference_package must name a domain of the corpus (or set reference= to "
                                    "a corpus spec or text file)")
            pk = _pydocs_packages(self.corpus)
            if pk is not None:
                check(rp in pk, f"reference_package {rp!r} is not a package of corpus {self.corpus!r}; "
                                f"packages: {', '.join(pk)}")
                check(len(pk) > 1, f"reference_package {rp!r} is the only package of corpus {self.corpus!r}: "
                                   f"nothing would be left to train on")
        try:
            enc = is_encoder(self.model)
        except (WorkbenchError, AttributeError, OSError, ValueError, TypeError):
            enc = False                 # not a preset name the table knows: the model loader decides later
        check(not enc, f"MATES probes a causal language model; {self.model!r} is a masked-LM (encoder) model")


def _pydocs_packages(spec: str) -> list[str] | None:
    """The packages of a pydocs corpus spec (its domains), None for other specs."""
    spec = spec.strip()
    if spec == "pydocs":
        return list(_pydocs.DEFAULT_PACKAGES)
    if spec.startswith("pydocs:"):
        return [p.strip() for p in spec[len("pydocs:"):].split(",") if p.strip()]
    return None


def reference_label(P: "MatesParams") -> str:
    """What the reference task is, for titles and the summary."""
    return P.reference.strip() or P.reference_package


Params = MatesParams


def options(P: MatesParams) -> dict:
    """The option values a run uses: the authors' (``AUTHORS``) under ``variant="authors"``; under
    ``"workbench"`` the workbench's (``WORKBENCH``) for every option left at the authors' value."""
    out = {k: getattr(P, k) for k in AUTHORS}
    if P.variant == "workbench":
        out.update({k: WORKBENCH[k] for k in AUTHORS if out[k] == AUTHORS[k]})
    return out


def flops_to_target(curve: list[dict], target: float, key: str = "reference_loss") -> float | None:
    """Total FLOPs at which ``curve`` (points with ``total_flops`` and ``key``, in order) first reaches
    ``target``, linearly interpolated between the two points around the crossing; None if never."""
    prev = None
    for pt in curve:
        if pt[key] <= target:
            if prev is None or prev[key] == pt[key]:
                return float(pt["total_flops"])
            a = (prev[key] - target) / (prev[key] - pt[key])
            return float(prev["total_flops"] + a * (pt["total_flops"] - prev["total_flops"]))
        prev = pt
    return None


# ----------------------------------------------------------------------------------- results

@dataclass
class MethodRun:
    """One training run with MATES or random staged selection."""
    method: str
    reference_loss: float                   # final LM loss on the held-out package (nats/token)
    eval_loss: float | None                 # final held-out loss on the training domains
    lambada_loss: float                     # last-word loss (nats per target token)
    lambada_acc: float                      # exact last-word accuracy
    wall_s: float                           # training seconds, the k-fold check excluded
    train_flops: float                      # FLOPs of the training steps
    selection_flops: float                  # FLOPs of probing, fitting and predicting
    select_s: float                         # seconds of selection (the k-fold check excluded)
    diagnostic_wall_s: float                # seconds of the influence model's k-fold check
    per_stage: list[dict]                   # the sampler's record of each stage
    ref_curve: list[dict]                   # {"step", "reference_loss", "train_flops", "selection_flops", "total_flops"}
    run: Run                                # the run directory (its scores hold each stage's selection)
    model: torch.nn.Module                  # the trained model
    domains: np.ndarray                     # domain of every training block (what the indices point to)


@dataclass
class InfluenceArrays:
    """The last stage with predictions, in oracle standard deviations (the scale the sampler ranks on)."""
    stage: int
    predicted: np.ndarray                   # predicted influence of every pool member, z-units
    oracle: np.ndarray                      # oracle influence, z-units; NaN where not probed
    domains: np.ndarray                     # domain of every pool member
    pool: np.ndarray                        # the pool's dataset indices


@dataclass
class Result:
    runs: dict[str, MethodRun]              # "mates" and "random"
    reference_curves: pd.DataFrame          # step, reference_loss, total_flops, method (evaluation half of the reference)
    influence: InfluenceArrays | None       # None when no stage had predictions (too few steps)
    composition: pd.DataFrame               # method, stage, domain, share of the stage's selection
    wall_s: float                           # seconds the recipe ran


# ----------------------------------------------------------------------------------- the experiment

def check_reference(P: MatesParams, corpus=None):
    """The checks that read the corpus, before anything trains: ``reference_package`` is a domain of the
    corpus (else one line listing the domains present), or the ``reference`` corpus can be read. Returns
    ``(training corpus, reference corpus or None)``."""
    c = corpus if corpus is not None else load_corpus(P.corpus)
    if P.reference.strip():
        return c, load_corpus(P.reference.strip())
    present = sorted(set(c.domains))
    if P.reference_package not in present:
        shown = ", ".join(present[:30]) + (f", ... ({len(present)} in all)" if len(present) > 30 else "")
        raise ConfigError(f"reference_package {P.reference_package!r} is not a domain of corpus {P.corpus!r}; "
                          f"domains present: {shown}")
    if len(present) == 1:
        raise ConfigError(f"reference_package {P.reference_package!r} is the only domain of corpus {P.corpus!r}: "
                          f"nothing would be left to train on")
    return c, None


@dataclass
class Setup:
    """What a run needs, checked before training. The reference documents are split in two disjoint
    halves (by document): ``probe_corpus`` feeds the probes (``probe_ref``), ``eval_corpus`` is what
    every reported reference loss (``ref_eval``) and last-word score (``lambada``) is measured on."""
    prep: object
    probe_corpus: object
    eval_corpus: object
    probe_ref: object                       # [R, T] blocks (probe_loss="full") or a RefBatch (last_word)
    ref_eval: torch.Tensor                  # [<=256, T] evaluation blocks
    lambada: list = field(default_factory=list)   # LAMBADA-style items of the evaluation half


def split_reference(corpus, seed: int = 0):
    """(probe half, evaluation half) of a reference corpus: its documents in a seeded order, cut in two."""
    n = len(corpus)
    if n < 2:
        raise ConfigError(f"the reference task {corpus.spec!r} has {n} document(s): at least 2 are needed, one "
                          f"for the probes and one for the evaluation, kept apart")
    order = np.random.default_rng([seed, 7]).permutation(n)
    half = n // 2
    return corpus.select(sorted(order[:half].tolist())), corpus.select(sorted(order[half:].tolist()))


def prepare_mates(P: MatesParams) -> Setup:
    """The prepared training setup and the reference task, all checked before training.

    The reference task is ``P.reference`` (a corpus spec or text file) when set, else the documents of
    ``P.reference_package``, held out of the training corpus; either way its documents are split into a
    probe half and an evaluation half (:func:`split_reference`), tokenized with the run's tokenizer.
    """
    c, ref_corpus = check_reference(P)
    hold = [] if ref_corpus is not None else [P.reference_package]
    drop = options(P)["dropout"]
    prep = prepare(c, P.model, P.seq_len, P.vocab_size, P.seed, holdout_domains=hold,
                   dropout=None if drop < 0 else drop)
    if prep.encoder:
        raise ConfigError(f"MATES probes a causal language model; {P.model!r} is a masked-LM (encoder) model")
    ref_corpus = ref_corpus if ref_corpus is not None else prep.holdout_corpus
    probe_c, eval_c = split_reference(ref_corpus, P.seed)
    try:
        ref_eval = reference_blocks(eval_c, prep.tokenizer, P.seq_len, max_blocks=256, seed=P.seed)
        if options(P)["probe_loss"] == "last_word":
            items = lambada_style(probe_c, prep.tokenizer, P.seq_len, n=P.ref_blocks)
            probe_ref = last_word_batch(items, pad_id=prep.tokenizer.pad_token_id or 0)
        else:
            probe_ref = reference_blocks(probe_c, prep.tokenizer, P.seq_len, max_blocks=P.ref_blocks, seed=P.seed)
    except CorpusError as e:
        raise ConfigError(f"reference task {reference_label(P)!r}: {e}") from None
    return Setup(prep, probe_c, eval_c, probe_ref, ref_eval, lambada_style(eval_c, prep.tokenizer, P.seq_len))


def run_method(P: MatesParams, method: str, progress: bool = False) -> MethodRun:
    """Train with MATES or random staged selection into ``out_dir/<method>`` (replacing an older run)."""
    S = prepare_mates(P)
    prep, ref_all, lam = S.prep, S.ref_eval, S.lambada
    O = options(P)
    fpt = flops_per_token(prep.model, P.seq_len)
    betas = (0.9, O["adam_beta2"])
    opt = make_optimizer(prep.model, P.lr, weight_decay=O["weight_decay"], betas=betas)
    stages = math.ceil(P.max_steps / P.stage_steps)
    pool = P.pool_size or (max(1, len(prep.train) // stages) if O["disjoint_pools"] else 0)
    compare = [k for k in ("bert", "ridge") + (("pretrained",) if P.im_pretrained.strip() else ()) if k != P.im_kind]
    sampler = MatesSampler(opt, S.probe_ref, stage_steps=P.stage_steps, fraction=P.fraction,
                           pool_size=pool or None, probe_size=P.probe_size, temperature=P.temperature,
                           method=method, im_epochs=P.im_epochs, flops_per_token=fpt, im_cv_folds=P.im_cv_folds,
                           prober=P.prober, grad_clip=1.0 if O["clip_probes"] else None,
                           warm_start=O["warm_start"], disjoint_pools=O["disjoint_pools"], im_kind=P.im_kind,
                           im_pretrained=P.im_pretrained.strip() or None, im_compare=compare)
    schedule = warmup_stable_decay(P.warmup, P.decay) if O["schedule"] == "wsd" else Schedule("linear", warmup=P.warmup)
    run_dir = Path(P.out_dir) / method
    shutil.rmtree(run_dir, ignore_errors=True)
    run = Run(run_dir, {"method": method, **{k: getattr(P, k) for k in P.__dataclass_fields__}})
    every = max(1, P.stage_steps // P.curve_points)
    ref_curve = [{"step": 0, "reference_loss": reference_loss(prep.model, ref_all), "train_flops": 0.0,
                  "selection_flops": 0.0, "total_flops": 0.0}]

    def track(step, model, history=(), **_):
        if step % every == 0 or step == P.max_steps:
            tf = float(history[-1].get("flops", 0.0)) if history else 0.0
            sf = sampler.selection_flops
            ref_curve.append({"step": step, "reference_loss": reference_loss(model, ref_all), "train_flops": tf,
                              "selection_flops": sf, "total_flops": tf + sf})
    t0 = time.perf_counter()
    res = train(prep.model, prep.train, eval_data=prep.eval, sampler=sampler, optimizer=opt,
                budget=Budget(max_steps=P.max_steps), schedule=schedule, weight_decay=O["weight_decay"], betas=betas,
                grad_clip=1.0, batch_size=P.batch_size, lr=P.lr, seed=P.seed, run=run, progress=progress,
                flops_per_token=fpt, callbacks=(track,))
    wall = time.perf_counter() - t0 - sampler.diagnostic_wall_s     # the influence model's k-fold check is not training
    stats = sampler.stats()
    out = MethodRun(method=method, reference_loss=reference_loss(res.model, ref_all), eval_loss=res.final_eval_loss,
                    wall_s=wall, train_flops=res.history[-1].get("flops", 0.0) if res.history else 0.0,
                    selection_flops=stats["selection_flops"], select_s=stats["select_s"],
                    diagnostic_wall_s=stats["diagnostic_wall_s"], per_stage=sampler.per_stage, ref_curve=ref_curve,
                    run=run, model=res.model, domains=np.asarray(prep.train.domains), **lambada_eval(res.model, lam))
    run.write_summary({"method": method, "reference_loss": out.reference_loss, "eval_loss": out.eval_loss,
                       "wall_s": out.wall_s, "train_flops": out.train_flops, "selection_flops": out.selection_flops,
                       "select_s": out.select_s, "diagnostic_wall_s": out.diagnostic_wall_s,
                       "per_stage": out.per_stage, "lambada_loss": out.lambada_loss, "lambada_acc": out.lambada_acc},
                      complete=True)
    return out


def stage_names(run: Run) -> list[str]:
    """The run's recorded stages (``mates_stage_000``, ...), in order."""
    return sorted(n for n in run.score_names() if n.startswith("mates_stage_"))


def last_influence(mr: MethodRun) -> InfluenceArrays | None:
    """The last stage with predictions, z-scored against that stage's probes; None if there is none."""
    for name in reversed(stage_names(mr.run)):
        s = mr.run.load_scores(name)
        if "predicted" not in s:
            continue
        pool = s["pool"]
        mu, sd = float(s["score_mean"]), float(s["score_std"])   # the stage's probes: z-scoring constants
        oracle = np.full(len(pool), np.nan)
        oracle[np.searchsorted(pool, s["probe_indices"])] = (s["oracle"] - mu) / sd
        return InfluenceArrays(stage=int(name[-3:]), predicted=(s["predicted"] - mu) / sd, oracle=oracle,
                               domains=mr.domains[pool], pool=pool)
    return None


def composition(runs: dict[str, MethodRun]) -> pd.DataFrame:
    """Domain shares of each stage's selection: columns method, stage, domain, share."""
    import pandas as pd
    rows = []
    for m, r in runs.items():
        for name in stage_names(r.run):
            doms = r.run.load_scores(name)["domains"]
            for d, c in zip(*np.unique(doms, return_counts=True)):
                rows.append({"method": m, "stage": int(name[-3:]), "domain": d, "share": c / len(doms)})
    return pd.DataFrame(rows, columns=["method", "stage", "domain", "share"])


def run(P: MatesParams, progress: bool = False) -> Result:
    """Train with MATES and with random selection (same stages, steps and seed); the frames the views read."""
    import pandas as pd
    t0 = time.perf_counter()
    runs = {m: run_method(P, m, progress) for m in METHODS}
    curves = pd.concat([pd.DataFrame(r.ref_curve, columns=["step", "reference_loss", "total_flops"]).assign(method=m)
                        for m, r in runs.items()], ignore_index=True)
    return Result(runs=runs, reference_curves=curves, influence=last_influence(runs["mates"]),
                  composition=composition(runs), wall_s=time.perf_counter() - t0)


def summary(P: MatesParams, result: Result) -> Summary:
    mt, rd = result.runs["mates"], result.runs["random"]
    spearmans = [s["spearman_val"] for s in mt.per_stage if "spearman_val" in s]
    cv = [s["spearman_cv"] for s in mt.per_stage if "spearman_cv" in s]   # out-of-fold: no model saw its probes
    total_flops = mt.train_flops + mt.selection_flops
    target = rd.ref_curve[-1]["reference_loss"]           # random's final reference loss (evaluation half)
    ftt = {m: flops_to_target(r.ref_curve, target) for m, r in result.runs.items()}
    cv_of = {k: [s[f"spearman_cv_{k}"] for s in mt.per_stage if f"spearman_cv_{k}" in s] for k in IM_KINDS}
    cv_of[P.im_kind] = cv
    return Summary(
        paper="mates", scale=P.scale, claim=CLAIM, metric="flops_to_target", paper_result=PAPER_RESULT,
        baseline=Arm("random", ftt["random"]), method=Arm("mates", ftt["mates"]),
        extra={
            "target_reference_loss": target,
            "flops_to_target_ratio": (ftt["mates"] / ftt["random"]) if ftt["mates"] and ftt["random"] else None,
            "total_flops": {m: r.train_flops + r.selection_flops for m, r in result.runs.items()},
            "reference_loss": {m: r.reference_loss for m, r in result.runs.items()},   # the equal-steps comparison
            "flops_curves": {m: [{k: pt[k] for k in ("step", "reference_loss", "total_flops")} for pt in r.ref_curve]
                             for m, r in result.runs.items()},
            "influence_models": {k: (float(np.nanmean(v)) if v else None) for k, v in cv_of.items()},
            "influence_model": P.im_kind,
            "variant": P.variant,
            "options": options(P),
            "spearman_val": float(np.mean(spearmans)) if spearmans else None,
            "spearman_val_per_stage": spearmans,
            "spearman_cv": float(np.mean(cv)) if cv else None,
            "spearman_cv_per_stage": cv,
            "selection_flops_fraction": mt.selection_flops / total_flops if total_flops else None,
            "selection_wall_fraction": mt.select_s / mt.wall_s,
            "lambada": {m: {"loss": r.lambada_loss, "acc": r.lambada_acc} for m, r in result.runs.items()},
            "eval_loss": {m: r.eval_loss for m, r in result.runs.items()},
            "per_stage": mt.per_stage,
            "reference_package": P.reference_package if not P.reference.strip() else None,
            "reference": reference_label(P),
        },
        wall_s=result.wall_s)


def write_summary(P: MatesParams, result: Result) -> Summary:
    """Write ``P.out_dir/summary.json``; returns the summary."""
    s = summary(P, result)
    s.write(P.out_dir)
    return s


def flops_figure(result: Result):
    """Reference loss (evaluation half) against total FLOPs, selection included, per method; the dotted
    line is random selection's final loss (the target of ``flops_to_target``)."""
    import plotly.express as px

    df = result.reference_curves
    fig = px.line(df, x="total_flops", y="reference_loss", color="method", markers=True,
                  labels={"total_flops": "total FLOPs (training + selection)", "reference_loss": "reference loss"},
                  title="Reference loss against total FLOPs")
    target = result.runs["random"].ref_curve[-1]["reference_loss"]
    fig.add_hline(y=target, line_dash="dot", annotation_text="random's final loss (target)")
    return fig
