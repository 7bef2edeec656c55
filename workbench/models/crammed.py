"""crammed-BERT: the encoder of Cramming (Geiping & Goldstein 2022), written here as a small Hugging
Face model (transformers' pre-LN classes have no switches for these changes).

The architecture follows the authors' final model (``cramming/architectures/crammed_bert.py`` with
``cramming/config/arch/crammed-bert.yaml``):

- no bias in any dense layer (query/key/value, attention output, FFN, decoder); the LayerNorms keep
  their bias, as theirs (``torch.nn.LayerNorm``)
- embeddings: token embedding + scaled sinusoidal positions (a fixed sinusoid table times one
  learned scalar, initialised at ``1/sqrt(hidden)``), then a LayerNorm and dropout
- pre-LN layers: ``x + drop(attn(LN(x)))``, ``x + drop(ffn(LN(x)))``
- FFN: ``hidden -> intermediate`` then GELU-GLU (``gelu(gate) * x`` over the two halves), so the
  way out is ``intermediate / 2 -> hidden`` (they keep ``intermediate_size`` and halve it, not scale it)
- a final LayerNorm after the last layer
- no head transform: the MLM head is the vocabulary decoder alone, tied to the token embedding
- init: normal(0, ``initializer_range``) for every linear and embedding weight, LayerNorm 1 / 0

``CrammedBertForMaskedLM.crammed`` (``model.base_model``) is the encoder body (last hidden state
after the final norm; ``hidden_states`` = the embedding output and every layer's output, before the
final norm, as Hugging Face's pre-LN models); ``.decoder`` is the head the sparse MLM loss
(:func:`workbench.models.heads.mlm_loss`) runs on the masked rows only. Importing this module
registers ``crammed_bert`` with ``AutoConfig`` and ``AutoModelForMaskedLM``, so ``save_pretrained``
/ ``from_pretrained`` round-trip.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput, MaskedLMOutput


class CrammedBertConfig(PretrainedConfig):
    """Config of crammed-BERT (defaults: the authors' ``crammed-bert.yaml``, 16 x 768)."""
    model_type = "crammed_bert"

    vocab_size: int = 32768
    hidden_size: int = 768
    num_hidden_layers: int = 16
    num_attention_heads: int = 12
    intermediate_size: int = 3072            # width of the GLU input projection; the output takes half
    hidden_act: str = "gelu"                 # the GLU's gate activation (GELU-GLU)
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 128       # rows of the sinusoid table
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    tie_word_embeddings: bool = True


class ScaledSinusoid(nn.Module):
    """Fixed sinusoidal positions times one learned scale (FLASH; Cramming's ``scaled-sinusoidal``)."""

    def __init__(self, dim: int, max_positions: int):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([dim ** -0.5]))
        self.register_buffer("table", self.sinusoid(dim, max_positions), persistent=False)

    @staticmethod
    def sinusoid(dim: int, n: int) -> torch.Tensor:
        pos = torch.arange(n, dtype=torch.float32)[:, None]
        freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
        t = torch.zeros(n, dim)
        t[:, 0::2] = torch.sin(pos * freq)
        t[:, 1::2] = torch.cos(pos * freq)
        return t

    def forward(self, length: int) -> torch.Tensor:
        return self.scale * self.table[:length]                                  # [L, H]


class CrammedEmbeddings(nn.Module):
    def __init__(self, cfg: CrammedBertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.positions = ScaledSinusoid(cfg.hidden_size, cfg.max_position_embeddings)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        h = self.word_embeddings(input_ids) + self.positions(input_ids.size(1))
        return self.dropout(self.norm(h))


class CrammedAttention(nn.Module):
    def __init__(self, cfg: CrammedBertConfig):
        super().__init__()
        self.heads = cfg.num_attention_heads
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size, bias=False)
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=False)
        self.p = cfg.attention_probs_dropout_prob

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        B, L, H = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, H // self.heads).permute(2, 0, 3, 1, 4)  # [B, A, L, d]
        mask = mask.to(q.dtype) if mask is not None else None          # bf16/fp16 under autocast
        o = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                       dropout_p=self.p if self.training else 0.0)
        return self.dense(o.transpose(1, 2).reshape(B, L, H))


class CrammedFFN(nn.Module):
    """GELU-GLU feed-forward: ``hidden -> intermediate``, gate half, ``intermediate // 2 -> hidden``."""

    def __init__(self, cfg: CrammedBertConfig):
        super().__init__()
        self.dense_in = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.dense_out = nn.Linear(cfg.intermediate_size // 2, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gate = self.dense_in(x).chunk(2, dim=-1)
        return self.dense_out(nn.functional.gelu(gate) * a)


class CrammedLayer(nn.Module):
    def __init__(self, cfg: CrammedBertConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.attn = CrammedAttention(cfg)
        self.norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.ffn = CrammedFFN(cfg)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.norm1(x), mask))
        return x + self.dropout(self.ffn(self.norm2(x)))


class CrammedBertPreTrainedModel(PreTrainedModel):
    config_class = CrammedBertConfig
    base_model_prefix = "crammed"
    supports_gradient_checkpointing = False

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, ScaledSinusoid):
            init.constant_(module.scale, module.table.size(1) ** -0.5)
            init.copy_(module.table, ScaledSinusoid.sinusoid(module.table.size(1), module.table.size(0)))


class CrammedBertModel(CrammedBertPreTrainedModel):
    """The encoder body: embeddings, pre-LN layers, final LayerNorm."""

    def __init__(self, config: CrammedBertConfig):
        super().__init__(config)
        self.embeddings = CrammedEmbeddings(config)
        self.layers = nn.ModuleList([CrammedLayer(config) for _ in range(config.num_hidden_layers)])
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None, **kwargs):
        h = self.embeddings(input_ids)                                               # [B, L, H]
        mask = None
        if attention_mask is not None:   # additive key mask, -1e4 on padding (as the authors' code)
            mask = ((1.0 - attention_mask[:, None, None, :].to(h.dtype)) * -10000.0)  # [B, 1, 1, L]
        states = [h] if output_hidden_states else None
        for layer in self.layers:
            h = layer(h, mask)
            if states is not None:
                states.append(h)
        h = self.final_norm(h)
        out = BaseModelOutput(last_hidden_state=h, hidden_states=tuple(states) if states is not None else None)
        return out if return_dict is not False else out.to_tuple()


class CrammedBertForMaskedLM(CrammedBertPreTrainedModel):
    """crammed-BERT with its MLM head: the tied vocabulary decoder (no bias, no transform)."""
    _tied_weights_keys = {"decoder.weight": "crammed.embeddings.word_embeddings.weight"}

    def __init__(self, config: CrammedBertConfig):
        super().__init__(config)
        self.crammed = CrammedBertModel(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.crammed.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.crammed.embeddings.word_embeddings = value

    def get_output_embeddings(self):
        return self.decoder

    def set_output_embeddings(self, value):
        self.decoder = value

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, output_hidden_states: bool | None = None,
                return_dict: bool | None = None, **kwargs) -> MaskedLMOutput:
        out = self.crammed(input_ids, attention_mask, output_hidden_states=output_hidden_states)
        logits = self.decoder(out.last_hidden_state)                                 # [B, L, V]
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.view(-1, logits.size(-1)).float(), labels.view(-1),
                                               ignore_index=-100)
        res = MaskedLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)
        return res if return_dict is not False else res.to_tuple()


def _register() -> None:
    from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM
    AutoConfig.register(CrammedBertConfig.model_type, CrammedBertConfig, exist_ok=True)
    AutoModel.register(CrammedBertConfig, CrammedBertModel, exist_ok=True)
    AutoModelForMaskedLM.register(CrammedBertConfig, CrammedBertForMaskedLM, exist_ok=True)


_register()
