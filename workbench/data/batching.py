"""Training tasks over a tokenized corpus: masked LM (encoders) and causal LM (decoders).

A *task* is what :func:`workbench.train` consumes. Its contract (duck-typed, nothing to inherit):

``len(task)``                    number of examples (documents for MLM, packed blocks for CLM)
``task.ids`` / ``task.domains``  a stable id and a domain label per example
``task.collate(indices, step)``  -> batch dict of tensors, always with ``index`` (int64 [B]);
                                 deterministic in (indices, step, task seed)
``task.loss(model, batch)``      -> scalar training loss (mean over target tokens; honours an
                                 optional per-example ``weight`` [B] in the batch)
``task.per_example_loss(model, batch)`` -> [B] loss per example (what batch filters score)
``task.tokens(batch)``           -> number of real (non-padding) tokens in the batch
``task.embed(model, batch, layer)`` -> [B, H] features from a hidden layer (selection methods)

MLM masks 15% of the real tokens (80% ``[MASK]``, 10% random, 10% kept) and keeps *only the masked
positions* as targets (``labels`` is -100 elsewhere), so a sparse prediction head can decode just
those rows (:func:`workbench.models.mlm_loss`). Every example gets at least one target. CLM packs
documents, separated by the end-of-text token, into fixed blocks of ``seq_len`` tokens.
"""
from __future__ import annotations

import hashlib
import os
from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, CorpusError
from ..models.heads import mlm_loss
from .corpus import Corpus, cache_dir


def _step_generator(seed: int, step: int, salt: int = 0) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + step * 7919 + salt) % (2**63 - 1))
    return g


def _tok_key(tokenizer) -> str:
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()[:12]


def _encode_docs(corpus: Corpus, tokenizer, seq_len: int, special: bool) -> list[np.ndarray]:
    out = []
    for b in corpus.ds.iter(batch_size=2048):
        enc = tokenizer(b["text"], add_special_tokens=special, truncation=special, max_length=seq_len if special else None,
                        return_attention_mask=False)["input_ids"]
        out.extend(np.asarray(e, dtype=np.int32) for e in enc)
    return out


class MLMTask:
    """Masked language modelling, one example = one document truncated to ``seq_len`` tokens."""

    kind = "mlm"

    def __init__(self, corpus: Corpus, tokenizer, seq_len: int = 128, mlm_probability: float = 0.15,
                 seed: int = 0, sparse_head: bool = True):
        if seq_len < 8:
            raise ConfigError(f"seq_len {seq_len} is too short (minimum 8)")
        if not 0 < mlm_probability < 1:
            raise ConfigError(f"mlm_probability {mlm_probability} must be in (0, 1)")
        self.corpus, self.tokenizer, self.seq_len = corpus, tokenizer, seq_len
        self.mlm_probability, self.seed, self.sparse_head = mlm_probability, seed, sparse_head
        self.pad_id = tokenizer.pad_token_id
        self.mask_id = tokenizer.mask_token_id
        if self.mask_id is None or self.pad_id is None:
            raise ConfigError("an MLM task needs a tokenizer with [MASK] and [PAD] tokens (kind='wordpiece')")
        self.vocab_size = len(tokenizer)
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)))
        path = cache_dir() / "tokens" / f"mlm-{corpus.hash}-{_tok_key(tokenizer)}-{seq_len}.npz"
        if path.exists():
            z = np.load(path, allow_pickle=False)
            self.input_ids, self.lengths = z["input_ids"], z["lengths"]
        else:
            docs = _encode_docs(corpus, tokenizer, seq_len, special=True)
            self.lengths = np.array([len(d) for d in docs], dtype=np.int32)
            self.input_ids = np.full((len(docs), seq_len), self.pad_id, dtype=np.int32)
            for k, d in enumerate(docs):
                self.input_ids[k, : len(d)] = d
            _save_npz(path, input_ids=self.input_ids, lengths=self.lengths)
        self.ids = corpus.ids
        self.domains = corpus.domains

    def __len__(self) -> int:
        return len(self.input_ids)

    def collate(self, indices, step: int = 0) -> dict[str, torch.Tensor]:
        idx = np.asarray(indices, dtype=np.int64)
        L = int(self.lengths[idx].max())                                    # trim padding columns
        ids = torch.from_numpy(self.input_ids[idx, :L].astype(np.int64))    # [B, L]
        attn = (torch.arange(L)[None, :] < torch.from_numpy(self.lengths[idx].astype(np.int64))[:, None]).long()
        g = _step_generator(self.seed, step)
        candidates = attn.bool() & ~torch.isin(ids, self.special_ids)
        prob = torch.rand(ids.shape, generator=g)
        masked = candidates & (prob < self.mlm_probability)
        # every example keeps at least one target: its highest-priority candidate
        none = ~masked.any(1) & candidates.any(1)
        if none.any():
            pri = torch.where(candidates, prob, torch.full_like(prob, 2.0))
            masked[none, pri[none].argmin(1)] = True
        labels = torch.where(masked, ids, torch.full_like(ids, -100))
        r = torch.rand(ids.shape, generator=g)
        rand_tok = torch.randint(0, self.vocab_size, ids.shape, generator=g)
        inputs = ids.clone()
        inputs[masked & (r < 0.8)] = self.mask_id
        swap = masked & (r >= 0.8) & (r < 0.9)
        inputs[swap] = rand_tok[swap]
        return {"input_ids": inputs, "attention_mask": attn, "labels": labels, "index": torch.from_numpy(idx)}

    def tokens(self, batch) -> int:
        return int(batch["attention_mask"].sum())

    def loss(self, model, batch) -> torch.Tensor:
        return mlm_loss(model, batch, sparse=self.sparse_head)

    def per_example_loss(self, model, batch) -> torch.Tensor:
        return mlm_loss(model, batch, sparse=self.sparse_head, reduction="none")

    def embed(self, model, batch, layer: int = -1) -> torch.Tensor:
        """Mean over non-padding tokens of hidden layer ``layer`` (unmasked inputs) -> [B, H].

        Runs the model's body only (``model.base_model``): the LM head's vocabulary projection, often
        most of a small model's forward, is not needed for hidden states."""
        out = _body(model)(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           output_hidden_states=True)
        h = out.hidden_states[layer]                                       # [B, L, H]
        m = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp_min(1)

    def unmasked(self, indices) -> dict[str, torch.Tensor]:
        """The examples without masking (for embeddings and classification)."""
        idx = np.asarray(indices, dtype=np.int64)
        L = int(self.lengths[idx].max())
        ids = torch.from_numpy(self.input_ids[idx, :L].astype(np.int64))
        attn = (torch.arange(L)[None, :] < torch.from_numpy(self.lengths[idx].astype(np.int64))[:, None]).long()
        return {"input_ids": ids, "attention_mask": attn, "index": torch.from_numpy(idx)}


class CLMTask:
    """Causal language modelling over documents packed into blocks of ``seq_len`` tokens.

    Documents are concatenated in corpus order with the end-of-text token after each, then cut into
    blocks (the tail shorter than a block is dropped). A block's domain is the domain that holds
    most of its tokens; its id is ``block<k>@<corpus hash>``.
    """

    kind = "clm"

    def __init__(self, corpus: Corpus, tokenizer, seq_len: int = 128, seed: int = 0):
        if seq_len < 8:
            raise ConfigError(f"seq_len {seq_len} is too short (minimum 8)")
        self.corpus, self.tokenizer, self.seq_len, self.seed = corpus, tokenizer, seq_len, seed
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ConfigError("a CLM task needs a tokenizer with an end-of-text token (kind='bpe')")
        self.vocab_size = len(tokenizer)
        path = cache_dir() / "tokens" / f"clm-{corpus.hash}-{_tok_key(tokenizer)}-{seq_len}.npz"
        if path.exists():
            z = np.load(path, allow_pickle=False)
            self.input_ids, dom_idx, names = z["input_ids"], z["domain_idx"], list(z["domain_names"])
        else:
            docs = _encode_docs(corpus, tokenizer, seq_len, special=False)
            names = sorted(set(corpus.domains))
            code = {d: i for i, d in enumerate(names)}
            stream = np.concatenate([np.append(d, eos).astype(np.int32) for d in docs])
            owner = np.concatenate([np.full(len(d) + 1, code[dom], dtype=np.int32)
                                    for d, dom in zip(docs, corpus.domains)])
            nb = len(stream) // seq_len
            if nb == 0:
                raise CorpusError(f"corpus {corpus.spec!r} has fewer than {seq_len} tokens: no block to train on")
            self.input_ids = stream[: nb * seq_len].reshape(nb, seq_len)
            own = owner[: nb * seq_len].reshape(nb, seq_len)
            dom_idx = np.array([np.bincount(r, minlength=len(names)).argmax() for r in own], dtype=np.int32)
            _save_npz(path, input_ids=self.input_ids, domain_idx=dom_idx, domain_names=np.array(names))
        self.domains = [str(names[i]) for i in dom_idx]
        self.ids = [f"block{k}@{corpus.hash}" for k in range(len(self.input_ids))]

    def __len__(self) -> int:
        return len(self.input_ids)

    def collate(self, indices, step: int = 0) -> dict[str, torch.Tensor]:
        idx = np.asarray(indices, dtype=np.int64)
        ids = torch.from_numpy(self.input_ids[idx].astype(np.int64))       # [B, T]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone(),
                "index": torch.from_numpy(idx)}

    def tokens(self, batch) -> int:
        return int(batch["attention_mask"].sum())

    def per_token_loss(self, model, batch) -> torch.Tensor:
        """[B, T-1] next-token cross-entropy (0 where ``labels`` is -100)."""
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        tgt = batch["labels"][:, 1:]
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)).float(), tgt.reshape(-1),
                               ignore_index=-100, reduction="none").view(tgt.shape)

    def per_example_loss(self, model, batch) -> torch.Tensor:
        tl = self.per_token_loss(model, batch)
        n = (batch["labels"][:, 1:] != -100).sum(1).clamp_min(1)
        return tl.sum(1) / n

    def loss(self, model, batch) -> torch.Tensor:
        tl = self.per_token_loss(model, batch)
        valid = (batch["labels"][:, 1:] != -100).to(tl.dtype)
        if "weight" in batch:
            valid = valid * batch["weight"].to(tl.dtype)[:, None]
        return (tl * valid).sum() / (batch["labels"][:, 1:] != -100).sum().clamp_min(1)

    def embed(self, model, batch, layer: int = -1) -> torch.Tensor:
        """Hidden state of the last token of layer ``layer`` -> [B, H] (the model's body only)."""
        out = _body(model)(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           output_hidden_states=True)
        return out.hidden_states[layer][:, -1]

    def unmasked(self, indices) -> dict[str, torch.Tensor]:
        return self.collate(indices)


def _body(model):
    """The transformer without its LM head (``base_model`` of a Hugging Face model), else the model."""
    body = getattr(model, "base_model", None)
    return body if isinstance(body, torch.nn.Module) else model


def _save_npz(path, **arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def domain_counts(domains) -> dict[str, int]:
    return dict(sorted(Counter(domains).items()))
