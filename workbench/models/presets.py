"""Model presets, tiny to base, as plain Hugging Face models.

=================  ======  ======  =====  ======  =========================================
preset family      layers  hidden  heads  ffn     class
=================  ======  ======  =====  ======  =========================================
``bert-*``         post-LN encoder                ``BertForMaskedLM``
``prelnbert-*``    pre-LN encoder (Cramming)      ``RobertaPreLayerNormForMaskedLM``
``gpt2-*``         decoder                        ``GPT2LMHeadModel``
``pythia-*``       decoder (Pythia shapes)        ``GPTNeoXForCausalLM``
=================  ======  ======  =====  ======  =========================================

Sizes (``<family>-<size>``): ``tiny`` 2/128/2/512, ``mini`` 4/256/4/1024, ``small`` 4/512/8/2048,
``medium`` 8/512/8/2048, ``base`` 12/768/12/3072. Pythia also has its published shapes
``pythia-14m`` (6/128/4), ``pythia-70m`` (6/512/8), ``pythia-160m`` (12/768/12).
"""
from __future__ import annotations

import torch
from transformers import (BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel, GPTNeoXConfig,
                          GPTNeoXForCausalLM, RobertaPreLayerNormConfig, RobertaPreLayerNormForMaskedLM)

from ..errors import ModelError

SIZES = {  # layers, hidden, heads, ffn
    "tiny": (2, 128, 2, 512),
    "mini": (4, 256, 4, 1024),
    "small": (4, 512, 8, 2048),
    "medium": (8, 512, 8, 2048),
    "base": (12, 768, 12, 3072),
    "14m": (6, 128, 4, 512),
    "70m": (6, 512, 8, 2048),
    "160m": (12, 768, 12, 3072),
}
FAMILIES = {"bert": "encoder", "prelnbert": "encoder", "gpt2": "decoder", "pythia": "decoder"}


def presets() -> list[str]:
    out = []
    for fam in FAMILIES:
        for size in SIZES:
            if size[0].isdigit() and fam != "pythia":
                continue
            out.append(f"{fam}-{size}")
    return out


def parse_preset(preset: str) -> tuple[str, tuple[int, int, int, int]]:
    fam, _, size = preset.partition("-")
    if fam not in FAMILIES or size not in SIZES or preset not in presets():
        raise ModelError(f"unknown model preset {preset!r}; choose one of {', '.join(presets())}")
    return fam, SIZES[size]


def is_encoder(preset_or_model) -> bool:
    if isinstance(preset_or_model, str):
        return FAMILIES[parse_preset(preset_or_model)[0]] == "encoder"
    return preset_or_model.config.model_type in ("bert", "roberta-prelayernorm", "roberta")


def config(preset: str, vocab_size: int, max_positions: int = 512, dropout: float = 0.1, **overrides):
    """The HF config of ``preset`` (``overrides`` set any config attribute, e.g. ``num_hidden_layers``)."""
    fam, (L, H, A, I) = parse_preset(preset)
    if vocab_size < 16:
        raise ModelError(f"vocab_size {vocab_size} is too small")
    if fam in ("bert", "prelnbert"):
        cls = BertConfig if fam == "bert" else RobertaPreLayerNormConfig
        extra = {} if fam == "bert" else {"pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3}
        cfg = cls(vocab_size=vocab_size, hidden_size=H, num_hidden_layers=L, num_attention_heads=A,
                  intermediate_size=I, max_position_embeddings=max_positions + (2 if fam == "prelnbert" else 0),
                  hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, type_vocab_size=1, **extra)
    elif fam == "gpt2":
        cfg = GPT2Config(vocab_size=vocab_size, n_embd=H, n_layer=L, n_head=A, n_inner=I, n_positions=max_positions,
                         resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout, bos_token_id=0, eos_token_id=0)
    else:
        cfg = GPTNeoXConfig(vocab_size=vocab_size, hidden_size=H, num_hidden_layers=L, num_attention_heads=A,
                            intermediate_size=I, max_position_embeddings=max_positions, hidden_dropout=dropout,
                            attention_dropout=dropout, rotary_pct=0.25, use_parallel_residual=True,
                            tie_word_embeddings=False, bos_token_id=0, eos_token_id=0)
    for k, v in overrides.items():
        if not hasattr(cfg, k):
            raise ModelError(f"config of {preset!r} has no attribute {k!r}")
        setattr(cfg, k, v)
    return cfg


_CLASSES = {"bert": BertForMaskedLM, "prelnbert": RobertaPreLayerNormForMaskedLM,
            "gpt2": GPT2LMHeadModel, "pythia": GPTNeoXForCausalLM}


def model(preset: str, vocab_size: int, max_positions: int = 512, dropout: float = 0.1, seed: int | None = 0,
          **overrides):
    """A freshly initialised HF model of ``preset`` (deterministic under ``seed``)."""
    cfg = config(preset, vocab_size, max_positions, dropout, **overrides)
    fam = parse_preset(preset)[0]
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            m = _CLASSES[fam](cfg)
    else:
        m = _CLASSES[fam](cfg)
    m.config.workbench_preset = preset
    return m


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
