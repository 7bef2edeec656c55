"""Tokenizers trained locally with 🤗 ``tokenizers`` and wrapped as ``PreTrainedTokenizerFast``.

``kind="wordpiece"`` (BERT-style encoders: ``[PAD] [UNK] [CLS] [SEP] [MASK]``) or ``kind="bpe"``
(byte-level BPE for decoders: ``<|endoftext|>`` is bos/eos/pad). Trained tokenizers are cached under
``runs/cache/tokenizers/`` keyed by corpus hash, kind and vocabulary size, so every run on the same
corpus shares one.

:func:`load_tokenizer` takes the tokenizer of a model instead: a directory saved with
``save_pretrained``, a hub id (``AutoTokenizer.from_pretrained``; offline, only what the hub cache
holds) or a tokenizer object.
"""
from __future__ import annotations

import os
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from ..errors import ConfigError
from ..models import hub_offline
from .corpus import Corpus, cache_dir

KINDS = ("wordpiece", "bpe")


def _batches(corpus: Corpus, size: int = 1000):
    for b in corpus.ds.iter(batch_size=size):
        yield b["text"]


def _wrap(tok: Tokenizer, kind: str) -> PreTrainedTokenizerFast:
    # transformers is imported where it is used (here and below), not at the top: it costs about a
    # second, which a one-line error of the CLI must not pay
    from transformers import PreTrainedTokenizerFast
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


#: files one of which a directory holds when a tokenizer was saved there with ``save_pretrained``
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
                   "tokenizer.model", "sentencepiece.bpe.model")


def has_tokenizer(directory) -> bool:
    """Whether ``directory`` holds a saved tokenizer."""
    d = Path(directory).expanduser()
    return d.is_dir() and any((d / f).is_file() for f in TOKENIZER_FILES)


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


def load_tokenizer(spec) -> PreTrainedTokenizerFast:
    """A fast HF tokenizer from a directory, a hub id or an object (returned as is)."""
    if isinstance(spec, Tokenizer):
        raise ConfigError("tokenizer is a raw tokenizers.Tokenizer: wrap it as PreTrainedTokenizerFast("
                          "tokenizer_object=tok, eos_token=..., pad_token=..., mask_token=...) so its special "
                          "tokens are known")
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str):
        from transformers import PreTrainedTokenizerBase
        if not isinstance(spec, PreTrainedTokenizerBase):
            raise ConfigError(f"tokenizer must be a directory, a hub id or a Hugging Face tokenizer object, "
                              f"not {type(spec).__name__}")
        if not spec.is_fast:
            raise ConfigError(f"tokenizer {type(spec).__name__} is a slow (Python) tokenizer: load a fast one "
                              f"(AutoTokenizer.from_pretrained(..., use_fast=True))")
        return spec
    d = Path(spec).expanduser()
    if d.is_dir():
        if not has_tokenizer(d):
            raise ConfigError(f"tokenizer directory {spec!r} holds no tokenizer (none of {', '.join(TOKENIZER_FILES)}); "
                              f"save one there with tokenizer.save_pretrained(DIR)")
        where = "directory"
    elif d.exists() or not spec or spec.startswith(("/", ".", "~")) or spec.count("/") > 1:
        raise ConfigError(f"tokenizer {spec!r} is neither a directory nor a hub id")
    else:
        where = "hub id"
        if hub_offline():
            from huggingface_hub import try_to_load_from_cache
            if not any(isinstance(try_to_load_from_cache(spec, f), str) for f in ("tokenizer.json", "tokenizer_config.json")):
                raise ConfigError(f"tokenizer {spec!r} is not a local directory and not loadable as a hub id: the hub "
                                  f"is offline (HF_HUB_OFFLINE) and its cache does not hold it")
    import transformers
    try:
        tok = transformers.AutoTokenizer.from_pretrained(spec)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"cannot load the tokenizer of {where} {spec!r}: {_first_line(e)}") from None
    if not tok.is_fast:
        raise ConfigError(f"tokenizer {spec!r} has no fast (Rust) version; save it with tokenizer.json")
    return tok
