"""Tokenizers trained locally with 🤗 ``tokenizers`` and wrapped as ``PreTrainedTokenizerFast``.

``kind="wordpiece"`` (BERT-style encoders: ``[PAD] [UNK] [CLS] [SEP] [MASK]``) or ``kind="bpe"``
(byte-level BPE for decoders: ``<|endoftext|>`` is bos/eos/pad). Trained tokenizers are cached under
``runs/cache/tokenizers/`` keyed by corpus hash, kind and vocabulary size, so every run on the same
corpus shares one.
"""
from __future__ import annotations

import os
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from ..errors import ConfigError
from .corpus import Corpus, cache_dir

KINDS = ("wordpiece", "bpe")


def _batches(corpus: Corpus, size: int = 1000):
    for b in corpus.ds.iter(batch_size=size):
        yield b["text"]


def _wrap(tok: Tokenizer, kind: str) -> PreTrainedTokenizerFast:
    if kind == "wordpiece":
        return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                       cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>", pad_token="<|endoftext|>")


def train_tokenizer(corpus: Corpus, kind: str = "wordpiece", vocab_size: int = 8192) -> PreTrainedTokenizerFast:
    """Train (or load from cache) a tokenizer of ``kind`` with ``vocab_size`` entries on ``corpus``.

    Cost: one pass over the corpus text (a few seconds for 10 MB on 2 cores); cached afterwards.
    """
    if kind not in KINDS:
        raise ConfigError(f"tokenizer kind {kind!r} is not one of {KINDS}")
    if not 64 <= vocab_size <= 1_000_000:
        raise ConfigError(f"vocab_size {vocab_size} is out of range [64, 1000000]")
    path = cache_dir() / "tokenizers" / f"{corpus.hash}-{kind}-{vocab_size}.json"
    if path.exists():
        return _wrap(Tokenizer.from_file(str(path)), kind)
    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                            special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
        tok.train_from_iterator(_batches(corpus), trainer=trainer, length=len(corpus))
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    else:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                      special_tokens=["<|endoftext|>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(_batches(corpus), trainer=trainer, length=len(corpus))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tok.save(str(tmp))
    os.replace(tmp, path)
    return _wrap(tok, kind)
