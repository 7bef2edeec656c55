"""The shared recipe: corpus -> split -> tokenizer -> task -> model, as every notebook needs it.

``prepare(corpus="pydocs:numpy", model="bert-tiny", ...)`` returns a :class:`Prepared` with the
train and eval tasks and the model; encoders get the MLM task, decoders the packed CLM task.

``model`` is a preset (a fresh model sized to a tokenizer trained on the corpus: WordPiece for
encoders, byte-level BPE for decoders), a Hugging Face directory, a hub id or a model object.
``tokenizer`` is ``None`` (the model directory's own tokenizer when it has one, else one trained on
the corpus), a directory, a hub id or a tokenizer object. Before anything is tokenized the pair is
checked: the tokenizer's vocabulary must fit the model's embedding table, the task's special tokens
must exist (``[MASK]`` and ``[PAD]`` for MLM, end-of-text for CLM), and ``seq_len`` must fit the
model's position table.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import ConfigError, ModelError
from ..models import check_seq_len, check_spec, embedding_rows, is_encoder, model as make_model
from ..models.heads import LM_HEAD_TYPES
from .batching import CLMTask, MLMTask
from .corpus import Corpus, corpus as load_corpus
from .tokenizer import has_tokenizer, load_tokenizer, train_tokenizer

DEFAULT_VOCAB = 8192


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


def _name(obj) -> str:
    return repr(obj) if isinstance(obj, str) else type(obj).__name__


def _own_tokenizer(model_spec, m):
    """The tokenizer saved with the model (its directory or hub id), or ``None``."""
    src = model_spec if isinstance(model_spec, str) else getattr(m, "name_or_path", "") or ""
    if src and has_tokenizer(src):
        return load_tokenizer(src)
    if isinstance(model_spec, str) and check_spec(model_spec) == "hub":
        try:
            return load_tokenizer(model_spec)
        except ConfigError:         # a hub model without a tokenizer: train one
            return None
    return None


def _pads_positions(preset: str) -> bool:
    return preset.startswith("prelnbert-")


def check_pair(m, tok, seq_len: int, model_name: str = "the model", tok_name: str = "the tokenizer") -> bool:
    """Refuse a model and tokenizer that cannot train together, one line naming both; returns
    whether ``m`` is an encoder (the MLM task) or a decoder (the CLM task)."""
    enc = is_encoder(m)
    rows = embedding_rows(m)
    if len(tok) > rows:
        raise ModelError(f"vocabulary mismatch: tokenizer {tok_name} has {len(tok)} tokens but model {model_name} "
                         f"has an embedding table of {rows} rows; use the model's own tokenizer or resize the model "
                         f"(model.resize_token_embeddings(len(tokenizer)))")
    if enc:
        missing = [t for t, i in (("mask", tok.mask_token_id), ("pad", tok.pad_token_id)) if i is None]
        if missing:
            raise ModelError(f"tokenizer {tok_name} has no {' and no '.join(missing)} token, which masked-LM "
                             f"training of model {model_name} (an encoder) needs")
        pad = getattr(m.config, "pad_token_id", None)
        if m.config.model_type in LM_HEAD_TYPES and pad is not None and tok.pad_token_id != pad:
            raise ModelError(f"padding mismatch: tokenizer {tok_name} pads with id {tok.pad_token_id} but model "
                             f"{model_name} ({m.config.model_type}: positions count from its pad_token_id) "
                             f"pads with id {pad}")
    elif tok.eos_token_id is None:
        raise ModelError(f"tokenizer {tok_name} has no end-of-text (eos) token, which causal-LM training of model "
                         f"{model_name} (a decoder) needs between documents")
    check_seq_len(m, seq_len, f"model {model_name}")
    return enc


def prepare(corpus: str | Corpus = "pydocs", model: Any = "bert-tiny", seq_len: int = 128,
            vocab_size: int | None = None, seed: int = 0, eval_fraction: float = 0.05,
            holdout_domains: Sequence[str] = (), min_chars: int = 200, dropout: float | None = None,
            sparse_head: bool = True, tokenizer: Any = None, **model_overrides) -> Prepared:
    """Build everything a training run on ``corpus`` with ``model`` needs (cached where possible).

    ``vocab_size`` (default 8192, at most the model's embedding table) sizes a tokenizer trained on
    the corpus (ignored when the tokenizer is given or saved with the model); ``dropout`` (default 0.1 for a preset, the saved config's otherwise) and
    ``model_overrides`` set config attributes of a preset, directory or hub model.
    """
    model, tokenizer = (os.fspath(x) if isinstance(x, os.PathLike) else x for x in (model, tokenizer))
    preset = isinstance(model, str) and check_spec(model) == "preset"
    tok = load_tokenizer(tokenizer) if tokenizer is not None else None
    m = None if preset else make_model(model, dropout=dropout, seed=seed, **model_overrides)
    if m is not None:
        rows = embedding_rows(m)
        if tok is None:
            tok = _own_tokenizer(model, m)
            tokenizer = model if tok is not None else None
        if tok is None and vocab_size is not None and vocab_size > rows:
            raise ModelError(f"vocabulary mismatch: vocab_size {vocab_size} for a tokenizer trained on the corpus but "
                             f"model {_name(model)} has an embedding table of {rows} rows; pass vocab_size <= {rows}")
        if tok is None:
            vocab_size = vocab_size or min(DEFAULT_VOCAB, rows)
        check_seq_len(m, seq_len, f"model {_name(model)}")      # before the corpus is read
        enc = is_encoder(m)
    else:
        enc = is_encoder(model)
    c = corpus if isinstance(corpus, Corpus) else load_corpus(corpus, min_chars=min_chars)
    parts = c.split(eval_fraction, holdout_domains=holdout_domains, seed=0)
    tr, ev = parts[0], parts[1]
    ho = parts[2] if len(parts) > 2 else None
    if tok is None:
        tok = train_tokenizer(tr, "wordpiece" if enc else "bpe", vocab_size or DEFAULT_VOCAB)
        tok_name = f"(trained on the corpus, {len(tok)} tokens)"
    else:
        tok_name = _name(tokenizer)
    if m is None:
        if tokenizer is not None and _pads_positions(model) and "pad_token_id" not in model_overrides:
            model_overrides["pad_token_id"] = tok.pad_token_id     # RoBERTa positions count from the pad id
        m = make_model(model, vocab_size=len(tok), max_positions=max(seq_len, 128), dropout=dropout, seed=seed,
                       **model_overrides)
    check_pair(m, tok, seq_len, _name(model), tok_name)
    return Prepared(corpus=c, train_corpus=tr, eval_corpus=ev, holdout_corpus=ho, tokenizer=tok,
                    train=make_task(tr, tok, enc, seq_len, seed, sparse_head),
                    eval=make_task(ev, tok, enc, seq_len, seed + 1, sparse_head), model=m, encoder=enc)
