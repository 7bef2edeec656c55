"""FLOP counts per token from a model's config, for any Hugging Face causal or masked LM (checked
against ``torch.utils.flop_counter`` in the tests for the presets, GPT-2, GPT-NeoX, Llama and BERT).

Forward FLOPs per token = 2 × (weights a matmul touches per token) + attention scores and mixing,
2 × 2 × layers × context × (heads × head_dim) (context = ``seq_len`` for an encoder and for a
decoder as well: the counter counts the full causal matmul). Per layer the weights are the query
and output projections (hidden × heads·head_dim each), key and value (hidden × kv_heads·head_dim
each: grouped-query attention counts only its kv heads) and the MLP: 2 × hidden × ffn, or
3 × hidden × ffn for a gated MLP (Llama's gate, up and down projections); a mixture of experts
counts the experts each token visits and its router. Training = 3 × forward (backward is twice the
forward). The LM head decodes ``head_fraction`` of the positions: a sparse MLM head only the masked
ones; an encoder's head includes its transform (dense hidden × hidden before the decoder), except
crammed-BERT's, which has none; its GLU MLP is hidden × ffn in and ffn/2 × hidden out.
Normalisation, activations, rotary embeddings and the softmax are not counted.
"""
from __future__ import annotations

import torch

from .heads import sparse_parts
from .presets import ENCODER_TYPES, is_encoder

#: model types with a gated MLP (gate, up, down); any model with a SiLU activation counts as gated too
GATED_TYPES = frozenset({
    "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2", "gemma3_text",
    "phi3", "olmo", "olmo2", "olmoe", "cohere", "cohere2", "granite", "granitemoe", "stablelm", "internlm2",
    "deepseek_v2", "deepseek_v3", "smollm3", "helium", "glm", "exaone", "nemotron_h", "arcee", "ernie4_5"})
_NOT_GATED = frozenset({"gpt2", "gpt_neox", "gptj", "gpt_neo", "opt", "phi", "falcon", "bloom", "starcoder2",
                        "gpt_bigcode", "codegen", "mpt"})


#: model types with a GLU MLP whose output projection takes half the input projection's width
#: (crammed-BERT: hidden -> ffn, gate, ffn/2 -> hidden) and no MLM head transform
HALF_GLU_TYPES = frozenset({"crammed_bert"})


def _get(cfg, *names, default=None):
    return next((getattr(cfg, n) for n in names if isinstance(getattr(cfg, n, None), (int, float))), default)


def _shape(cfg):
    """(layers, hidden, q width = heads·head_dim, kv width, ffn, vocab, embedding size) of ``cfg``."""
    L = _get(cfg, "num_hidden_layers", "n_layer", "num_layers", "n_layers")
    H = _get(cfg, "hidden_size", "n_embd", "d_model", "dim")
    A = _get(cfg, "num_attention_heads", "n_head", "num_heads", "n_heads", default=1)
    KV = _get(cfg, "num_key_value_heads", "n_head_kv", "num_kv_heads", default=A)
    d = _get(cfg, "head_dim", default=None) or H // A
    I = _get(cfg, "intermediate_size", "n_inner", "ffn_dim", "ffn_hidden_size", "hidden_dim", "d_ff",
             "inner_hidden_size", default=None) or 4 * H
    E = _get(cfg, "embedding_size", default=H)
    return L, H, A * d, KV * d, I, cfg.vocab_size, E


def _gated(cfg) -> bool:
    mt = getattr(cfg, "model_type", "")
    if mt in GATED_TYPES:
        return True
    act = str(getattr(cfg, "hidden_act", "") or getattr(cfg, "activation_function", "") or "")
    return mt not in _NOT_GATED and mt not in ENCODER_TYPES and act in ("silu", "swish", "swiglu")


def _mlp_weights(cfg, H: int, I: int) -> float:
    if getattr(cfg, "model_type", "") in HALF_GLU_TYPES:
        return H * I + (I // 2) * H
    per_expert = (3 if _gated(cfg) else 2) * H
    k = _get(cfg, "num_experts_per_tok", "moe_topk", default=None)
    if not k:
        return per_expert * I
    Im = _get(cfg, "moe_intermediate_size", default=I)
    n_exp = _get(cfg, "num_local_experts", "num_experts", "n_routed_experts", default=0)
    shared = _get(cfg, "shared_expert_intermediate_size", default=0) + \
        _get(cfg, "n_shared_experts", default=0) * Im
    return per_expert * (k * Im + shared) + H * n_exp


def forward_flops_per_token(cfg, seq_len: int, head_fraction: float = 1.0) -> float:
    """Forward FLOPs per token for an HF config; ``head_fraction`` = share of positions decoded."""
    L, H, Q, KV, I, V, E = _shape(cfg)
    per_layer = 2 * (2 * H * Q + 2 * H * KV + _mlp_weights(cfg, H, I)) + 2 * 2 * seq_len * Q
    head = 2 * E * V
    encoder = getattr(cfg, "model_type", None) in ENCODER_TYPES and not getattr(cfg, "is_decoder", False)
    if encoder and getattr(cfg, "model_type", None) not in HALF_GLU_TYPES:
        head += 2 * H * E                      # the MLM transform (dense + LayerNorm) before the decoder
    embed = 2 * E * H if E != H else 0         # ALBERT / ELECTRA: the embedding projection into the body
    return L * per_layer + embed + head_fraction * head


def flops_per_token(cfg_or_model, seq_len: int, training: bool = True, head_fraction: float = 1.0) -> float:
    """FLOPs per token (training: forward + backward = 3 × forward).

    Given a masked-LM model that has no sparse head (outside the BERT and RoBERTa families: its loss
    decodes every position), ``head_fraction`` counts as 1.
    """
    cfg = getattr(cfg_or_model, "config", cfg_or_model)
    if isinstance(cfg_or_model, torch.nn.Module) and head_fraction != 1.0 and is_encoder(cfg_or_model) \
            and sparse_parts(cfg_or_model) is None:
        head_fraction = 1.0
    f = forward_flops_per_token(cfg, seq_len, head_fraction)
    return 3 * f if training else f


def param_count(model, non_embedding: bool = False) -> int:
    n = sum(p.numel() for p in model.parameters())
    if non_embedding:
        n -= sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    return n
