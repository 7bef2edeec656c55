"""Downstream check: fine-tune a pretrained model to classify documents, report test accuracy.

The papers judge a pretraining budget by GLUE after fine-tuning. GLUE needs the network; the offline
stand-in here is **domain classification of held-out pydocs documents**: which package a docstring
comes from (e.g. pandas vs. scipy vs. datasets). It is real text with a natural label, and a better
encoder separates the packages' vocabularies and styles from fewer labelled examples. Documents that
the model was pretrained on are excluded (``exclude_ids``), so the check only sees text the encoder
never read.

``finetune_classifier(model, task)`` is generic: any HF model with a ``base_model`` (BERT, pre-LN
RoBERTa, GPT-2, GPT-NeoX) gets a linear head on pooled hidden states of a *copy* of its body (the
pretrained model is left untouched), is fine-tuned with AdamW (warmup then linear decay) and returns
the test accuracy. :func:`glue_task` builds the same kind of task from GLUE for users who are
online; nothing else here depends on it.
"""
from __future__ import annotations

import copy
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..errors import ConfigError
from ..data.corpus import Corpus, corpus as load_corpus
from .loop import resolve_device


@dataclass
class ClassificationTask:
    """Tokenized labelled texts with a train / test split (indices into the arrays)."""
    name: str
    input_ids: np.ndarray          # [N, seq_len] int32, padded with pad_id
    lengths: np.ndarray            # [N] tokens per text
    labels: np.ndarray             # [N] int64 class ids
    label_names: list[str]
    train_idx: np.ndarray
    test_idx: np.ndarray
    pad_id: int = 0
    meta: dict = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def batch(self, idx) -> dict[str, torch.Tensor]:
        """Rows ``idx``, padding columns trimmed: ``input_ids`` / ``attention_mask`` [B, L], ``labels`` [B]."""
        idx = np.asarray(idx, dtype=np.int64)
        L = max(int(self.lengths[idx].max()), 1)
        ids = torch.from_numpy(self.input_ids[idx, :L].astype(np.int64))
        attn = (torch.arange(L)[None, :] < torch.from_numpy(self.lengths[idx].astype(np.int64))[:, None]).long()
        return {"input_ids": ids, "attention_mask": attn, "labels": torch.from_numpy(self.labels[idx])}

    def describe(self) -> dict:
        tr = Counter(self.labels[self.train_idx].tolist())
        te = Counter(self.labels[self.test_idx].tolist())
        return {"task": self.name, "classes": self.label_names, "train": len(self.train_idx),
                "test": len(self.test_idx),
                "train_per_class": {self.label_names[k]: v for k, v in sorted(tr.items())},
                "test_per_class": {self.label_names[k]: v for k, v in sorted(te.items())},
                "majority_acc": max(te.values()) / max(len(self.test_idx), 1)}


def _encode(tokenizer, texts: Sequence[str], seq_len: int, pairs: Sequence[str] | None = None):
    enc = tokenizer(list(texts), list(pairs) if pairs is not None else None, truncation=True, max_length=seq_len,
                    return_attention_mask=False)["input_ids"]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = np.full((len(enc), seq_len), pad, dtype=np.int32)
    lengths = np.zeros(len(enc), dtype=np.int32)
    for k, e in enumerate(enc):
        ids[k, : len(e)] = e
        lengths[k] = len(e)
    return ids, lengths, pad


def domain_task(corpus, tokenizer, seq_len: int = 128, exclude_ids: Sequence[str] = (), test_fraction: float = 0.3,
                max_per_class: int | None = None, min_per_class: int = 10, seed: int = 0) -> ClassificationTask:
    """Classify the domain (the package, for pydocs) of each document of ``corpus``.

    ``exclude_ids``: documents to leave out (the pretraining documents: the check must see unseen
    text). Classes with fewer than ``min_per_class`` documents are dropped; ``max_per_class`` caps
    (and so balances) the rest, chosen at random under ``seed``. The split is stratified.
    """
    c = corpus if isinstance(corpus, Corpus) else load_corpus(corpus)
    if not 0 < test_fraction < 1:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}")
    skip = set(exclude_ids)
    by_dom: dict[str, list[int]] = {}
    for k, (i, d) in enumerate(zip(c.ids, c.domains)):
        if i not in skip:
            by_dom.setdefault(d, []).append(k)
    rng = np.random.default_rng([seed, 4242])
    names = sorted(d for d, v in by_dom.items() if len(v) >= min_per_class)
    if len(names) < 2:
        raise ConfigError(f"domain classification needs >= 2 domains with >= {min_per_class} unseen documents; "
                          f"{c.spec!r} has {dict((d, len(v)) for d, v in by_dom.items())}")
    rows, labels, train, test = [], [], [], []
    for lab, d in enumerate(names):
        docs = np.asarray(by_dom[d])
        docs = docs[rng.permutation(len(docs))]
        if max_per_class:
            docs = docs[:max_per_class]
        n_test = max(1, int(round(test_fraction * len(docs))))
        for j, k in enumerate(docs):
            (test if j < n_test else train).append(len(rows))
            rows.append(int(k))
            labels.append(lab)
    all_texts = c.texts
    texts = [all_texts[k] for k in rows]
    ids, lengths, pad = _encode(tokenizer, texts, seq_len)
    return ClassificationTask(name=f"domain({c.spec})", input_ids=ids, lengths=lengths,
                              labels=np.asarray(labels, dtype=np.int64), label_names=names,
                              train_idx=np.asarray(train, dtype=np.int64), test_idx=np.asarray(test, dtype=np.int64),
                              pad_id=pad, meta={"doc_ids": [c.ids[k] for k in rows]})


#: GLUE classification tasks: text fields, the split to test on
GLUE = {"cola": ("sentence", None, "validation"), "sst2": ("sentence", None, "validation"),
        "mrpc": ("sentence1", "sentence2", "validation"), "qqp": ("question1", "question2", "validation"),
        "mnli": ("premise", "hypothesis", "validation_matched"), "qnli": ("question", "sentence", "validation"),
        "rte": ("sentence1", "sentence2", "validation"), "wnli": ("sentence1", "sentence2", "validation")}


def glue_task(name: str, tokenizer, seq_len: int = 128, max_train: int | None = None) -> ClassificationTask:
    """A GLUE classification task through ``datasets.load_dataset("glue", name)`` (needs the network
    or a local HF cache; the workbench never calls it itself). Scored by accuracy on the validation
    split, as the papers' dev-set tables (STS-B, a regression, is not covered)."""
    if name not in GLUE:
        raise ConfigError(f"GLUE task {name!r} is not one of {sorted(GLUE)}")
    import datasets
    a, b, test_split = GLUE[name]
    ds = datasets.load_dataset("glue", name)
    tr, te = ds["train"], ds[test_split]
    if max_train:
        tr = tr.select(range(min(max_train, len(tr))))
    texts = list(tr[a]) + list(te[a])
    pairs = (list(tr[b]) + list(te[b])) if b else None
    ids, lengths, pad = _encode(tokenizer, texts, seq_len, pairs)
    labels = np.asarray(list(tr["label"]) + list(te["label"]), dtype=np.int64)
    names = tr.features["label"].names
    n = len(tr)
    return ClassificationTask(name=f"glue/{name}", input_ids=ids, lengths=lengths, labels=labels, label_names=names,
                              train_idx=np.arange(n), test_idx=np.arange(n, len(labels)), pad_id=pad)


class SequenceClassifier(torch.nn.Module):
    """A pretrained body + pooling + dropout + a linear head over the classes."""

    def __init__(self, body, hidden: int, num_labels: int, pooling: str = "mean", dropout: float = 0.1):
        super().__init__()
        if pooling not in ("mean", "first", "last"):
            raise ConfigError(f"pooling {pooling!r} is not one of mean, first, last")
        self.body, self.pooling = body, pooling
        self.drop = torch.nn.Dropout(dropout)
        self.head = torch.nn.Linear(hidden, num_labels)

    def forward(self, input_ids, attention_mask):
        h = self.body(input_ids=input_ids, attention_mask=attention_mask)[0]          # [B, L, H]
        m = attention_mask.unsqueeze(-1).to(h.dtype)                                  # [B, L, 1]
        if self.pooling == "mean":
            pooled = (h * m).sum(1) / m.sum(1).clamp_min(1)
        elif self.pooling == "first":
            pooled = h[:, 0]
        else:                                                                         # last real token
            pooled = h[torch.arange(h.size(0), device=h.device), attention_mask.sum(1).clamp_min(1) - 1]
        return self.head(self.drop(pooled))                                           # [B, C]


def _body(model):
    body = getattr(model, "base_model", None)
    if body is None or not hasattr(body, "config"):
        raise ConfigError(f"{type(model).__name__} has no HF base_model to fine-tune")
    return body


@torch.no_grad()
def encoder_features(model, task: ClassificationTask, batch_size: int = 128) -> np.ndarray:
    """Mean over non-padding tokens of the last hidden layer of ``model``'s body (``base_model``: the
    LM head is not needed for hidden states), for every example of ``task``: [N, hidden] float32."""
    body = _body(model)
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    out = []
    for s in range(0, len(task.input_ids), batch_size):
        b = task.batch(np.arange(s, min(s + batch_size, len(task.input_ids))))
        ids, attn = b["input_ids"].to(dev), b["attention_mask"].to(dev)
        h = body(input_ids=ids, attention_mask=attn, output_hidden_states=True).hidden_states[-1]
        m = attn.unsqueeze(-1).to(h.dtype)
        out.append(((h * m).sum(1) / m.sum(1).clamp_min(1)).float().cpu())
    model.train(was)
    return torch.cat(out).numpy()


def linear_probe(model, task: ClassificationTask, max_iter: int = 2000) -> float:
    """Test accuracy of a logistic regression (scikit-learn, standardised features) fitted on the
    frozen encoder's :func:`encoder_features` of ``task.train_idx``: how linearly the encoder already
    separates the classes, with no fine-tuning (less noisy than a short fine-tune)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    X, y = encoder_features(model, task), task.labels
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    clf.fit(X[task.train_idx], y[task.train_idx])
    return float(clf.score(X[task.test_idx], y[task.test_idx]))


@torch.no_grad()
def accuracy(clf, task: ClassificationTask, idx, batch_size: int = 64, device=None) -> float:
    """Share of ``idx`` whose argmax class is the label."""
    device = device or next(clf.parameters()).device
    was = clf.training
    clf.eval()
    correct = 0
    for s in range(0, len(idx), batch_size):
        b = task.batch(idx[s: s + batch_size])
        logits = clf(b["input_ids"].to(device), b["attention_mask"].to(device))
        correct += int((logits.argmax(-1).cpu() == b["labels"]).sum())
    clf.train(was)
    return correct / max(len(idx), 1)


def finetune_classifier(encoder_model, task: ClassificationTask, *, epochs: float = 3, batch_size: int = 32,
                        lr: float = 5e-4, weight_decay: float = 0.01, warmup: float = 0.1, grad_clip: float = 1.0,
                        pooling: str = "mean", dropout: float = 0.1, seed: int = 0, device=None,
                        progress: bool = True, history: list | None = None) -> float:
    """Fine-tune a copy of ``encoder_model``'s body with a linear head on ``task``; return test accuracy.

    ``epochs`` may be fractional (a step count of ``epochs x train / batch_size``). Costs one
    forward + backward of the body per training example and epoch, and one forward per test example.
    ``pooling``: ``mean`` over real tokens (default: our encoders have no next-sentence objective
    that would train a [CLS] summary), ``first`` ([CLS]) or ``last`` (decoders). ``history``, when
    given, receives one ``{"step", "loss"}`` record per step.
    """
    if epochs <= 0 or batch_size < 1 or not lr > 0:
        raise ConfigError(f"epochs ({epochs}), batch_size ({batch_size}) and lr ({lr}) must be positive")
    device = resolve_device(device)
    body = copy.deepcopy(_body(encoder_model)).float()
    hidden = body.config.hidden_size if hasattr(body.config, "hidden_size") else body.config.n_embd
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clf = SequenceClassifier(body, hidden, task.num_labels, pooling, dropout).to(device)
        clf.train()
        params = [p for p in clf.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=lr)
        rng = np.random.default_rng([seed, 777])
        n = len(task.train_idx)
        per_epoch = max(1, math.ceil(n / batch_size))
        total = max(1, int(round(epochs * per_epoch)))
        n_warm = int(warmup * total)
        order = np.empty(0, dtype=np.int64)
        for step in tqdm(range(total), disable=not progress, desc="finetune", leave=False, mininterval=1.0):
            if len(order) < batch_size:
                order = np.concatenate([order, task.train_idx[rng.permutation(n)]])
            idx, order = order[:batch_size], order[batch_size:]
            f = (step + 1) / n_warm if step < n_warm else max(0.0, (total - step) / max(total - n_warm, 1))
            for g in opt.param_groups:
                g["lr"] = lr * f
            b = task.batch(idx)
            logits = clf(b["input_ids"].to(device), b["attention_mask"].to(device))
            loss = F.cross_entropy(logits.float(), b["labels"].to(device))
            loss.backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if history is not None:
                history.append({"step": step + 1, "loss": float(loss.detach())})
        return accuracy(clf, task, task.test_idx, device=device)
