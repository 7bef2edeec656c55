"""Losses through a model's prediction head: the masked-LM loss with the sparse head.

The academic-budget recipe's main saving on a small model with a large vocabulary: decode only the
masked rows (about 15% of the tokens) instead of every position. The sparse head needs to know where
the encoder body ends and the position-wise head begins: BERT-family models (``.cls``),
RoBERTa-family models (``.lm_head``) and crammed-BERT (``.decoder``, the tied decoder alone: no head
transform). Any other masked LM gets the dense loss through its own logits (every position decoded):
same loss, no saving.
"""
from __future__ import annotations

import torch

from ..errors import ModelError


#: model types whose masked-LM head is position-wise and sits on ``.cls`` (BERT family) or ``.lm_head``
#: (RoBERTa family), applied to the body's last hidden state
CLS_TYPES = frozenset({"bert", "megatron-bert", "ernie", "nezha", "roformer"})
LM_HEAD_TYPES = frozenset({"roberta", "roberta-prelayernorm", "xlm-roberta", "xlm-roberta-xl", "camembert",
                            "data2vec-text"})
#: model types whose masked-LM head is the vocabulary decoder alone on ``.decoder`` (crammed-BERT:
#: no head transform), applied to the body's last hidden state (after its final norm)
DECODER_TYPES = frozenset({"crammed_bert"})


def sparse_parts(model):
    """(encoder body, MLM head) when the sparse head applies to ``model``, else ``None``."""
    mt = getattr(getattr(model, "config", None), "model_type", None)
    head = getattr(model, "cls", None) if mt in CLS_TYPES else \
        getattr(model, "lm_head", None) if mt in LM_HEAD_TYPES else \
        getattr(model, "decoder", None) if mt in DECODER_TYPES else None
    body = getattr(model, "base_model", None)
    if head is None or body is None or body is model:
        return None
    return body, head


def mlm_parts(model):
    """(encoder body, MLM head) of a HF masked-LM model, for the sparse prediction head."""
    parts = sparse_parts(model)
    if parts is None:
        mt = getattr(getattr(model, "config", None), "model_type", None)
        raise ModelError(f"no sparse MLM head known for model type {mt!r} (BERT and RoBERTa families and crammed-BERT only)")
    return parts


def mlm_loss(model, batch, sparse: bool = True, reduction: str = "mean") -> torch.Tensor:
    """Masked-LM cross-entropy on the target positions (``labels != -100``).

    ``sparse=True`` runs the prediction head (transform + decoder over the vocabulary) only on the
    masked rows, ~15% of the tokens: for a tiny model with a large vocabulary the decoder is most of
    the compute, so this is the main saving of the academic-budget recipe. ``sparse=False`` is HF's
    dense head (every position decoded); models outside the BERT and RoBERTa families and
    crammed-BERT always take the dense path. ``reduction="none"`` returns the mean loss per example [B];
    ``"mean"`` the mean over all targets, weighted per example by ``batch["weight"]`` when present.
    """
    labels = batch["labels"]
    parts = sparse_parts(model) if sparse else None
    if parts is not None:
        body, head = parts
        h = body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]  # [B, L, H]
        sel = labels != -100                                                                # [B, L]
        logits = head(h[sel])                                                               # [M, V]
        tok = torch.nn.functional.cross_entropy(logits.float(), labels[sel], reduction="none")  # [M]
        rows = sel.nonzero()[:, 0]
    else:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        sel = labels != -100
        tok = torch.nn.functional.cross_entropy(logits[sel].float(), labels[sel], reduction="none")
        rows = sel.nonzero()[:, 0]
    B = labels.size(0)
    if reduction == "none":
        s = torch.zeros(B, dtype=tok.dtype, device=tok.device).index_add_(0, rows, tok)
        n = torch.zeros(B, dtype=tok.dtype, device=tok.device).index_add_(0, rows, torch.ones_like(tok))
        return s / n.clamp_min(1)
    if "weight" in batch:
        tok = tok * batch["weight"].to(tok.dtype)[rows]
    return tok.sum() / max(int(sel.sum()), 1)
