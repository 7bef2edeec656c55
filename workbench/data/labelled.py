"""Small labelled classification tasks with injected label noise (RHO-LOSS and other selection papers).

``load_labelled("digits", noise=0.1, seed=0)`` returns :class:`LabelledSplits`: four
:class:`LabelledTask` splits that follow the task contract of :mod:`workbench.data.batching`, so
``wb.train`` trains them like any language-model task:

``train``    what the target model learns from (large batches are drawn from it)
``holdout``  what the irreducible-loss (IL) model learns from; RHO-LOSS halves the training set
``valid``    clean labels; picks the IL model's best checkpoint
``test``     clean labels; the accuracy every curve reports

Datasets
--------
``digits`` (1,797 8x8 images, 10 classes; the default), ``wine`` (178, 3), ``breast_cancer``
(569, 2), ``iris`` (150, 3): scikit-learn's bundled copies, features standardised with the mean and
deviation of train + holdout (never of valid/test). ``pydocs``: which package a docstring of the
embedded corpus comes from (one class per package; the RHO-LOSS paper's regime: tens of thousands of
documents, many templated near-duplicates), as token ids of the first ``seq_len`` tokens. Tokens:
``tokenizer="words"`` (default) lower-cased words, digit runs and punctuation marks, the
``vocab_size - 2`` most frequent of the train + holdout texts (about 3 s for 36k documents);
``tokenizer="wordpiece"`` a WordPiece tokenizer trained on the train + holdout texts (about 40 s).

Noise
-----
``noise`` is the share of train + holdout labels corrupted (per split). ``noise_draw="authors"`` (the
default, the RHO-LOSS code's draw) gives each corrupted row a class drawn from all classes, which may be
the original one (so about ``(C-1)/C`` of them end up wrong); ``noise_draw="other"`` always draws a
different class (exactly ``round(noise * n)`` wrong labels). ``task.noisy`` flags the wrong labels and every batch carries
them as ``noisy`` [B] bool so a run can count how many noisy points a selector picked. The holdout
split gets the same noise by default, as it would when it is cut from a noisy training set;
``clean_holdout=True`` gives the IL model clean labels, the protocol of the RHO-LOSS paper's label-noise
experiments and the default of its recipe (:mod:`workbench.recipes.rho_loss`). Valid and test
labels stay clean.

A batch is ``{"x": [B, D] float32 | "input_ids": [B, L] + "attention_mask": [B, L], "labels": [B],
"index": [B], "noisy": [B] bool}``; the model is called as ``model(x)`` or
``model(input_ids, attention_mask)`` and returns logits [B, C].
"""
from __future__ import annotations

import collections
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from .corpus import corpus as load_corpus
from .tokenizer import train_tokenizer

SKLEARN_DATASETS = ("digits", "wine", "breast_cancer", "iris")
DATASETS = SKLEARN_DATASETS + ("pydocs",)
TOKENIZERS = ("words", "wordpiece")
_WORD = re.compile(r"[a-z_]+|\d+|[^\sa-z_\d]")


def word_ids(texts: list[str], fit_rows, vocab_size: int, seq_len: int):
    """Word-level token ids of the first ``seq_len`` tokens of every text (lower-cased words, digit
    runs, single punctuation marks); the vocabulary is the ``vocab_size - 2`` most frequent tokens of
    ``texts[fit_rows]`` (ties by first appearance), id 0 padding and id 1 any other token.
    Returns ``(ids per text, pad_id, vocabulary size)``."""
    if vocab_size < 3:
        raise ConfigError(f"vocab_size must be >= 3, got {vocab_size}")
    toks = [_WORD.findall(t[: 24 * seq_len].lower())[:seq_len] for t in texts]
    counts = collections.Counter(w for r in fit_rows for w in toks[r])
    vocab = {w: k + 2 for k, (w, _) in enumerate(counts.most_common(vocab_size - 2))}
    return [[vocab.get(w, 1) for w in d] for d in toks], 0, len(vocab) + 2


NOISE_DRAWS = ("authors", "other")


def inject_noise(labels: np.ndarray, n_classes: int, fraction: float, rng: np.random.Generator,
                 draw: str = "authors"):
    """Corrupt the labels of ``fraction`` of the rows; returns ``(noisy_labels, flipped)``, ``flipped``
    [N] bool marking the rows whose label actually changed.

    ``draw="authors"`` (the RHO-LOSS code's ``_corrupt_dataset``): ``int(fraction * N)`` rows drawn
    without replacement get a class drawn uniformly from *all* ``C`` classes, which may be the
    original one, so the share of labels actually wrong is about ``(C - 1) / C`` of ``fraction``.
    ``draw="other"``: exactly ``round(fraction * N)`` rows get a uniformly drawn *different* class
    (an offset in ``1..C-1`` modulo ``C``), so ``fraction`` is the share of wrong labels.
    """
    if not 0 <= fraction < 1:
        raise ConfigError(f"noise must be in [0, 1), got {fraction}")
    if draw not in NOISE_DRAWS:
        raise ConfigError(f"unknown noise draw {draw!r}; choose one of {', '.join(NOISE_DRAWS)}")
    labels = np.asarray(labels, dtype=np.int64)
    k = int(fraction * len(labels)) if draw == "authors" else int(round(fraction * len(labels)))
    if k and n_classes < 2:
        raise ConfigError("label noise needs at least two classes")
    rows = rng.choice(len(labels), size=k, replace=False)
    out = labels.copy()
    if draw == "authors":
        out[rows] = rng.integers(0, n_classes, size=k)
    else:
        out[rows] = (labels[rows] + rng.integers(1, n_classes, size=k)) % n_classes
    return out, out != labels


class LabelledTask:
    """One split of a classification dataset, with the task contract of ``wb.train``.

    ``inputs`` is a float array [N, D] (features) or an int array [N, L] of token ids padded with
    ``pad_id`` (then ``lengths`` [N] gives the real lengths). ``labels`` are what training sees
    (noisy), ``clean_labels`` the truth; ``ids`` stable per-example ids that survive re-ordering.
    """

    kind = "classification"

    def __init__(self, inputs: np.ndarray, labels, clean_labels, ids, class_names, lengths=None, pad_id: int = 0,
                 name: str = "task"):
        self.inputs = inputs
        self.labels = np.asarray(labels, dtype=np.int64)
        self.clean_labels = np.asarray(clean_labels, dtype=np.int64)
        self.noisy = self.labels != self.clean_labels
        self.ids = list(ids)
        self.class_names = list(class_names)
        self.lengths = None if lengths is None else np.asarray(lengths, dtype=np.int64)
        self.pad_id, self.name = pad_id, name
        self.text = lengths is not None
        if not (len(inputs) == len(self.labels) == len(self.clean_labels) == len(self.ids)):
            raise ConfigError(f"task {name!r}: inputs, labels and ids differ in length")

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (f"LabelledTask({self.name!r}, n={len(self)}, classes={len(self.class_names)}, "
                f"noisy={int(self.noisy.sum())})")

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def domains(self) -> list[str]:
        """The observed (possibly noisy) class name of each example: the 'domain' samplers record."""
        return [str(self.class_names[c]) for c in self.labels]

    def subset(self, rows, name: str | None = None) -> "LabelledTask":
        """The examples ``rows`` (in that order) as a new task; ids, labels and noise flags follow."""
        rows = np.asarray(rows, dtype=np.int64)
        return LabelledTask(self.inputs[rows], self.labels[rows], self.clean_labels[rows], [self.ids[r] for r in rows],
                            self.class_names, None if self.lengths is None else self.lengths[rows], self.pad_id,
                            name or f"{self.name}[subset]")

    def concat(self, other: "LabelledTask", name: str | None = None) -> "LabelledTask":
        if self.text != other.text or self.class_names != other.class_names:
            raise ConfigError(f"cannot concatenate tasks {self.name!r} and {other.name!r} of different kinds")
        if self.text:
            L = max(self.inputs.shape[1], other.inputs.shape[1])
            pad = lambda a: np.pad(a, ((0, 0), (0, L - a.shape[1])), constant_values=self.pad_id)
            inputs = np.concatenate([pad(self.inputs), pad(other.inputs)])
            lengths = np.concatenate([self.lengths, other.lengths])
        else:
            inputs, lengths = np.concatenate([self.inputs, other.inputs]), None
        return LabelledTask(inputs, np.concatenate([self.labels, other.labels]),
                            np.concatenate([self.clean_labels, other.clean_labels]), self.ids + other.ids,
                            self.class_names, lengths, self.pad_id, name or f"{self.name}+{other.name}")

    # ------------------------------------------------------------------ task contract
    def collate(self, indices, step: int = 0) -> dict[str, torch.Tensor]:
        """The batch of ``indices`` (deterministic; ``step`` is unused: no random augmentation)."""
        idx = np.asarray(indices, dtype=np.int64)
        out = {"labels": torch.from_numpy(self.labels[idx]), "index": torch.from_numpy(idx),
               "noisy": torch.from_numpy(self.noisy[idx])}
        if self.text:
            L = max(int(self.lengths[idx].max()), 1)
            out["input_ids"] = torch.from_numpy(self.inputs[idx, :L].astype(np.int64))          # [B, L]
            out["attention_mask"] = (torch.arange(L)[None, :] < torch.from_numpy(self.lengths[idx])[:, None]).long()
        else:
            out["x"] = torch.from_numpy(self.inputs[idx])                                       # [B, D]
        return out

    def logits(self, model, batch) -> torch.Tensor:
        """[B, C] class scores."""
        if "x" in batch:
            return model(batch["x"])
        return model(batch["input_ids"], batch["attention_mask"])

    def per_example_loss(self, model, batch) -> torch.Tensor:
        """[B] cross-entropy against the batch's (possibly noisy) labels."""
        return F.cross_entropy(self.logits(model, batch).float(), batch["labels"], reduction="none")

    def loss(self, model, batch) -> torch.Tensor:
        """Mean cross-entropy; ``batch["weight"]`` [B] multiplies each term (the mean stays over B, so
        importance weights 1/(n p) keep the loss an unbiased estimate of the large batch's mean)."""
        ce = self.per_example_loss(model, batch)
        if "weight" in batch:
            ce = ce * batch["weight"].to(ce.dtype)
        return ce.mean()

    def tokens(self, batch) -> int:
        """One 'token' per example, so ``tokens`` counts examples seen."""
        return int(batch["index"].shape[0])

    @torch.no_grad()
    def predict(self, model, batch_size: int = 1024) -> np.ndarray:
        """Predicted class of every example, in order (eval mode, restored afterwards)."""
        was = model.training
        model.eval()
        dev = next(model.parameters()).device
        out = []
        for s in range(0, len(self), batch_size):
            b = self.collate(range(s, min(s + batch_size, len(self))))
            b = {k: v.to(dev) for k, v in b.items()}
            out.append(self.logits(model, b).argmax(-1).cpu().numpy())
        model.train(was)
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def accuracy(self, model, batch_size: int = 1024) -> float:
        """Accuracy against the *clean* labels."""
        return float((self.predict(model, batch_size) == self.clean_labels).mean())


@dataclass
class LabelledSplits:
    dataset: str
    train: LabelledTask
    holdout: LabelledTask
    valid: LabelledTask
    test: LabelledTask
    noise: float
    seed: int
    vocab_size: int | None = None       # text tasks: the tokenizer's vocabulary

    @property
    def n_classes(self) -> int:
        return self.train.n_classes

    @property
    def in_dim(self) -> int | None:
        return None if self.train.text else int(self.train.inputs.shape[1])

    def sizes(self) -> dict[str, dict]:
        parts = (("train", self.train), ("holdout", self.holdout), ("valid", self.valid), ("test", self.test))
        return {k: {"n": len(t), "noisy": int(t.noisy.sum())} for k, t in parts}


def _stratified_split(y: np.ndarray, fractions, rng) -> list[np.ndarray]:
    """Split row numbers into ``len(fractions) + 1`` parts, class by class (the last part takes the rest)."""
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for c in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == c))
        cuts = np.round(np.cumsum(fractions) * len(rows)).astype(int)
        for k, chunk in enumerate(np.split(rows, cuts)):
            parts[k].extend(chunk.tolist())
    return [rng.permutation(np.asarray(p, dtype=np.int64)) for p in parts]


def load_labelled(dataset: str = "digits", noise: float = 0.1, seed: int = 0, test_fraction: float = 0.2,
                  valid_fraction: float = 0.1, holdout_fraction: float = 0.5, clean_holdout: bool = False,
                  packages: str = "numpy,scipy,sklearn,pandas,torch", vocab_size: int = 4096,
                  seq_len: int = 128, noise_draw: str = "authors", tokenizer: str = "words") -> LabelledSplits:
    """Split ``dataset`` into train / holdout / valid / test (stratified, seeded) and inject noise.

    ``test_fraction`` and ``valid_fraction`` are shares of the whole dataset; ``holdout_fraction`` is
    the share of the rest that goes to the holdout split (0.5: the paper halves the training set).
    ``seed`` fixes the split and the noise; ``noise_draw`` is ``"authors"`` or ``"other"`` (module doc).
    ``packages``, ``vocab_size``, ``seq_len`` and ``tokenizer`` (``"words"`` | ``"wordpiece"``) only
    apply to ``pydocs`` (building an uncached pydocs corpus takes minutes; it is cached afterwards).
    """
    if noise_draw not in NOISE_DRAWS:
        raise ConfigError(f"unknown noise_draw {noise_draw!r}; choose one of {', '.join(NOISE_DRAWS)}")
    if tokenizer not in TOKENIZERS:
        raise ConfigError(f"unknown tokenizer {tokenizer!r}; choose one of {', '.join(TOKENIZERS)}")
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if not 0 <= noise < 1:
        raise ConfigError(f"noise must be in [0, 1), got {noise}")
    for name, v in (("test_fraction", test_fraction), ("valid_fraction", valid_fraction)):
        if not 0 < v < 1:
            raise ConfigError(f"{name} must be in (0, 1), got {v}")
    if test_fraction + valid_fraction >= 0.9:
        raise ConfigError(f"test_fraction + valid_fraction must stay below 0.9, got {test_fraction + valid_fraction}")
    if not 0 < holdout_fraction < 1:
        raise ConfigError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    rng = np.random.default_rng([seed, 5])
    vocab = None
    if dataset == "pydocs":
        c = load_corpus("pydocs:" + packages)
        class_names = sorted(set(c.domains))
        if len(class_names) < 2:
            raise ConfigError(f"pydocs classification needs at least two packages, got {packages!r}")
        code = {d: k for k, d in enumerate(class_names)}
        y = np.array([code[d] for d in list(c.domains)], dtype=np.int64)
        ids = list(c.ids)
    else:
        from sklearn import datasets as skd
        bunch = getattr(skd, f"load_{dataset}")()
        X, y = bunch.data.astype(np.float64), bunch.target.astype(np.int64)
        class_names = [str(n) for n in bunch.target_names]
        ids = [f"{dataset}:{k}" for k in range(len(y))]
    pool_share = 1 - test_fraction - valid_fraction
    test, valid, train, holdout = _stratified_split(
        y, [test_fraction, valid_fraction, pool_share * (1 - holdout_fraction)], rng)
    pool = np.concatenate([train, holdout])
    if dataset == "pydocs" and tokenizer == "words":
        enc, pad_id, vocab = word_ids(list(c.texts), pool, vocab_size, seq_len)
    elif dataset == "pydocs":
        tok = train_tokenizer(c.select(sorted(pool.tolist()), f"{c.spec}[rho-pool-{seed}]"), "wordpiece", vocab_size)
        enc = tok(list(c.texts), add_special_tokens=False, truncation=True, max_length=seq_len,
                  return_attention_mask=False)["input_ids"]
        pad_id, vocab = tok.pad_token_id, len(tok)
    if dataset == "pydocs":
        lengths = np.array([max(len(e), 1) for e in enc], dtype=np.int64)
        inputs = np.full((len(enc), max(lengths.max(), 1)), pad_id, dtype=np.int32)
        for k, e in enumerate(enc):
            inputs[k, : len(e)] = e
    else:
        mu, sd = X[pool].mean(0), X[pool].std(0)
        inputs = ((X - mu) / np.where(sd > 0, sd, 1.0)).astype(np.float32)
        lengths, pad_id = None, 0
    C = len(class_names)

    def make(rows, name, noisy: bool):
        labels = inject_noise(y[rows], C, noise, rng, noise_draw)[0] if noisy and noise > 0 else y[rows]
        return LabelledTask(inputs[rows], labels, y[rows], [ids[r] for r in rows], class_names,
                            None if lengths is None else lengths[rows], pad_id, f"{dataset}/{name}")

    return LabelledSplits(dataset, make(train, "train", True), make(holdout, "holdout", not clean_holdout),
                          make(valid, "valid", False), make(test, "test", False), noise, seed, vocab)


# --------------------------------------------------------------------------------------- models

class MLP(nn.Module):
    """``depth`` hidden layers of ``hidden`` ReLU units: x [B, D] -> logits [B, C]."""

    def __init__(self, in_dim: int, n_classes: int, hidden: int = 256, depth: int = 2, dropout: float = 0.0):
        super().__init__()
        layers, d = [], in_dim
        for _ in range(depth):
            layers += [nn.Linear(d, hidden), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout > 0 else [])
            d = hidden
        layers.append(nn.Linear(d, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class TextClassifier(nn.Module):
    """Mean of token embeddings over the real tokens, then one hidden ReLU layer:
    input_ids [B, L], attention_mask [B, L] -> logits [B, C]."""

    def __init__(self, vocab_size: int, n_classes: int, dim: int = 64, hidden: int = 128, dropout: float = 0.0):
        super().__init__()
        self.emb = nn.Embedding(vocab_size, dim)
        drop = [nn.Dropout(dropout)] if dropout > 0 else []
        self.head = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), *drop, nn.Linear(hidden, n_classes))

    def forward(self, input_ids, attention_mask):
        m = attention_mask.unsqueeze(-1).to(self.emb.weight.dtype)            # [B, L, 1]
        h = (self.emb(input_ids) * m).sum(1) / m.sum(1).clamp_min(1)          # [B, dim]
        return self.head(h)


def make_classifier(splits: LabelledSplits, hidden: int = 256, seed: int = 0, dropout: float = 0.0) -> nn.Module:
    """A freshly initialised model for ``splits``: an MLP on features, a bag-of-embeddings classifier
    on text (``hidden`` is the MLP width, or the text model's hidden layer with embeddings of
    ``hidden // 2``); ``dropout`` > 0 adds dropout after each hidden layer (the active-learning
    selectors' MC dropout needs it; 0 builds the same modules as before)."""
    if hidden < 1:
        raise ConfigError(f"hidden must be positive, got {hidden}")
    if not 0 <= dropout < 1:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
    torch.manual_seed(seed)
    if splits.train.text:
        return TextClassifier(splits.vocab_size, splits.n_classes, dim=max(hidden // 2, 8), hidden=hidden,
                              dropout=dropout)
    return MLP(splits.in_dim, splits.n_classes, hidden, dropout=dropout)
