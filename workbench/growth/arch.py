"""Per-architecture parameter maps for model growth.

Every growth method in this package (LiGO, StackBERT stacking, interpolation,
Net2Net/bert2BERT) works on one architecture-neutral *canonical* view of a
transformer, so the growth maths is written once:

``Canon.glob`` -- global tensors, keyed by

    emb.word  (V, d)      emb.pos (P, d)       emb.type (T, d)
    emb.ln.w / emb.ln.b   (d,)   LayerNorm right after the embeddings (BERT, RoBERTa)
    final.ln.w / .b       (d,)   LayerNorm after the last block (pre-LN models)
    head.dense.w (d, d) / head.dense.b (d,)     MLM-head transform (BERT, RoBERTa)
    head.ln.w / head.ln.b (d,)   MLM-head LayerNorm
    head.dec.w (V, d)     decoder / lm_head weight -- only present when *untied*
    head.dec.b (V,)       decoder bias (vocabulary sized, never grown)

``Canon.layers`` -- one dict per block, keyed by ``MODULES`` + ``.w`` / ``.b``:

    q, k, v   (a, d)   query/key/value projections, a = heads * head_dim
    o         (d, a)   attention output projection
    fi        (f, d)   FFN input ("intermediate") projection
    fo        (d, f)   FFN output projection
    ln1, ln2  (d,)     the block's two LayerNorms (pre- or post-, see below)

All matrices use the ``nn.Linear`` convention ``(out, in)``: GPT-2's ``Conv1D``
weights (stored ``(in, out)``) are transposed on the way in and out.

Fused QKV (GPT-2 ``c_attn``, GPT-NeoX ``query_key_value``) is *split* into its
Q, K and V blocks, so fused architectures get exactly the same per-module
growth operator as BERT (separate width expansions and depth coefficients for
Q, K and V) and are re-fused when writing back.  GPT-2 lays the fused output
out as ``[Q | K | V]``; GPT-NeoX interleaves per head, ``[q_h, k_h, v_h]`` for
each head ``h``; both layouts are handled here and nowhere else.

``ln1``/``ln2`` mean: BERT (post-LN) ``attention.output.LayerNorm`` /
``output.LayerNorm``; RoBERTa-PreLN ``attention.LayerNorm`` /
``intermediate.LayerNorm``; GPT-2 ``ln_1`` / ``ln_2``; GPT-NeoX
``input_layernorm`` / ``post_attention_layernorm``.  All of them act on the
residual stream, which is all the growth operators need to know.

Cost: converting to / from the canonical view is a handful of views, slices and
one ``cat``/``stack`` per fused QKV -- O(parameters) memory traffic, no maths.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from ..errors import ModelError

MODULES = ("q", "k", "v", "o", "fi", "fo", "ln1", "ln2")
"""Per-block module types, in the order the growth operators use them."""


class GrowthError(ModelError):
    """Bad growth request: shrinking, mismatched vocab, unsupported model, ... (a :class:`ModelError`)."""


@dataclass
class Canon:
    """Architecture-neutral view of a model's parameters (see module docstring)."""

    glob: dict[str, torch.Tensor]
    layers: list[dict[str, torch.Tensor]] = field(default_factory=list)


@dataclass(frozen=True)
class Arch:
    """How one HF architecture stores the canonical tensors.

    ``glob`` maps canonical keys to HF parameter names (a tuple lists tied
    aliases; the first is read, all are written).  ``layer`` maps canonical
    per-block keys to name templates with ``{i}``.  ``qkv`` names the fused
    QKV weight/bias templates and ``qkv_layout`` their layout ("blocks" or
    "heads").  ``conv1d`` lists per-block keys stored transposed.
    """

    name: str
    model_cls_name: str            # the transformers class, by name: imported on first use, not with workbench
    config_name: str               # its config class's name
    glob: dict[str, tuple[str, ...]]
    layer: dict[str, str]
    decoder_ln: str  # canonical stem of the LayerNorm feeding the decoder
    qkv: tuple[str, str] | None = None
    qkv_layout: str = "blocks"
    conv1d: frozenset = frozenset()

    @property
    def model_cls(self) -> type:
        import transformers    # on first use: importing it costs about a second
        return getattr(transformers, self.model_cls_name)


def _bert_like(name, cls: str, config: str, prefix: str, head: str, head_ln: str, layer: dict[str, str], final_ln=None) -> Arch:
    """BERT-family map: ``head`` is the MLM transform (dense + LN); decoder/bias live next to it."""
    stem = head.removesuffix(".transform")  # BERT: cls.predictions[.transform]; RoBERTa: lm_head
    g = {
        "emb.word": (f"{prefix}.embeddings.word_embeddings.weight",),
        "emb.pos": (f"{prefix}.embeddings.position_embeddings.weight",),
        "emb.type": (f"{prefix}.embeddings.token_type_embeddings.weight",),
        "emb.ln.w": (f"{prefix}.embeddings.LayerNorm.weight",),
        "emb.ln.b": (f"{prefix}.embeddings.LayerNorm.bias",),
        "head.dense.w": (f"{head}.dense.weight",),
        "head.dense.b": (f"{head}.dense.bias",),
        "head.ln.w": (f"{head}.{head_ln}.weight",),
        "head.ln.b": (f"{head}.{head_ln}.bias",),
        "head.dec.w": (f"{stem}.decoder.weight",),
        "head.dec.b": (f"{stem}.bias", f"{stem}.decoder.bias"),
    }
    if final_ln:
        g["final.ln.w"], g["final.ln.b"] = (f"{final_ln}.weight",), (f"{final_ln}.bias",)
    lay = _lay({m: f"{prefix}.encoder.layer.{{i}}.{n}" for m, n in layer.items()})
    return Arch(name, cls, config, g, lay, decoder_ln="head.ln")


def _lay(template: dict[str, str]) -> dict[str, str]:
    """``{module: HF stem}`` -> ``{module.w: stem.weight, module.b: stem.bias}``."""
    return {f"{m}.{p}": f"{n}.{'weight' if p == 'w' else 'bias'}" for m, n in template.items() for p in "wb"}


_ATTN = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
         "o": "attention.output.dense", "fi": "intermediate.dense", "fo": "output.dense"}

BERT = _bert_like("bert", "BertForMaskedLM", "BertConfig", "bert", "cls.predictions.transform", "LayerNorm",
                  {**_ATTN, "ln1": "attention.output.LayerNorm", "ln2": "output.LayerNorm"})

ROBERTA_PRELN = _bert_like("roberta-prelayernorm", "RobertaPreLayerNormForMaskedLM", "RobertaPreLayerNormConfig",
                           "roberta_prelayernorm",
                           "lm_head", "layer_norm",
                           {**_ATTN, "ln1": "attention.LayerNorm", "ln2": "intermediate.LayerNorm"},
                           final_ln="roberta_prelayernorm.LayerNorm")


GPT2 = Arch(
    "gpt2", "GPT2LMHeadModel", "GPT2Config",
    glob={"emb.word": ("transformer.wte.weight",), "emb.pos": ("transformer.wpe.weight",),
          "final.ln.w": ("transformer.ln_f.weight",), "final.ln.b": ("transformer.ln_f.bias",),
          "head.dec.w": ("lm_head.weight",)},
    layer=_lay({"o": "transformer.h.{i}.attn.c_proj", "fi": "transformer.h.{i}.mlp.c_fc",
                "fo": "transformer.h.{i}.mlp.c_proj", "ln1": "transformer.h.{i}.ln_1",
                "ln2": "transformer.h.{i}.ln_2"}),
    decoder_ln="final.ln",
    qkv=("transformer.h.{i}.attn.c_attn.weight", "transformer.h.{i}.attn.c_attn.bias"),
    qkv_layout="blocks",
    conv1d=frozenset({"o.w", "fi.w", "fo.w", "qkv.w"}),
)

NEOX = Arch(
    "gpt-neox", "GPTNeoXForCausalLM", "GPTNeoXConfig",
    glob={"emb.word": ("gpt_neox.embed_in.weight",),
          "final.ln.w": ("gpt_neox.final_layer_norm.weight",), "final.ln.b": ("gpt_neox.final_layer_norm.bias",),
          "head.dec.w": ("lm_head.weight",)},
    layer=_lay({"o": "gpt_neox.layers.{i}.attention.dense", "fi": "gpt_neox.layers.{i}.mlp.dense_h_to_4h",
                "fo": "gpt_neox.layers.{i}.mlp.dense_4h_to_h", "ln1": "gpt_neox.layers.{i}.input_layernorm",
                "ln2": "gpt_neox.layers.{i}.post_attention_layernorm"}),
    decoder_ln="final.ln",
    qkv=("gpt_neox.layers.{i}.attention.query_key_value.weight",
         "gpt_neox.layers.{i}.attention.query_key_value.bias"),
    qkv_layout="heads",
)

ARCHS = (BERT, ROBERTA_PRELN, GPT2, NEOX)


# --------------------------------------------------------------------------- config helpers


def arch_of(model) -> Arch:
    """The ``Arch`` of an HF model instance (exact class match), else GrowthError."""
    for a in ARCHS:
        if type(model).__name__ == a.model_cls_name and type(model) is a.model_cls:
            return a
    raise GrowthError(f"unsupported architecture {type(model).__name__}; supported: "
                      + ", ".join(a.model_cls_name for a in ARCHS))


def arch_for_config(config) -> Arch:
    """The ``Arch`` whose model class takes ``config`` (exact config class), else GrowthError."""
    import transformers
    for a in ARCHS:
        if type(config).__name__ == a.config_name and type(config) is getattr(transformers, a.config_name):
            return a
    raise GrowthError(f"unsupported config {type(config).__name__}; supported: "
                      + ", ".join(a.config_name for a in ARCHS))


def dims(config) -> dict[str, int]:
    """Growth-relevant sizes of a config: layers, hidden, heads, head_dim, ffn, vocab."""
    hidden, heads = config.hidden_size, config.num_attention_heads
    ffn = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * hidden
    return {"layers": config.num_hidden_layers, "hidden": hidden, "heads": heads,
            "head_dim": hidden // heads, "ffn": ffn, "vocab": config.vocab_size}


# Config fields that must agree between small and large model (beyond dims()).
_MUST_MATCH = ("model_type", "max_position_embeddings", "type_vocab_size", "hidden_act", "activation_function",
               "tie_word_embeddings", "use_parallel_residual", "rope_parameters", "attention_bias",
               "scale_attn_weights", "scale_attn_by_inverse_layer_idx", "position_embedding_type",
               "layer_norm_eps", "layer_norm_epsilon", "add_cross_attention")


def check_growable(small_config, large_config) -> tuple[dict[str, int], dict[str, int]]:
    """Validate a growth request; return ``(dims(small), dims(large))``.

    Raises GrowthError when the large model is smaller in any dimension, the
    vocabularies differ, the head dimension changes (growth adds *heads* at a
    fixed head_dim, which keeps attention scaling and rotary embeddings
    intact), or a structural config field differs (see ``_MUST_MATCH``).
    """
    if not hasattr(large_config, "model_type"):
        raise GrowthError(f"large_config must be a transformers config, got {type(large_config).__name__}")
    if getattr(small_config, "add_cross_attention", False):
        raise GrowthError("cross-attention layers are not supported")
    s, l = dims(small_config), dims(large_config)
    if s["vocab"] != l["vocab"]:
        raise GrowthError(f"vocab size mismatch: small {s['vocab']} vs large {l['vocab']}")
    for k in ("layers", "hidden", "heads", "ffn"):
        if l[k] < s[k]:
            raise GrowthError(f"cannot grow to a smaller model: {k} {s[k]} -> {l[k]}")
    for c, d in ((small_config, s), (large_config, l)):
        if d["hidden"] % d["heads"]:
            raise GrowthError(f"hidden {d['hidden']} not divisible by heads {d['heads']}")
    if s["head_dim"] != l["head_dim"]:
        raise GrowthError(f"head dim mismatch: {s['head_dim']} vs {l['head_dim']} (grow by adding heads)")
    for key in _MUST_MATCH:
        a, b = getattr(small_config, key, None), getattr(large_config, key, None)
        if a != b:
            raise GrowthError(f"config field {key!r} differs: {a!r} vs {b!r}")
    return s, l


def with_dims(config, **changes):
    """Deep copy of ``config`` with canonical dims replaced (layers/hidden/heads/ffn)."""
    c = copy.deepcopy(config)
    names = {"layers": "num_hidden_layers", "hidden": "hidden_size", "heads": "num_attention_heads"}
    for k, v in changes.items():
        if k == "ffn":
            setattr(c, "n_inner" if c.model_type == "gpt2" else "intermediate_size", v)
        else:
            setattr(c, names[k], v)
    return c


def is_tied(config) -> bool:
    return bool(getattr(config, "tie_word_embeddings", False))


# --------------------------------------------------------------------------- canonical <-> HF


def _split_qkv(w: torch.Tensor, layout: str, head_dim: int):
    """Fused QKV (out-major, (3a, ...)) -> (q, k, v), each (a, ...)."""
    if layout == "blocks":
        return w.chunk(3, dim=0)
    heads = w.shape[0] // (3 * head_dim)
    wv = w.reshape(heads, 3, head_dim, *w.shape[1:])
    return tuple(wv[:, j].reshape(heads * head_dim, *w.shape[1:]) for j in range(3))


def _fuse_qkv(q, k, v, layout: str, head_dim: int):
    if layout == "blocks":
        return torch.cat([q, k, v], dim=0)
    heads = q.shape[0] // head_dim
    parts = [t.reshape(heads, head_dim, *t.shape[1:]) for t in (q, k, v)]
    return torch.stack(parts, dim=1).reshape(3 * heads * head_dim, *q.shape[1:])


def to_canon(model, arch: Arch | None = None) -> Canon:
    """Read an HF model into a Canon (tensors are views of the model's own)."""
    arch = arch or arch_of(model)
    sd = model.state_dict(keep_vars=True)
    head_dim = dims(model.config)["head_dim"]
    glob = {}
    for key, names in arch.glob.items():
        if key == "head.dec.w" and is_tied(model.config):
            continue
        if names[0] in sd:
            glob[key] = sd[names[0]]
    layers = []
    for i in range(model.config.num_hidden_layers):
        lay = {}
        for key, tmpl in arch.layer.items():
            name = tmpl.format(i=i)
            if name in sd:
                t = sd[name]
                lay[key] = t.t() if key in arch.conv1d else t
        if arch.qkv:
            for p, tmpl in zip("wb", arch.qkv):
                name = tmpl.format(i=i)
                if name in sd:
                    t = sd[name].t() if f"qkv.{p}" in arch.conv1d else sd[name]
                    lay["q." + p], lay["k." + p], lay["v." + p] = _split_qkv(t, arch.qkv_layout, head_dim)
        layers.append(lay)
    return Canon(glob, layers)


def from_canon(canon: Canon, arch: Arch, config) -> dict[str, torch.Tensor]:
    """Canon -> ``{HF parameter name: tensor}`` (all tied aliases included).

    Differentiable: only views/cat/stack, so gradients flow back into whatever
    produced ``canon``.  Callers filter to the names a model actually owns.
    """
    head_dim = dims(config)["head_dim"]
    out = {}
    for key, t in canon.glob.items():
        for name in arch.glob[key]:
            out[name] = t
    for i, lay in enumerate(canon.layers):
        for key, tmpl in arch.layer.items():
            if key in lay:
                out[tmpl.format(i=i)] = lay[key].t() if key in arch.conv1d else lay[key]
        if arch.qkv:
            for p, tmpl in zip("wb", arch.qkv):
                if "q." + p in lay:
                    t = _fuse_qkv(lay["q." + p], lay["k." + p], lay["v." + p], arch.qkv_layout, head_dim)
                    out[tmpl.format(i=i)] = t.t() if f"qkv.{p}" in arch.conv1d else t
    return out


def load_into(model, named: dict[str, torch.Tensor]):
    """Copy ``named`` into every (deduplicated, i.e. tie-aware) parameter of ``model``."""
    missing = [n for n, _ in model.named_parameters() if n not in named]
    if missing:
        raise GrowthError(f"no value produced for parameters {missing[:5]}")
    with torch.no_grad():
        for n, p in model.named_parameters():
            if named[n].shape != p.shape:
                raise GrowthError(f"{n}: produced {tuple(named[n].shape)}, model wants {tuple(p.shape)}")
            p.copy_(named[n])
    return model
