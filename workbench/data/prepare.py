"""The shared recipe: corpus -> split -> tokenizer -> task -> model, as every notebook needs it.

``prepare(corpus="pydocs:numpy", model="bert-tiny", ...)`` returns a :class:`Prepared` with the
train and eval tasks and a freshly initialised model; encoders get a WordPiece tokenizer and the MLM
task, decoders a byte-level BPE tokenizer and the packed CLM task.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from .batching import CLMTask, MLMTask
from .corpus import Corpus, corpus as load_corpus
from .tokenizer import train_tokenizer
from ..models import is_encoder, model as make_model


@dataclass
class Prepared:
    corpus: Corpus
    train_corpus: Corpus
    eval_corpus: Corpus
    holdout_corpus: Corpus | None
    tokenizer: Any
    train: Any          # MLMTask | CLMTask
    eval: Any
    model: Any
    encoder: bool


def make_task(c: Corpus, tokenizer, encoder: bool, seq_len: int, seed: int, sparse_head: bool = True):
    return MLMTask(c, tokenizer, seq_len, seed=seed, sparse_head=sparse_head) if encoder \
        else CLMTask(c, tokenizer, seq_len, seed=seed)


def prepare(corpus: str | Corpus = "pydocs", model: str = "bert-tiny", seq_len: int = 128, vocab_size: int = 8192,
            seed: int = 0, eval_fraction: float = 0.05, holdout_domains: Sequence[str] = (),
            min_chars: int = 200, dropout: float = 0.1, sparse_head: bool = True, **model_overrides) -> Prepared:
    """Build everything a training run on ``corpus`` with ``model`` needs (cached where possible)."""
    enc = is_encoder(model)
    c = corpus if isinstance(corpus, Corpus) else load_corpus(corpus, min_chars=min_chars)
    parts = c.split(eval_fraction, holdout_domains=holdout_domains, seed=0)
    tr, ev = parts[0], parts[1]
    ho = parts[2] if len(parts) > 2 else None
    tok = train_tokenizer(tr, "wordpiece" if enc else "bpe", vocab_size)
    m = make_model(model, vocab_size=len(tok), max_positions=max(seq_len, 128), dropout=dropout, seed=seed,
                   **model_overrides)
    return Prepared(corpus=c, train_corpus=tr, eval_corpus=ev, holdout_corpus=ho, tokenizer=tok,
                    train=make_task(tr, tok, enc, seq_len, seed, sparse_head),
                    eval=make_task(ev, tok, enc, seq_len, seed + 1, sparse_head), model=m, encoder=enc)
