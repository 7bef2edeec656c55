"""Controlled redundancy: near-duplicate copies added to a corpus, recorded so they are known.

Subset selection by facility location (INGENIOUS) pays off where a corpus repeats itself: a
near-duplicate of a picked document covers almost nothing new, gains little and is rarely drawn.
Whether a small corpus holds such redundancy is an accident of its sources; :func:`add_redundancy`
makes it a parameter. A seeded ``fraction`` of the documents each get ``copies`` (2-4 by default,
drawn per document) lightly perturbed copies: every whitespace-separated word of a copy is, with
probability ``perturb``, dropped, replaced by another word of the same document, or swapped with its
neighbour. The originals keep their positions; the copies are appended, with ids
``<source id>~dup<k>``, and ``dup_of[i]`` is the index of copy ``i``'s source (``-1`` for the
originals). Apply it to the *training* split only, so that held-out documents stay unseen.
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .corpus import Corpus


def perturb_text(text: str, rate: float, rng: np.random.Generator) -> str:
    """``text`` with about ``rate`` of its words dropped, replaced or swapped (seeded by ``rng``)."""
    words = text.split()
    if len(words) < 2 or rate <= 0:
        return text
    out: list[str] = []
    i = 0
    while i < len(words):
        w = words[i]
        if rng.random() < rate:
            op = rng.integers(3)
            if op == 0:                                   # drop
                i += 1
                continue
            if op == 1:                                   # replace by another word of the document
                w = words[int(rng.integers(len(words)))]
            elif i + 1 < len(words):                      # swap with the next word
                out += [words[i + 1], w]
                i += 2
                continue
        out.append(w)
        i += 1
    return " ".join(out)


def add_redundancy(corpus: Corpus, fraction: float, seed: int = 0, copies: tuple[int, int] = (2, 4),
                   perturb: float = 0.05) -> tuple[Corpus, np.ndarray]:
    """``corpus`` plus perturbed copies of a seeded ``fraction`` of its documents; returns the new
    corpus and ``dup_of`` (source index of each document, ``-1`` for originals).

    ``copies=(lo, hi)``: each chosen document gets between ``lo`` and ``hi`` copies (inclusive);
    ``perturb``: the per-word perturbation rate of a copy (0: exact duplicates).
    """
    if not 0 <= fraction <= 1:
        raise ConfigError(f"redundancy must be a fraction in [0, 1], got {fraction}")
    lo, hi = (int(c) for c in copies)
    if not 1 <= lo <= hi:
        raise ConfigError(f"copies must be (lo, hi) with 1 <= lo <= hi, got {copies}")
    if not 0 <= perturb < 1:
        raise ConfigError(f"perturb must be in [0, 1), got {perturb}")
    n = len(corpus)
    dup_of = np.full(n, -1, dtype=np.int64)
    if fraction == 0:
        return corpus, dup_of
    rng = np.random.default_rng([seed, 31337])
    chosen = np.sort(rng.choice(n, size=int(round(fraction * n)), replace=False))
    counts = rng.integers(lo, hi + 1, size=len(chosen))
    ids, texts, domains = corpus.ids, corpus.texts, corpus.domains
    new = {"id": [], "text": [], "domain": []}
    src = []
    for i, c in zip(chosen.tolist(), counts.tolist()):
        for k in range(c):
            new["id"].append(f"{ids[i]}~dup{k + 1}")
            new["text"].append(perturb_text(texts[i], perturb, rng))
            new["domain"].append(domains[i])
            src.append(i)
    base = corpus.ds.select_columns(["id", "text", "domain"])
    import datasets
    ds = datasets.concatenate_datasets([base, datasets.Dataset.from_dict(new).cast(base.features)])
    out = Corpus(ds, f"{corpus.spec}+redundancy{fraction:g}")
    return out, np.concatenate([dup_of, np.asarray(src, dtype=np.int64)])


def group_ids(dup_of: np.ndarray) -> np.ndarray:
    """The original each document belongs to (itself for originals): copies share their source's group."""
    dup_of = np.asarray(dup_of, dtype=np.int64)
    return np.where(dup_of >= 0, dup_of, np.arange(len(dup_of)))
