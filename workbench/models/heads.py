"""Losses through a model's prediction head: the masked-LM loss with the sparse head.

The academic-budget recipe's main saving on a small model with a large vocabulary: decode only the
masked rows (about 15% of the tokens) instead of every position.
"""
from __future__ import annotations

import torch

from ..errors import ModelError


def mlm_parts(model):
    """(encoder body, MLM head) of a HF masked-LM model, for the sparse prediction head."""
    mt = model.config.model_type
    if mt == "bert":
        return model.bert, model.cls
    if mt in ("roberta-prelayernorm", "roberta"):
        return model.base_model, model.lm_head
    raise ModelError(f"no MLM head known for model type {mt!r}")


def mlm_loss(model, batch, sparse: bool = True, reduction: str = "mean") -> torch.Tensor:
    """Masked-LM cross-entropy on the target positions (``labels != -100``).

    ``sparse=True`` runs the prediction head (transform + decoder over the vocabulary) only on the
    masked rows, ~15% of the tokens: for a tiny model with a large vocabulary the decoder is most of
    the compute, so this is the main saving of the academic-budget recipe. ``sparse=False`` is HF's
    dense head (every position decoded). ``reduction="none"`` returns the mean loss per example [B];
    ``"mean"`` the mean over all targets, weighted per example by ``batch["weight"]`` when present.
    """
    labels = batch["labels"]
    if sparse:
        body, head = mlm_parts(model)
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
