"""The RHO-LOSS recipe behind ``notebooks/rho_loss.ipynb`` (``python -m workbench reproduce rho_loss``).

One experiment, as in Mindermann et al. (2022), section 5: a labelled dataset is split into train /
holdout / valid / test and label noise is injected into the training split (drawn as the authors'
code draws it: a random class, which may be the original; ``noise_draw="other"`` always changes it); an irreducible-loss (IL)
model is trained on the holdout split (best checkpoint by clean validation loss) and scores every
training example once. The holdout keeps clean labels by default (``clean_holdout``), as in the
paper's label-noise experiments: its code corrupts only the training split and reuses the IL model
of the clean run. ``clean_holdout=False`` corrupts the holdout too (a harder setting).
Then *every* selector trains the same model (same initialisations, same step budget, same small
batch ``n_b``) with ``wb.train`` and a :class:`~workbench.selection.rho_loss.BatchSelector`, while a
callback measures clean test accuracy. The comparison: steps each selector needs to reach two target
accuracies (fractions of uniform's final accuracy), final accuracy, share of noisy points picked,
and the wall time selection adds (``select_s``).

The defaults follow the authors' code (OATML/RHO-Loss) wherever it makes a choice: the target model
scores each large batch in train mode (``selection_mode``), ``boltzmann_rho`` draws with replacement at
T = 0.25 (``boltzmann_replacement``, ``temperature``), the no-holdout halves are class-balanced
(``il_halves``), and ``il_update`` trains the IL model on the selected batch alone (``il_update_mix``
adds holdout points). The paper's regime (a training set many large batches long) is the ``tiny`` and
``cpu`` scales: ``dataset="pydocs"`` over eight packages (papers/rho_loss/tiny.yaml); ``digits`` (629
training points, two large batches per pass) stays the ``smoke`` and teaching case.

Curves are averaged over ``n_seeds`` training seeds (model init and data order: ``seed``,
``seed + 1``, ...) before steps-to-target are read off them; ``seed`` also fixes the split, the
noise and the IL model. "Final accuracy" is the mean over the evaluations in the last 5% of steps
(at least one), which steadies a curve that still moves by a test point or two per evaluation.

:func:`run` does all of it (:func:`prepare`, :func:`run_all`, :func:`compare`) and returns a
:class:`Result`; :func:`summary` reads the headline numbers off it.

LM mode (``corpus`` set, e.g. ``-p corpus=my.jsonl -p model=gpt2-tiny``): sequence-level RHO-LOSS
on a language model. The corpus's documents are split (seeded) into test / valid shares
(``test_fraction``, ``valid_fraction``) and the rest halved into train and holdout; a tokenizer
(``vocab_size``; BPE for a decoder, WordPiece for an encoder) is trained on train + holdout; every
split becomes the model's task (``CLMTask`` blocks of ``seq_len`` tokens for ``gpt2-*``/``pythia-*``,
``MLMTask`` documents for ``bert-*``/``prelnbert-*``). The IL model (``il_model``, default the same
preset) trains on the holdout task (or, ``il_mode="no_holdout"``, two IL models on halves of train +
holdout); on MLM the batch filter scores each large batch with it on that batch's own masks. Each
selector then trains ``model`` for ``max_steps``; a callback measures the mean held-out (test) loss
every ``eval_every`` steps. The comparison: held-out loss at equal steps, and the steps each selector
needs to reach the uniform run's final held-out loss (mean of the evaluations in the last 5% of
steps), the summary's metric. Only the selectors that make sense without class labels run
(:data:`LM_SELECTORS`; ``grad_norm*`` need class logits). ``-p selectors=uniform,rho_loss,token_rho``
adds the token-level arm (Rho-1, Lin et al. 2024): a uniform batch of n_b sequences, trained on the
``token_fraction`` of its tokens with the highest excess loss over the IL model (causal LMs only).
``dataset``, ``noise``, ``clean_holdout``, ``hidden``, ``il_hidden`` and ``packages`` are not used there.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
# pandas is imported inside the functions that build frames: the CLI checks these Params, and a one-line
# error must not pay for importing pandas

from ..config import asdict, check
from ..data.corpus import corpus as load_corpus
from ..data.labelled import DATASETS, LabelledSplits, LabelledTask, load_labelled, make_classifier
from ..data.prepare import make_task
from ..data.tokenizer import load_tokenizer, train_tokenizer
from ..errors import ConfigError, CorpusError
from ..models import check_seq_len, check_spec, is_encoder, model as make_lm
from ..runs import Run
from ..selection.irreducible import (IrreducibleLosses, holdout_irreducible, no_holdout_irreducible, score,
                                     task_subset)
from ..selection.rho_loss import NEEDS_LOGITS, PAPER_SELECTORS, SELECTORS, BatchSelector
from ..selection.rho_tokens import TokenExcessLoss
from ..training import Budget, Schedule, train
from .base import Arm, RecipeParams, Summary

CLAIM = "RHO-LOSS reaches the target accuracy in fewer steps than uniform selection and picks few noisy points"
PAPER_RESULT = ("on Clothing-1M: 18x fewer steps and +2% final accuracy vs. uniform shuffling "
                "(Mindermann et al., ICML 2022)")
CLAIM_LM = ("sequence-level RHO-LOSS reaches the uniform run's final held-out loss in fewer steps "
            "than uniform selection")
#: the selectors of LM mode: every one that needs no class logits
LM_SELECTORS = tuple(s for s in PAPER_SELECTORS if s not in NEEDS_LOGITS)
#: LM mode's token-level arm (Rho-1's selective language modelling, :mod:`workbench.selection.rho_tokens`):
#: a uniform batch of n_b sequences, trained on the ``token_fraction`` of its tokens with the highest excess
#: loss over the IL model (Rho-1's reference model); causal LMs with ``il_mode="holdout"`` only
TOKEN_SELECTOR = "token_rho"


@dataclass(frozen=True)
class RhoLossParams(RecipeParams):
    """Parameters of ``notebooks/rho_loss.ipynb`` (its tagged cell is generated from these). ``seed``
    fixes the split, the label noise and the IL model, and is the first training seed."""
    out_dir: str = "runs/rho_loss"            # run directories and summary.json go here
    dataset: str = "digits"                   # digits | wine | breast_cancer | iris | pydocs
    noise: float = 0.1                        # share of training labels corrupted (0-1; see noise_draw)
    noise_draw: str = "authors"               # authors: a random class, may be the original | other: always another class
    clean_holdout: bool = True                # holdout (IL model) labels clean, as in the paper; False: noisy too
    n_seeds: int = 3                          # training seeds per selector (seed, seed+1, ...); curves are averaged
    selectors: list[str] = field(default_factory=lambda: list(PAPER_SELECTORS))   # selectors to compare (names; also bald, entropy, conditional_entropy, loss_minus_conditional_entropy)
    fraction: float = 0.1                     # n_b / n_B: share of each large batch trained on (0-1]
    batch_size: int = 32                      # small batch n_b, examples per step (every selector)
    max_steps: int = 400                      # optimizer steps per run
    lr: float = 1e-3                          # AdamW learning rate (constant; also the IL model's)
    weight_decay: float = 0.01                # AdamW decoupled weight decay (per unit of lr)
    hidden: int = 256                         # target model width (hidden units)
    il_hidden: int = 256                      # IL model width (hidden units)
    duplicates: float = 0.0                   # share of training examples given 2-4 exact copies (clean labels): redundancy without noise
    proxy_hidden: int = 0                     # > 0: a proxy classifier of this width scores each large batch and trains on the picks (the authors' proxy_model); 0: the target scores itself
    il_steps: int = 600                       # IL model optimizer steps on the holdout split
    il_mode: str = "holdout"                  # holdout | no_holdout (two IL models on halves)
    il_recompute: bool = False                # recompute IL with the IL model every step
    il_update: bool = False                   # keep training the IL model on selected points (one step per step)
    temperature: float = 0.25                 # boltzmann_rho: p ∝ exp(reducible loss / T), T in nats (authors: 0.25)
    boltzmann_replacement: bool = True        # boltzmann_rho draws with replacement (authors) | False: distinct points
    selection_mode: str = "train"             # target model mode while scoring: train (authors) | eval
    il_update_mix: bool = False               # il_update: also fit as many holdout points per IL step (authors: selected batch only)
    dropout: float = 0.0                      # target model dropout after each hidden layer (0-1; MC dropout of bald/entropy selectors)
    mc_samples: int = 10                      # bald / entropy selectors: MC-dropout forward passes per large batch (authors: 10)
    il_halves: str = "balanced"               # no-holdout IL mode: class-balanced halves (authors) | random
    eval_every: int = 1                       # optimizer steps between test-accuracy evaluations
    target_low: float = 0.9                   # lower target: share of uniform's final accuracy (0-1]
    target_high: float = 0.98                 # higher target, share of uniform's final accuracy (the headline)
    test_fraction: float = 0.2                # share of the dataset for test (0-1)
    valid_fraction: float = 0.1               # share of the dataset for IL-model validation (0-1)
    packages: str = "numpy,scipy,sklearn,pandas,torch"   # pydocs: one class per package (comma-separated)
    tokenizer: str = "words"                  # pydocs: words (frequent lower-cased words) | wordpiece (trained)
    text_len: int = 128                       # pydocs: tokens kept per document (the first ones)
    text_vocab: int = 4096                    # pydocs: vocabulary size
    eval_subset: int = 0                      # test examples scored per accuracy evaluation (0: all; a fixed seeded sample)
    corpus: str = ""                          # LM mode: a corpus spec (.jsonl, .txt, pydocs:...); empty: the labelled dataset
    model: str = "gpt2-tiny"                  # LM mode: a preset (gpt2-*: causal, bert-*: masked LM), a saved HF directory or a hub id
    il_model: str = ""                        # LM mode: the IL model, as model (empty: the same as model)
    seq_len: int = 64                         # LM mode: tokens per example (CLM block, MLM document)
    vocab_size: int = 2048                    # LM mode: tokenizer vocabulary (trained on train + holdout)
    lm_batch_size: int = 0                    # LM mode: small batch n_b in sequences (0: batch_size)
    eval_examples: int = 512                  # LM mode: test / valid examples scored per evaluation (0: all)
    token_fraction: float = 0.6               # LM mode, selector token_rho: share of each batch's tokens trained on (Rho-1: 0.6-0.7)

    def __post_init__(self):
        super().__post_init__()
        if self.lm:
            if list(self.selectors) == list(PAPER_SELECTORS):      # the default "all of them": those that apply
                object.__setattr__(self, "selectors", list(LM_SELECTORS))
            bad = [s for s in self.selectors if s in NEEDS_LOGITS]
            check(not bad, f"selector(s) {bad} need class labels; with corpus= (LM mode) choose from "
                           f"{', '.join(LM_SELECTORS)}")
            check(self.seq_len >= 8, f"seq_len must be >= 8, got {self.seq_len}")
            check(self.lm_batch_size >= 0, f"lm_batch_size must be >= 0, got {self.lm_batch_size}")
            check(self.eval_examples >= 0, f"eval_examples must be >= 0, got {self.eval_examples}")
            check(0 < self.token_fraction <= 1, f"token_fraction must be in (0, 1], got {self.token_fraction}")
            check(TOKEN_SELECTOR not in self.selectors or self.il_mode == "holdout",
                  f"selector {TOKEN_SELECTOR} scores tokens against one IL model: it needs il_mode='holdout'")
        else:
            check(TOKEN_SELECTOR not in self.selectors,
                  f"selector {TOKEN_SELECTOR} is a language-model selector: set corpus= (LM mode)")
            check(64 <= self.vocab_size <= 1_000_000, f"vocab_size must be in [64, 1000000], got {self.vocab_size}")
            check(0 < self.test_fraction and 0 < self.valid_fraction and self.test_fraction + self.valid_fraction < 1,
                  f"test_fraction and valid_fraction must be positive and sum to less than 1, got "
                  f"{self.test_fraction} and {self.valid_fraction}")
        check(self.dataset in DATASETS, f"unknown dataset {self.dataset!r}; choose one of {', '.join(DATASETS)}")
        check(0 <= self.noise < 1, f"noise must be in [0, 1), got {self.noise}")
        check(0 < self.fraction <= 1, f"fraction must be in (0, 1], got {self.fraction}")
        check(self.n_seeds >= 1, f"n_seeds must be >= 1, got {self.n_seeds}")
        bad = [s for s in self.selectors if s not in SELECTORS and s != TOKEN_SELECTOR]
        check(not bad, f"unknown selector(s) {bad}; choose from {', '.join(SELECTORS)} (LM mode also {TOKEN_SELECTOR})")
        check(len(set(self.selectors)) == len(self.selectors), f"selectors repeat: {self.selectors}")
        check({"uniform", "rho_loss"} <= set(self.selectors), "selectors must include 'uniform' and 'rho_loss'")
        for k in ("batch_size", "max_steps", "hidden", "il_hidden", "il_steps", "eval_every"):
            check(getattr(self, k) >= 1, f"{k} must be >= 1, got {getattr(self, k)}")
        check(self.lr > 0 and self.weight_decay >= 0, "lr must be positive and weight_decay >= 0")
        check(self.il_mode in ("holdout", "no_holdout"), f"il_mode {self.il_mode!r} is not 'holdout' or 'no_holdout'")
        check(not (self.il_update and self.il_mode == "no_holdout"), "il_update needs il_mode='holdout'")
        check(0 <= self.duplicates < 1, f"duplicates must be in [0, 1), got {self.duplicates}")
        check(not (self.duplicates and self.lm), "duplicates is for the classification tasks, not LM mode")
        check(not (self.duplicates and self.il_mode != "holdout"), "duplicates needs il_mode='holdout'")
        check(self.proxy_hidden >= 0, f"proxy_hidden must be >= 0, got {self.proxy_hidden}")
        check(not (self.proxy_hidden and self.lm), "proxy_hidden is for the classification tasks, not LM mode")
        check(self.temperature > 0, f"temperature must be positive, got {self.temperature}")
        check(0 <= self.dropout < 1 and self.mc_samples >= 1, "dropout must be in [0, 1) and mc_samples >= 1")
        check(self.noise_draw in ("authors", "other"), f"noise_draw {self.noise_draw!r} is not 'authors' or 'other'")
        check(self.selection_mode in ("train", "eval"), f"selection_mode {self.selection_mode!r} is not 'train' or 'eval'")
        check(self.il_halves in ("balanced", "random"), f"il_halves {self.il_halves!r} is not 'balanced' or 'random'")
        check(self.tokenizer in ("words", "wordpiece"), f"tokenizer {self.tokenizer!r} is not 'words' or 'wordpiece'")
        check(self.text_len >= 1 and self.text_vocab >= 64 and self.eval_subset >= 0,
              "text_len must be >= 1, text_vocab >= 64 and eval_subset >= 0")
        check(0 < self.target_low <= self.target_high <= 1,
              f"targets must satisfy 0 < target_low <= target_high <= 1, got {self.target_low}, {self.target_high}")

    @property
    def lm(self) -> bool:
        """LM mode: a corpus is given (sequence-level RHO-LOSS on a language model)."""
        return bool(str(self.corpus).strip())

    @property
    def n_b(self) -> int:
        """The small batch every selector trains on (``lm_batch_size`` in LM mode when set)."""
        return self.lm_batch_size if self.lm and self.lm_batch_size else self.batch_size


Params = RhoLossParams


@dataclass
class LMSplits:
    """LM mode's four splits of the corpus, each the model's task (CLMTask or MLMTask)."""
    corpus: object            # the whole corpus
    tokenizer: object         # trained on train + holdout
    encoder: bool             # True: MLM tasks (an encoder model), False: CLM
    train: object             # the target model's task
    holdout: object           # the IL model's task
    valid: object             # picks the IL model's best checkpoint
    test: object              # the held-out loss every curve reports

    def sizes(self) -> dict[str, dict]:
        parts = (("train", self.train), ("holdout", self.holdout), ("valid", self.valid), ("test", self.test))
        return {k: {"n": len(t), "documents": len(t.corpus)} for k, t in parts}


@dataclass
class Prepared:
    splits: LabelledSplits | LMSplits    # train / holdout / valid / test
    train: LabelledTask       # the task the target model trains on (train, or train + holdout)
    il: IrreducibleLosses     # irreducible losses aligned by id to `train` (and the IL model(s))
    il_info: dict             # IL model fit: best step, best valid loss, valid curve, wall_s
    dup_group: np.ndarray | None = None   # duplicates > 0: True for the rows of `train` that have copies (originals and copies)


@dataclass
class Result:
    prepared: Prepared        # data splits and the irreducible losses
    curves: pd.DataFrame      # selector, seed, step, accuracy (LM mode: loss): every evaluation of every run
    runs: pd.DataFrame        # one row per (selector, seed): noisy_fraction, picked, select_s, train_s, ...
    snapshot: pd.DataFrame    # the irreducible-loss view: every training example under the uniform model
    mean_curves: pd.DataFrame  # selector, step, accuracy: the seed-mean curves
    table: pd.DataFrame       # per selector: steps to both targets, final / peak accuracy, noisy share, ...
    targets: dict             # {"low": accuracy, "high": accuracy}: the two targets (LM: {"uniform final": loss})
    wall_s: float             # seconds the recipe ran
    lm: bool = False          # LM mode: curves hold held-out loss, no label noise

    @property
    def value(self) -> str:
        """The curves' column: ``"loss"`` (LM mode) or ``"accuracy"``."""
        return "loss" if self.lm else "accuracy"


def prepare(P: RhoLossParams) -> Prepared:
    """Load and split the data, train the IL model(s), score the training set."""
    if P.lm:
        return prepare_lm(P)
    sp = load_labelled(P.dataset, P.noise, P.seed, test_fraction=P.test_fraction, valid_fraction=P.valid_fraction,
                       clean_holdout=P.clean_holdout and P.il_mode == "holdout", packages=P.packages,
                       vocab_size=P.text_vocab, seq_len=P.text_len, noise_draw=P.noise_draw, tokenizer=P.tokenizer)
    if P.eval_subset and len(sp.test) > P.eval_subset:          # a fixed seeded sample of the (clean) test split
        keep = np.sort(np.random.default_rng([P.seed, 29]).choice(len(sp.test), P.eval_subset, replace=False))
        sp.test = sp.test.subset(keep, f"{P.dataset}/test[{P.eval_subset}]")
    make = lambda: make_classifier(sp, P.il_hidden, seed=P.seed + 1000)
    fit = dict(steps=P.il_steps, batch_size=P.batch_size, lr=P.lr, weight_decay=P.weight_decay, seed=P.seed,
               eval_every=max(1, P.il_steps // 60))
    t0 = time.perf_counter()
    dup_group = None
    if P.il_mode == "holdout":
        train = sp.train
        if P.duplicates:
            train, dup_group = with_duplicates(train, P.duplicates, P.seed)
            sp.train = train
        il, info = holdout_irreducible(make, train, sp.holdout, sp.valid, **fit)
        info["valid_accuracy"] = sp.valid.accuracy(il.models[0])
    else:
        train = sp.train.concat(sp.holdout, f"{P.dataset}/train+holdout")
        il, info = no_holdout_irreducible(make, train, sp.valid, halves=P.il_halves, **fit)
    info["wall_s"] = time.perf_counter() - t0
    _save_il(P, il, info)
    return Prepared(sp, train, il, info, dup_group)


def with_duplicates(task: LabelledTask, share: float, seed: int) -> tuple[LabelledTask, np.ndarray]:
    """``task`` plus 2-4 exact copies (same inputs, same *clean* labels, ids ``<id>#dup<k>``) of a seeded
    ``share`` of its clean examples: redundancy without noise, so a selector that skips what is already
    learnt can be told from one that skips what cannot be learnt. Returns the task and, per row, whether
    it belongs to a duplicated group (the original or a copy)."""
    rng = np.random.default_rng([seed, 41])
    clean = np.flatnonzero(~task.noisy)
    chosen = np.sort(rng.choice(clean, int(round(share * len(clean))), replace=False))
    reps = rng.integers(2, 5, size=len(chosen))
    rows = np.repeat(chosen, reps)
    k = np.concatenate([np.arange(r) for r in reps]) if len(reps) else np.zeros(0, dtype=np.int64)
    copies = task.subset(rows, f"{task.name}[copies]")
    copies.ids = [f"{task.ids[r]}#dup{j}" for r, j in zip(rows, k)]
    out = task.concat(copies, f"{task.name}+duplicates")
    group = np.zeros(len(out), dtype=bool)
    group[chosen] = True
    group[len(task):] = True
    return out, group


def _save_il(P: RhoLossParams, il: IrreducibleLosses, info: dict) -> None:
    root = Path(P.out_dir) / "runs"
    shutil.rmtree(root / "irreducible", ignore_errors=True)
    run = Run(root / "irreducible", {"recipe": "rho_loss", "part": "irreducible", **asdict(P)})
    il.save(run)
    run.write_summary({"recipe": "rho_loss", "part": "irreducible", **{k: v for k, v in info.items()
                                                                       if k != "valid_curve"}}, complete=True)


# ----------------------------------------------------------------------------------- LM mode
def lm_encoder(P: RhoLossParams) -> bool:
    """True when ``P.model`` is an encoder (MLM); checks that the IL model is of the same kind."""
    enc = is_encoder(P.model)
    if P.il_model and is_encoder(P.il_model) != enc:
        raise ConfigError(f"il_model {P.il_model!r} and model {P.model!r} must both be encoders (MLM) or both "
                          f"decoders (CLM)")
    return enc


def make_lm_model(P: RhoLossParams, splits: LMSplits, seed: int, il: bool = False):
    """``P.model`` (or ``P.il_model`` for ``il=True``): a preset is built fresh, sized to the tokenizer
    and ``seq_len``; a saved or hub model is loaded with its own weights, vocabulary and positions
    (continued pretraining), and ``seq_len`` is checked against its position table."""
    spec = (P.il_model or P.model) if il else P.model
    if check_spec(spec) == "preset":
        return make_lm(spec, vocab_size=len(splits.tokenizer), max_positions=max(P.seq_len, 128), seed=seed)
    m = make_lm(spec, seed=seed)
    check_seq_len(m, P.seq_len, repr(spec))
    return m


def lm_splits(P: RhoLossParams) -> LMSplits:
    """Split ``P.corpus`` by document (seeded): test, valid, then the rest halved into holdout and train."""
    enc = lm_encoder(P)
    c = load_corpus(P.corpus)
    n = len(c)
    perm = np.random.default_rng([P.seed, 17]).permutation(n)
    n_test, n_valid = int(round(P.test_fraction * n)), int(round(P.valid_fraction * n))
    pool = perm[n_test + n_valid:]
    parts = {"test": perm[:n_test], "valid": perm[n_test:n_test + n_valid],
             "holdout": pool[: len(pool) // 2], "train": pool[len(pool) // 2:]}
    empty = [k for k, v in parts.items() if len(v) == 0]
    if empty:
        raise CorpusError(f"corpus {P.corpus!r} has {n} document(s): too few for train / holdout / valid / test "
                          f"(empty: {', '.join(empty)})")
    sub = {k: c.select(np.sort(v).tolist(), f"{c.spec}[{k}]") for k, v in parts.items()}
    if check_spec(P.model) == "preset":
        tok = train_tokenizer(c.select(np.sort(pool).tolist(), f"{c.spec}[train+holdout]"),
                              "wordpiece" if enc else "bpe", P.vocab_size)
    else:                                       # a saved or hub model comes with its own tokenizer
        tok = load_tokenizer(P.model)
    tasks = {k: make_task(v, tok, enc, P.seq_len, P.seed + j) for j, (k, v) in enumerate(sub.items())}
    for k in ("test", "valid"):                 # a fixed seeded sample of eval_examples, in task order
        t = tasks[k]
        if P.eval_examples and len(t) > P.eval_examples:
            keep = np.sort(np.random.default_rng([P.seed, 23]).choice(len(t), P.eval_examples, replace=False))
            tasks[k] = task_subset(t, keep, f"{c.spec}[{k}]")
    return LMSplits(corpus=c, tokenizer=tok, encoder=enc, **tasks)


def prepare_lm(P: RhoLossParams) -> Prepared:
    """LM mode's :func:`prepare`: the splits as tasks, the IL model(s), the training set scored."""
    sp = lm_splits(P)
    make = lambda: make_lm_model(P, sp, P.seed + 1000, il=True)
    fit = dict(steps=P.il_steps, batch_size=P.n_b, lr=P.lr, weight_decay=P.weight_decay, seed=P.seed,
               eval_every=max(1, P.il_steps // 10))
    t0 = time.perf_counter()
    if P.il_mode == "holdout":
        train = sp.train
        il, info = holdout_irreducible(make, train, sp.holdout, sp.valid, **fit)
    else:
        both = sorted(set(sp.train.corpus.ids) | set(sp.holdout.corpus.ids))
        pos = {i: k for k, i in enumerate(sp.corpus.ids)}
        c = sp.corpus.select(sorted(pos[i] for i in both), f"{sp.corpus.spec}[train+holdout]")
        train = make_task(c, sp.tokenizer, sp.encoder, P.seq_len, P.seed)
        il, info = no_holdout_irreducible(make, train, sp.valid, halves=P.il_halves, **fit)
    info["wall_s"] = time.perf_counter() - t0
    info["recomputed_per_batch"] = bool(sp.encoder or P.il_recompute or P.il_update)
    _save_il(P, il, info)
    return Prepared(sp, train, il, info)


class AccuracyCurve:
    """``wb.train`` callback: clean test accuracy every ``every`` steps (and at step 1), logged to the
    run as ``{"step", "test_accuracy"}``; ``eval_s`` is the time it took (excluded from overheads).
    ``snapshot_at`` (optional) also scores ``snapshot_task`` with the model at that step."""

    def __init__(self, test, every: int = 1, run=None, snapshot_at: int | None = None, snapshot_task=None):
        self.test, self.every, self.run = test, every, run
        self.snapshot_at, self.snapshot_task = snapshot_at, snapshot_task
        self.steps: list[int] = []
        self.acc: list[float] = []
        self.eval_s = 0.0
        self.snapshot = None

    key = "test_accuracy"     # the name each measurement is logged under

    def measure(self, model) -> float:
        return self.test.accuracy(model)

    def __call__(self, step, model, **_):
        t0 = time.perf_counter()
        if step % self.every == 0 or step == 1:
            v = self.measure(model)
            self.steps.append(step)
            self.acc.append(v)
            if self.run is not None:
                self.run.log({"step": step, self.key: v})
        if self.snapshot_at is not None and step == self.snapshot_at:
            self.snapshot = score(model, self.snapshot_task)
        self.eval_s += time.perf_counter() - t0


class LossCurve(AccuracyCurve):
    """LM mode's :class:`AccuracyCurve`: the mean held-out loss of ``test`` (every example scored in
    eval mode; MLM under the fixed mask draw of step 0, the same at every evaluation), logged as
    ``{"step", "test_loss"}``; ``acc`` holds the losses."""

    key = "test_loss"

    def measure(self, model) -> float:
        return float(score(model, self.test).mean())


def train_selector(P: RhoLossParams, prep: Prepared, rule: str, seed: int, snapshot_at: int | None = None) -> dict:
    """Train one model with selector ``rule`` and training seed ``seed`` into
    ``OUT/runs/<rule>-seed<seed>``; returns the curve, the selector's stats and the timings."""
    run_dir = Path(P.out_dir) / "runs" / f"{rule}-seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run = Run(run_dir, {"recipe": "rho_loss", "selector": rule, "train_seed": seed, **asdict(P)})
    il = prep.il.copy() if P.il_update else prep.il          # every run starts from the same IL model
    if rule == TOKEN_SELECTOR:
        if prep.splits.encoder:
            raise ConfigError(f"selector {TOKEN_SELECTOR} scores next-token losses: it needs a causal LM, "
                              f"not the masked LM {P.model!r}")
        sel = TokenExcessLoss(il.models[0], fraction=P.token_fraction)
    else:
        proxy = (make_classifier(prep.splits, P.proxy_hidden, seed=seed + 7919, dropout=P.dropout)
                 if P.proxy_hidden and rule != "uniform" else None)
        sel = BatchSelector(rule, P.fraction, il, temperature=P.temperature, recompute=P.il_recompute,
                            update_il=P.il_update, il_lr=P.lr, il_weight_decay=P.weight_decay,
                            il_holdout=prep.splits.holdout if P.il_update and P.il_update_mix else None,
                            train_mode=P.selection_mode == "train", replacement=P.boltzmann_replacement,
                            mc_samples=P.mc_samples, proxy=proxy, proxy_lr=P.lr, proxy_weight_decay=P.weight_decay)
    Curve = LossCurve if P.lm else AccuracyCurve
    curve = Curve(prep.splits.test, P.eval_every, run, snapshot_at, prep.train)
    model = make_lm_model(P, prep.splits, seed) if P.lm else make_classifier(prep.splits, P.hidden, seed=seed, dropout=P.dropout)
    res = train(model, prep.train, batch_filter=sel, budget=Budget(max_steps=P.max_steps),
                schedule=Schedule("constant"), run=run, batch_size=P.n_b, lr=P.lr,
                weight_decay=P.weight_decay, grad_clip=None, seed=seed, progress=False,
                log_every=max(1, P.max_steps // 50), callbacks=(curve,))
    st = sel.stats()
    if rule == TOKEN_SELECTOR:
        sel.flush()
    train_s = max(res.wall_s - curve.eval_s, 1e-9)
    out = {"selector": rule, "seed": seed, "steps": curve.steps, "accuracy": curve.acc,
           "noisy_fraction": st.get("noisy_fraction", 0.0), "picked": st.get("picked", st.get("kept_tokens")),
           "select_s": st["select_s"], "train_s": train_s, "selection_wall_fraction": st["select_s"] / train_s,
           "snapshot": curve.snapshot}
    if rule == TOKEN_SELECTOR:
        out["kept_token_fraction"] = st["kept_fraction"]
    if getattr(prep, "dup_group", None) is not None and rule != TOKEN_SELECTOR:
        rec = sel.records()
        picks = np.bincount(rec["index"].astype(np.int64), weights=rec["picks"], minlength=len(prep.dup_group))
        out["duplicate_picked"] = float(picks[prep.dup_group].sum() / max(picks.sum(), 1))
    final = {"final_test_loss": curve.acc[-1]} if P.lm else \
        {"final_test_accuracy": curve.acc[-1], "noisy_fraction_selected": st["noisy_fraction"]}
    run.write_summary({"recipe": "rho_loss", "selector": rule, "seed": seed, **final, "select_s": st["select_s"],
                       "train_s": train_s}, complete=True)
    return out


def run_all(P: RhoLossParams, prep: Prepared, progress=None) -> tuple:
    """Every selector x every training seed. Returns ``(curves, runs, snapshot)``: a long DataFrame
    ``selector, seed, step, accuracy`` (LM mode: ``loss``); one row per run with its stats; and the
    IL-view DataFrame (training loss of every training example under the uniform model at step
    ``max_steps // 10``)."""
    import pandas as pd
    snap_step = max(1, P.max_steps // 10)
    col = "loss" if P.lm else "accuracy"
    rows, runs, snapshot = [], [], None
    for rule in P.selectors:
        for s in range(P.seed, P.seed + P.n_seeds):
            first = rule == "uniform" and s == P.seed
            r = train_selector(P, prep, rule, s, snapshot_at=snap_step if first else None)
            if first:
                snapshot = il_view_frame(prep, r["snapshot"], snap_step)
            rows += [{"selector": rule, "seed": s, "step": st, col: a} for st, a in zip(r["steps"], r["accuracy"])]
            runs.append({k: v for k, v in r.items() if k not in ("steps", "accuracy", "snapshot")
                         and not (P.lm and k in ("noisy_fraction", "picked"))})
            if progress:
                progress(f"{rule} seed {s}: final held-out loss {r['accuracy'][-1]:.4f}" if P.lm else
                         f"{rule} seed {s}: final acc {r['accuracy'][-1]:.3f}, noisy picked {r['noisy_fraction']:.3f}")
    return pd.DataFrame(rows), pd.DataFrame(runs), snapshot


def il_view_frame(prep: Prepared, train_loss, step: int):
    """The DataFrame the irreducible-loss view draws: one row per training example."""
    import pandas as pd
    il, _ = prep.il.aligned(prep.train)
    t = prep.train
    if not isinstance(t, LabelledTask):        # LM mode: no labels, no noise; the domain stands in for the label
        return pd.DataFrame({"id": t.ids, "label": t.domains, "domain": t.domains, "train_loss": train_loss,
                             "irreducible_loss": il, "step": step})
    return pd.DataFrame({"id": t.ids, "label": t.labels, "clean_label": t.clean_labels, "noisy": t.noisy,
                         "train_loss": train_loss, "irreducible_loss": il, "step": step})


def steps_to(steps, accuracy, target: float, lower: bool = False):
    """First step at which ``accuracy`` reaches ``target`` (None if it never does); ``lower=True``:
    first step at which a loss falls to ``target`` or below."""
    for s, a in zip(steps, accuracy):
        if (a <= target + 1e-12) if lower else (a >= target - 1e-12):
            return int(s)
    return None


def _final(P: RhoLossParams, g, col: str) -> float:
    """Mean of ``col`` over the evaluations in the last 5% of steps (at least the last one)."""
    tail = g[g["step"] > P.max_steps * 0.95] if (g["step"] > P.max_steps * 0.95).any() else g.tail(1)
    return float(tail[col].mean())


def compare_lm(P: RhoLossParams, curves, runs):
    """LM mode's :func:`compare`: per selector the held-out loss at equal steps (``final_loss``:
    mean of the last 5% of steps; ``last_loss``: at ``max_steps``), its best, and the steps to the
    uniform run's final held-out loss. Returns ``(table, mean_curves, targets)``."""
    import pandas as pd
    mean = curves.groupby(["selector", "step"], sort=False)["loss"].mean().reset_index()
    final = {rule: _final(P, g, "loss") for rule, g in mean.groupby("selector", sort=False)}
    targets = {"uniform final": final["uniform"]}
    table = []
    for rule in P.selectors:
        g = mean[mean["selector"] == rule]
        r = runs[runs["selector"] == rule]
        table.append({"selector": rule,
                      "steps_to_target": steps_to(g["step"], g["loss"], targets["uniform final"], lower=True),
                      "final_loss": final[rule], "last_loss": float(g["loss"].iloc[-1]),
                      "best_loss": float(g["loss"].min()),
                      "selection_wall_fraction": float(r["select_s"].sum() / r["train_s"].sum())})
    table = pd.DataFrame(table)
    u = table.set_index("selector")["steps_to_target"]["uniform"]
    table["speedup"] = [(u / v) if (u is not None and u == u and v and v == v) else None
                        for v in table["steps_to_target"]]
    return table, mean, targets


def compare(P: RhoLossParams, curves, runs):
    """Per-selector table: steps to both targets, final and peak accuracy (seed-mean curve), share
    of noisy points picked, selection wall fraction. Returns ``(table, mean_curves, targets)``."""
    import pandas as pd
    if P.lm:
        return compare_lm(P, curves, runs)
    mean = curves.groupby(["selector", "step"], sort=False)["accuracy"].mean().reset_index()
    final = {}
    for rule, g in mean.groupby("selector", sort=False):
        tail = g[g["step"] > P.max_steps * 0.95] if (g["step"] > P.max_steps * 0.95).any() else g.tail(1)
        final[rule] = float(tail["accuracy"].mean())
    targets = {"low": P.target_low * final["uniform"], "high": P.target_high * final["uniform"]}
    table = []
    for rule in P.selectors:
        g = mean[mean["selector"] == rule]
        r = runs[runs["selector"] == rule]
        table.append({"selector": rule,
                      "steps_to_low": steps_to(g["step"], g["accuracy"], targets["low"]),
                      "steps_to_high": steps_to(g["step"], g["accuracy"], targets["high"]),
                      "final_accuracy": final[rule], "peak_accuracy": float(g["accuracy"].max()),
                      "noisy_fraction": float(r["noisy_fraction"].mean()),
                      "selection_wall_fraction": float(r["select_s"].sum() / r["train_s"].sum())})
    table = pd.DataFrame(table)
    u = table.set_index("selector")["steps_to_high"]["uniform"]
    table["speedup_high"] = [(u / v) if (u is not None and v) else None for v in table["steps_to_high"]]
    return table, mean, targets


def run(P: RhoLossParams, progress=False) -> Result:
    """Everything the notebook shows: split the data and fit the IL model (:func:`prepare`), train
    every selector with every seed (:func:`run_all`), and compare them (:func:`compare`), under
    ``P.out_dir/runs/`` (replacing older runs there). ``progress``: True prints a line per run, a
    callable gets it."""
    t0 = time.perf_counter()
    say = print if progress is True else (progress or None)
    prep = prepare(P)
    curves, runs, snapshot = run_all(P, prep, progress=say)
    table, mean, targets = compare(P, curves, runs)
    return Result(prepared=prep, curves=curves, runs=runs, snapshot=snapshot, mean_curves=mean, table=table,
                  targets=targets, wall_s=time.perf_counter() - t0, lm=P.lm)


def _column(t, c: str) -> dict:
    """Column ``c`` of the comparison table per selector, NaN and infinities as None (JSON null)."""
    return {k: None if v is None or (isinstance(v, float) and not np.isfinite(v)) else v for k, v in t[c].items()}


def _steps(t, c: str) -> dict:
    """A steps column per selector as ints, None where the target was never reached."""
    return {k: (None if v is None or v != v else int(v)) for k, v in t[c].items()}


def _large_batch(P: RhoLossParams) -> int:
    """n_B: the large batch the selectors score each step."""
    return BatchSelector("train_loss", P.fraction).large_batch_size(P.n_b)


def summary(P: RhoLossParams, result: Result) -> Summary:
    """Steps to the higher target, RHO-LOSS against uniform, and the numbers the card quotes."""
    if P.lm:
        return summary_lm(P, result)
    t = result.table.set_index("selector")
    prep, targets = result.prepared, result.targets
    col = lambda c: _column(t, c)   # noqa: E731
    steps = _steps(t, "steps_to_high")
    return Summary(
        paper="rho_loss", scale=P.scale, claim=CLAIM, metric="steps_to_target", paper_result=PAPER_RESULT,
        baseline=Arm("uniform", steps["uniform"]), method=Arm("rho_loss", steps["rho_loss"]),
        extra={"dataset": P.dataset, "noise_rate": P.noise, "noise_draw": P.noise_draw,
               "hidden": P.hidden, "proxy_hidden": P.proxy_hidden, "duplicates": P.duplicates,
               **({"duplicate_share_of_train": float(prep.dup_group.mean()),
                   "duplicate_picked": {r: float(result.runs.loc[result.runs["selector"] == r, "duplicate_picked"].mean())
                                        for r in P.selectors}} if prep.dup_group is not None else {}),
               "noisy_share_of_train": float(prep.train.noisy.mean()),
               "n_train": len(prep.train), "large_batch": _large_batch(P),
               "seeds": list(range(P.seed, P.seed + P.n_seeds)),
               "max_steps": P.max_steps, "batch_size": P.batch_size, "ratio": P.fraction,
               "target_accuracy": targets["high"], "target_accuracy_low": targets["low"],
               "steps_to_target": steps,
               "steps_to_target_low": _steps(t, "steps_to_low"),
               "speedup": col("speedup_high"), "final_accuracy": col("final_accuracy"),
               "peak_accuracy": col("peak_accuracy"), "noisy_fraction_selected": col("noisy_fraction"),
               "selection_wall_fraction": col("selection_wall_fraction"),
               "splits": prep.splits.sizes(), "il_mode": P.il_mode,
               "il_model": {k: v for k, v in prep.il_info.items() if k not in ("valid_curve", "halves")}},
        wall_s=result.wall_s)


def summary_lm(P: RhoLossParams, result: Result) -> Summary:
    """LM mode: steps to the uniform run's final held-out loss (the metric), held-out loss at equal steps."""
    t = result.table.set_index("selector")
    prep = result.prepared
    col = lambda c: _column(t, c)   # noqa: E731
    steps = _steps(t, "steps_to_target")
    return Summary(
        paper="rho_loss", scale=P.scale, claim=CLAIM_LM, metric="steps_to_uniform_final_loss",
        paper_result=PAPER_RESULT,
        baseline=Arm("uniform", steps["uniform"]), method=Arm("rho_loss", steps["rho_loss"]),
        extra={"mode": "mlm" if prep.splits.encoder else "clm", "corpus": P.corpus, "model": P.model,
               "il_model": P.il_model or P.model, "seq_len": P.seq_len, "vocab_size": len(prep.splits.tokenizer),
               "seeds": list(range(P.seed, P.seed + P.n_seeds)), "max_steps": P.max_steps,
               "batch_size": P.n_b, "ratio": P.fraction, "n_train": len(prep.train), "large_batch": _large_batch(P),
               "target_loss": result.targets["uniform final"], "steps_to_target": steps,
               "speedup": col("speedup"), "heldout_loss_final": col("final_loss"),
               "heldout_loss_at_max_steps": col("last_loss"), "heldout_loss_best": col("best_loss"),
               "selection_wall_fraction": col("selection_wall_fraction"),
               **({"token_fraction": P.token_fraction,
                   "kept_token_fraction": float(result.runs.loc[result.runs["selector"] == TOKEN_SELECTOR,
                                                                "kept_token_fraction"].mean())}
                  if TOKEN_SELECTOR in P.selectors else {}),
               "splits": prep.splits.sizes(), "il_mode": P.il_mode,
               "il_model_fit": {k: v for k, v in prep.il_info.items() if k not in ("valid_curve", "halves")}},
        wall_s=result.wall_s)


def write_summary(P: RhoLossParams, result: Result) -> Summary:
    """Write ``P.out_dir/summary.json``; returns the summary."""
    s = summary(P, result)
    s.write(P.out_dir)
    return s
