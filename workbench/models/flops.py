"""FLOP counts of the presets, per token, from the model shapes (checked against
``torch.utils.flop_counter`` in the tests).

Forward FLOPs per token = 2 × (weights touched by a matmul per token) + attention scores and
mixing, 2 × 2 × layers × context × hidden (context = ``seq_len`` for an encoder, ``seq_len`` as
well for a decoder: the counter counts the full causal matmul). Training = 3 × forward (backward
is twice the forward). A sparse MLM head decodes only the masked fraction of positions.
"""
from __future__ import annotations


def _shape(cfg):
    g = lambda *names: next(getattr(cfg, n) for n in names if getattr(cfg, n, None) is not None)
    L = g("num_hidden_layers", "n_layer")
    H = g("hidden_size", "n_embd")
    I = getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None) or 4 * H
    return L, H, I, cfg.vocab_size


def forward_flops_per_token(cfg, seq_len: int, head_fraction: float = 1.0) -> float:
    """Forward FLOPs per token for an HF config; ``head_fraction`` = share of positions decoded."""
    L, H, I, V = _shape(cfg)
    per_layer = 2 * (4 * H * H + 2 * H * I) + 2 * 2 * seq_len * H
    head = 2 * H * V
    if cfg.model_type in ("bert", "roberta-prelayernorm", "roberta"):
        head += 2 * H * H                      # the MLM transform (dense + LayerNorm) before the decoder
    return L * per_layer + head_fraction * head


def flops_per_token(cfg_or_model, seq_len: int, training: bool = True, head_fraction: float = 1.0) -> float:
    """FLOPs per token (training: forward + backward = 3 × forward)."""
    cfg = getattr(cfg_or_model, "config", cfg_or_model)
    f = forward_flops_per_token(cfg, seq_len, head_fraction)
    return 3 * f if training else f


def param_count(model, non_embedding: bool = False) -> int:
    n = sum(p.numel() for p in model.parameters())
    if non_embedding:
        n -= sum(m.weight.numel() for m in model.modules() if isinstance(m, __import__("torch").nn.Embedding))
    return n
