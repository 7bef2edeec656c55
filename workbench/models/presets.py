"""Models: presets, tiny to base, as plain Hugging Face models, and any HF causal or masked LM.

``model(spec)`` takes a preset name (a fresh model, seeded), a local Hugging Face directory (saved
with ``save_pretrained``), a hub id (``from_pretrained``; offline, only what the hub cache holds) or
a model object (returned as is). Encoder configs load with ``AutoModelForMaskedLM``, everything else
with ``AutoModelForCausalLM``.

=================  ======  ======  =====  ======  =========================================
preset family      layers  hidden  heads  ffn     class
=================  ======  ======  =====  ======  =========================================
``bert-*``         post-LN encoder                ``BertForMaskedLM``
``prelnbert-*``    pre-LN encoder (Cramming)      ``RobertaPreLayerNormForMaskedLM``
``crammed-*``      crammed-BERT (Cramming's arch) ``CrammedBertForMaskedLM`` (ours, :mod:`.crammed`)
``gpt2-*``         decoder                        ``GPT2LMHeadModel``
``pythia-*``       decoder (Pythia shapes)        ``GPTNeoXForCausalLM``
=================  ======  ======  =====  ======  =========================================

Sizes (``<family>-<size>``): ``tiny`` 2/128/2/512, ``mini`` 4/256/4/1024, ``small`` 4/512/8/2048,
``medium`` 8/512/8/2048, ``base`` 12/768/12/3072, ``large`` 24/1024/16/4096 (encoders only: 24hBERT's
shape). Pythia also has its published shapes
``pythia-14m`` (6/128/4), ``pythia-70m`` (6/512/8), ``pythia-160m`` (12/768/12); crammed-BERT its
paper shape ``crammed-cramming`` (16/768/12/3072). A ``crammed-*`` model's GLU FFN takes ``ffn`` in and
half of it out (the authors' ``intermed_size``), and it trains without dropout in Cramming (``dropout=0``).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from ..errors import ModelError

SIZES = {  # layers, hidden, heads, ffn
    "tiny": (2, 128, 2, 512),
    "mini": (4, 256, 4, 1024),
    "small": (4, 512, 8, 2048),
    "medium": (8, 512, 8, 2048),
    "base": (12, 768, 12, 3072),
    "large": (24, 1024, 16, 4096),     # encoders only: BERT-large, 24hBERT's shape (prelnbert-large)
    "cramming": (16, 768, 12, 3072),   # crammed-BERT only: the model of Cramming's paper (crammed-bert.yaml)
    "14m": (6, 128, 4, 512),
    "70m": (6, 512, 8, 2048),
    "160m": (12, 768, 12, 3072),
}
FAMILIES = {"bert": "encoder", "prelnbert": "encoder", "crammed": "encoder", "gpt2": "decoder", "pythia": "decoder"}
_SIZE_FAMILIES = {"large": ("bert", "prelnbert", "crammed"), "cramming": ("crammed",)}   # sizes only some families have

#: model types of bidirectional encoders trained with masked LM (BERT, RoBERTa, DistilBERT, ALBERT,
#: ELECTRA, DeBERTa families and their relatives)
ENCODER_TYPES = frozenset({
    "bert", "roberta", "roberta-prelayernorm", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text",
    "distilbert", "albert", "electra", "deberta", "deberta-v2", "megatron-bert", "ernie", "nezha", "mpnet",
    "roformer", "rembert", "modernbert", "convbert", "squeezebert", "mobilebert", "funnel", "layoutlm",
    "xmod", "esm", "nomic_bert", "eurobert", "neobert", "crammed_bert"})
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_DROPOUTS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "resid_pdrop", "embd_pdrop", "attn_pdrop",
             "hidden_dropout", "attention_dropout", "dropout", "attention_dropout_prob", "summary_first_dropout")


def presets() -> list[str]:
    out = []
    for fam in FAMILIES:
        for size in SIZES:
            if size[0].isdigit() and fam != "pythia":
                continue
            if fam not in _SIZE_FAMILIES.get(size, (fam,)):
                continue
            out.append(f"{fam}-{size}")
    return out


def parse_preset(preset: str) -> tuple[str, tuple[int, int, int, int]]:
    fam, _, size = preset.partition("-")
    if fam not in FAMILIES or size not in SIZES or preset not in presets():
        raise ModelError(f"unknown model preset {preset!r}; choose one of {', '.join(presets())}")
    return fam, SIZES[size]


def hub_offline() -> bool:
    """Whether the Hugging Face hub may not be contacted (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    import huggingface_hub.constants as hc
    env = any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
              for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return env or bool(hc.HF_HUB_OFFLINE)


def _hub_cached(repo_id: str, filename: str = "config.json") -> bool:
    from huggingface_hub import try_to_load_from_cache
    try:
        return isinstance(try_to_load_from_cache(repo_id, filename), str)
    except Exception:       # a malformed id: not cached
        return False


def check_spec(spec: str, what: str = "model") -> str:
    """Validate a ``model`` parameter without loading anything; returns its kind.

    ``"preset"`` (a name of :func:`presets`), ``"directory"`` (an existing directory with a
    ``config.json``), ``"hub"`` (a hub id, accepted when the hub may be contacted or its cache holds
    the config). Anything else is a :class:`ModelError` naming what was tried.
    """
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str) or not spec:
        raise ModelError(f"{what} must be a preset name, a Hugging Face directory or a hub id, not {spec!r}")
    if spec in presets():
        return "preset"
    p = Path(spec).expanduser()
    if p.is_dir():
        if (p / "config.json").is_file():
            return "directory"
        raise ModelError(f"{what} directory {spec!r} has no config.json: save the model there with "
                         f"model.save_pretrained(DIR)")
    choose = f"choose one of {', '.join(presets())}"
    if p.exists():
        raise ModelError(f"{what} {spec!r} is a file; give a preset ({choose}) or a Hugging Face model directory")
    if not _HUB_ID.match(spec) or spec.count("/") > 1:
        raise ModelError(f"unknown model preset {spec!r} and no such directory; {choose}, or give a Hugging Face "
                         f"model directory or hub id")
    if hub_offline() and not _hub_cached(spec):
        raise ModelError(f"unknown model preset {spec!r}, not a local directory, and not loadable as a hub id: "
                         f"the hub is offline (HF_HUB_OFFLINE) and its cache does not hold it; {choose}")
    return "hub"


def is_encoder(spec_or_model) -> bool:
    """Whether a preset name, model directory, hub id, HF config or model is a (masked-LM) encoder."""
    if isinstance(spec_or_model, os.PathLike):
        spec_or_model = os.fspath(spec_or_model)
    if isinstance(spec_or_model, str):
        if spec_or_model in presets():
            return FAMILIES[parse_preset(spec_or_model)[0]] == "encoder"
        return is_encoder(load_config(spec_or_model))
    obj = spec_or_model
    name = type(obj).__name__
    if name.endswith("ForMaskedLM"):
        return True
    if name.endswith(("ForCausalLM", "LMHeadModel")):
        return False
    cfg = getattr(obj, "config", obj)
    if getattr(cfg, "is_decoder", False):
        return False
    if getattr(cfg, "model_type", None) in ENCODER_TYPES:
        return True
    return any(a.endswith("ForMaskedLM") for a in (getattr(cfg, "architectures", None) or ()))


def config(preset: str, vocab_size: int, max_positions: int = 512, dropout: float = 0.1, **overrides):
    """The HF config of ``preset`` (``overrides`` set any config attribute, e.g. ``num_hidden_layers``)."""
    fam, (L, H, A, I) = parse_preset(preset)
    # the config classes are looked up here, not imported at the top: importing one pulls in
    # transformers' auto-modeling tables, seconds on a loaded machine (`import workbench` must stay light)
    import transformers
    BertConfig, GPT2Config = transformers.BertConfig, transformers.GPT2Config
    GPTNeoXConfig, RobertaPreLayerNormConfig = transformers.GPTNeoXConfig, transformers.RobertaPreLayerNormConfig
    if vocab_size < 16:
        raise ModelError(f"vocab_size {vocab_size} is too small")
    if fam == "crammed":
        from .crammed import CrammedBertConfig       # ours; imported on first use like the HF classes
        cfg = CrammedBertConfig(vocab_size=vocab_size, hidden_size=H, num_hidden_layers=L, num_attention_heads=A,
                                intermediate_size=I, max_position_embeddings=max_positions,
                                hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, pad_token_id=0)
    elif fam in ("bert", "prelnbert"):
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
    _override(cfg, preset, overrides)
    return cfg


def _override(cfg, name: str, overrides: dict) -> None:
    for k, v in overrides.items():
        if not hasattr(cfg, k):
            raise ModelError(f"config of {name!r} has no attribute {k!r}")
        setattr(cfg, k, v)


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


def load_config(spec: str):
    """The HF config of a model directory or hub id (validated by :func:`check_spec` first)."""
    kind = check_spec(spec)
    if kind == "preset":
        raise ModelError(f"{spec!r} is a preset: build its config with workbench.models.config")
    _register_own(spec, kind)
    import transformers
    try:
        return transformers.AutoConfig.from_pretrained(spec)
    except (OSError, ValueError, KeyError) as e:
        where = "directory" if kind == "directory" else "hub id"
        raise ModelError(f"cannot load the config of model {where} {spec!r}: {_first_line(e)}") from None


def _register_own(spec: str, kind: str) -> None:
    """Register our own model types (crammed-BERT) with transformers' Auto classes before a saved
    directory of one loads (read from its config.json, so other models do not pay for the import)."""
    if kind != "directory":
        return
    import json
    try:
        mt = json.loads((Path(spec).expanduser() / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return
    if mt == "crammed_bert":
        from . import crammed  # noqa: F401  (registers on import)


# class names, not classes: transformers imports a model's modeling module on first attribute access,
# so `import workbench` stays free of them (they cost seconds each on a loaded machine)
_CLASSES = {"bert": "BertForMaskedLM", "prelnbert": "RobertaPreLayerNormForMaskedLM",
            "crammed": "CrammedBertForMaskedLM", "gpt2": "GPT2LMHeadModel", "pythia": "GPTNeoXForCausalLM"}


def model_class(family: str) -> type:
    """The HF model class of a preset family (imported on first use)."""
    if family == "crammed":
        from . import crammed
        return getattr(crammed, _CLASSES[family])
    import transformers
    return getattr(transformers, _CLASSES[family])


def _seeded(seed: int | None, build):
    if seed is None:
        return build()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def load_pretrained(spec: str, dropout: float | None = None, seed: int | None = 0, **overrides):
    """A HF causal or masked LM from a directory or hub id (``from_pretrained``), in training mode."""
    cfg = load_config(spec)
    _override(cfg, spec, overrides)
    if dropout is not None:
        for k in _DROPOUTS:
            if isinstance(getattr(cfg, k, None), float):
                setattr(cfg, k, dropout)
    enc = is_encoder(cfg)
    auto = "AutoModelForMaskedLM" if enc else "AutoModelForCausalLM"
    import transformers
    try:
        m = _seeded(seed, lambda: getattr(transformers, auto).from_pretrained(spec, config=cfg))
    except ValueError as e:
        if "Unrecognized configuration class" in str(e):
            raise ModelError(f"model {spec!r} (model_type {cfg.model_type!r}) is not a model {auto} loads: "
                             f"only causal and masked language models are supported") from None
        raise ModelError(f"cannot load model {spec!r}: {_first_line(e)}") from None
    except OSError as e:
        raise ModelError(f"cannot load the weights of model {spec!r}: {_first_line(e)}") from None
    except RuntimeError as e:
        if "mismatch" not in str(e):
            raise
        what = f" (overrides {', '.join(sorted(overrides))})" if overrides else ""
        raise ModelError(f"the saved weights of model {spec!r} do not fit its config{what}: shapes differ") from None
    return m.train()


def model(spec, vocab_size: int | None = None, max_positions: int = 512, dropout: float | None = None,
          seed: int | None = 0, **overrides):
    """A HF language model from ``spec``: a preset, a directory, a hub id or a model object.

    A preset is built fresh (deterministic under ``seed``, ``dropout`` 0.1 unless given) and needs
    ``vocab_size``; a directory or hub id is loaded with ``from_pretrained`` (``dropout`` and
    ``overrides`` set config attributes; its vocabulary is the one it was saved with); a model
    object is returned as is.
    """
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str):
        if not isinstance(spec, torch.nn.Module) or not hasattr(spec, "config"):
            raise ModelError(f"model must be a preset name, a Hugging Face directory, a hub id or a Hugging Face "
                             f"model object, not {type(spec).__name__}")
        if overrides or vocab_size is not None:
            raise ModelError("a model object is used as is: vocab_size and config overrides apply to presets, "
                             "directories and hub ids only")
        return spec
    kind = check_spec(spec)
    if kind != "preset":
        if vocab_size is not None:
            raise ModelError(f"vocab_size={vocab_size} applies to presets only; model {spec!r} keeps the vocabulary "
                             f"it was saved with")
        return load_pretrained(spec, dropout=dropout, seed=seed, **overrides)
    if vocab_size is None:
        raise ModelError(f"model preset {spec!r} needs vocab_size= (the tokenizer's size, len(tokenizer))")
    cfg = config(spec, vocab_size, max_positions, 0.1 if dropout is None else dropout, **overrides)
    fam = parse_preset(spec)[0]
    m = _seeded(seed, lambda: model_class(fam)(cfg))
    m.config.workbench_preset = spec
    return m


def embedding_rows(m) -> int:
    """Rows of the model's input embedding table (the largest token id + 1 it accepts)."""
    emb = m.get_input_embeddings() if hasattr(m, "get_input_embeddings") else None
    return int(emb.num_embeddings) if emb is not None else int(m.config.vocab_size)


def max_positions(m) -> int | None:
    """The longest sequence the model's position table holds (``None``: no limit declared).

    A learned table counts its rows (less the padding offset RoBERTa-style models start at); a
    rotary model its ``max_position_embeddings``.
    """
    cfg = getattr(m, "config", m)
    declared = next((getattr(cfg, k) for k in ("n_positions", "max_position_embeddings", "n_ctx", "max_seq_len",
                                               "max_sequence_length") if isinstance(getattr(cfg, k, None), int)), None)
    if isinstance(m, torch.nn.Module):
        for name, mod in m.named_modules():
            leaf = name.rsplit(".", 1)[-1]
            if isinstance(mod, torch.nn.Embedding) and leaf in ("wpe", "position_embeddings", "embed_positions"):
                offset = getattr(mod, "offset", 0) or 0
                if getattr(cfg, "model_type", "") in ENCODER_TYPES and mod.padding_idx is not None:
                    offset = mod.padding_idx + 1       # RoBERTa: positions start after the padding index
                return int(mod.num_embeddings) - int(offset)
    if declared is not None and getattr(cfg, "model_type", "") in ("roberta", "roberta-prelayernorm", "xlm-roberta",
                                                                   "camembert", "xlm-roberta-xl", "data2vec-text"):
        declared -= (getattr(cfg, "pad_token_id", 1) or 0) + 1
    return declared


def check_seq_len(m, seq_len: int, name: str = "the model") -> None:
    """Refuse ``seq_len`` above the model's position table up front (it would fail as a raw
    ``IndexError`` inside the embedding at the first step)."""
    limit = max_positions(m)
    if limit is not None and seq_len > limit:
        raise ModelError(f"seq_len {seq_len} is above the position table of {name}: it holds {limit} positions "
                         f"(use seq_len <= {limit})")
