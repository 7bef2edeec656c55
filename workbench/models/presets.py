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
import transformers

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
    # the config classes are looked up here, not imported at the top: importing one pulls in
    # transformers' auto-modeling tables, seconds on a loaded machine (`import workbench` must stay light)
    BertConfig, GPT2Config = transformers.BertConfig, transformers.GPT2Config
    GPTNeoXConfig, RobertaPreLayerNormConfig = transformers.GPTNeoXConfig, transformers.RobertaPreLayerNormConfig
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


# class names, not classes: transformers imports a model's modeling module on first attribute access,
# so `import workbench` stays free of them (they cost seconds each on a loaded machine)
_CLASSES = {"bert": "BertForMaskedLM", "prelnbert": "RobertaPreLayerNormForMaskedLM",
            "gpt2": "GPT2LMHeadModel", "pythia": "GPTNeoXForCausalLM"}


def model_class(family: str) -> type:
    """The HF model class of a preset family (imported on first use)."""
    return getattr(transformers, _CLASSES[family])


def model(preset: str, vocab_size: int, max_positions: int = 512, dropout: float = 0.1, seed: int | None = 0,
          **overrides):
    """A freshly initialised HF model of ``preset`` (deterministic under ``seed``)."""
    cfg = config(preset, vocab_size, max_positions, dropout, **overrides)
    fam = parse_preset(preset)[0]
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            m = model_class(fam)(cfg)
    else:
        m = model_class(fam)(cfg)
    m.config.workbench_preset = preset
    return m
