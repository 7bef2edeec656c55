"""LiGO: a learned linear growth operator (Wang et al., ICLR 2023).

LiGO initialises a large transformer from a pretrained small one with a
*linear* map of the small weights, ``theta_large = L_depth R_width theta_small``,
whose (few) parameters are fitted for ~100 steps of the large model's own
training loss and then thrown away.  Supported: ``BertForMaskedLM`` (post-LN),
``RobertaPreLayerNormForMaskedLM`` (pre-LN), ``GPT2LMHeadModel`` and
``GPTNeoXForCausalLM`` (see ``arch.py`` for the per-architecture maps).

Two variants (``variant=``)
    ``authors`` (the default) follows the authors' released ``ligo.py``
    (VITA-Group/LiGO): depth mixing *first* (``sum_j w_{l,j} W_j`` over the
    small layers), then width with one Q/K/V/FFN expansion set per *large*
    layer, a separate expansion for the MLM head (dense output, head
    LayerNorm, untied decoder input; a tied decoder stays the grown word
    embedding), ``stackbert_noisy`` depth rows (one-hot + U(0, 0.03) elsewhere,
    normalised to sum 1) and ``rand`` width rows (U(0, 1), normalised to sum 1,
    no consumer-side split: not function preserving).  With ``depth_noise=0``
    and one-hot (``net2net``) width rows it is exactly StackBERT (Net2Net
    width + stacking); large layer ``l`` starts from the maps of the small
    layer it stacks.  :func:`train_ligo` then uses the authors' AdamW (weight
    decay 0.1, eps 1e-6, clipping 1.0, linear decay).
    ``canon`` is the workbench's original operator, described below: width
    first per *small* layer, then depth; Net2Net init; its ``rand`` is
    Gaussian unit-norm rows (``rand_gauss`` in either variant).

Width (canon: applied first, to every small layer)
    Each dimension that grows gets an expansion ``M = [I; M_new]`` of shape
    ``(n_large, n_small)``: the identity keeps the old units, and only the
    new rows ``M_new`` are learned.  A weight ``W (out, in)`` becomes
    ``M_out W M_in^T``, a bias ``M_out b`` and a LayerNorm vector ``M g``, so
    the small weights sit in the top-left block (exactly with ``rand`` init;
    ``net2net`` divides the input columns by copy counts, see the split
    below).  Sharing (as in the paper):

    * ``res``: one expansion for the residual stream -- every embedding
      (word/position/token-type), every LayerNorm, the inputs of Q/K/V/FFN-in
      and the MLM-head dense, the outputs of O/FFN-out and of the MLM-head
      dense (the decoder is tied to the word embeddings, so the head lives in
      the residual basis too);
    * ``q``, ``k``, ``v``, ``fi``: one expansion per small layer for the
      outputs of Q, K, V and FFN-in;
    * the *input* expansions of O and FFN-out are tied to the output
      expansions of V and FFN-in of the same layer.

    Heads: hidden grows at a fixed head_dim, so growth *adds heads*.  The
    Q/K/V expansions are general ``(a_large, a_small)`` matrices: a new unit
    may mix units of different heads.  At ``net2net`` init they select whole
    heads (Q, K and V of a layer share one head map), so a new head is an
    exact copy of an old one (rotary dims of GPT-NeoX included).  With either
    init, the Q, K and V expansions of a layer start from the same rows (a new
    head's queries and keys are built from the same units) and are then
    trained separately, free to leave that structure.

    Consumer-side split: a fixed (not learned) buffer ``scale_*`` of shape
    ``(n_small,)`` multiplies the expansion where it is used on the *input*
    side (``M_in diag(scale)``).  ``net2net`` sets it to ``1/count`` of each
    old unit (Net2Net's split of outgoing weights), ``rand`` to ones.  For a
    tied decoder, which cannot be split without changing the embedding, the
    split is pushed into the LayerNorm that feeds the decoder.

Depth (applied second)
    Large layer ``l`` of module type ``m`` is ``sum_j w^m_{l,j} W^m_j`` over the
    L1 width-expanded small layers, with separate ``(L2, L1)`` coefficient
    matrices for weights (incl. LayerNorm gain) and biases (incl. LayerNorm
    shift), one pair per module type (q, k, v, o, fi, fo, ln1, ln2).
    Fused QKV (GPT-2 ``c_attn``, NeoX ``query_key_value``) is split into Q/K/V
    modules, so every architecture gets the same operator.

Inits
    depth ``stackbert_noisy``: ``w[l] = onehot(l mod L1) + N(0, depth_noise)``
    (noise default 0.01); ``interlace``: ``w[l] = onehot(floor(l L1 / L2))``
    (noise default 0).  width ``net2net``: each new row is one-hot on an
    existing unit (balanced: counts differ by at most one, all equal to
    n_large/n_small when that is an integer) with the split above; ``rand``:
    new rows ~ N(0, 1) normalised to unit L2 norm (so a new unit has the
    typical scale of an old one), no split.

What is function-preserving at init
    Exactly (up to float rounding) when the depth is unchanged with a
    one-hot depth init (``interlace``, or ``stackbert_noisy`` with
    ``depth_noise=0``), width ``net2net`` and ``hidden_large`` an integer
    multiple of ``hidden_small``: every residual unit is then copied the same
    number of times, so LayerNorm mean/variance are unchanged; FFN and head
    growth is preserving for any size.  Not preserving: any depth growth (new
    blocks add residual updates -- same for the stacking baselines), a hidden
    size that is not an integer multiple (LayerNorm statistics change), and
    ``rand`` width init.  Dropout makes train-mode outputs differ anyway.

Cost
    Operator parameters: ``(d2-d1) d1 + L1 [3 (a2-a1) a1 + (f2-f1) f1]`` for
    width plus ``16 L2 L1`` depth coefficients -- tiny next to the large model.
    One ``materialize()`` costs, for a module of large shape ``(o2, i2)``,
    about ``L1 o2 i1 (o1 + i2)`` multiply-adds for width (two matmuls per
    small layer) plus ``L2 L1 o2 i2`` for depth.  Summed over the model that
    is roughly ``L1 (d1 (d1 + d2) / d2 + L2) / L2`` MACs per large-model
    parameter, i.e. the cost of a large forward pass over a few hundred
    tokens (6x512 -> 12x768: ~430 tokens) -- small next to one training batch,
    and paid once per operator step.  Memory: autograd keeps the L1
    width-expanded layers and the L2 mixed ones, ~``(1 + L1/L2)`` x the large
    model's weights, on top of the large model's activations; the frozen
    small weights are copied (float32) into buffers, and one large "template"
    model (weights never read) is held for ``functional_call``.  A LiGO step
    therefore costs about one large-model training step, and the usual
    budget is ~100 steps.  Everything is float32.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.func import functional_call

from .arch import Canon, GrowthError, MODULES, arch_of, check_growable, from_canon, is_tied, load_into, to_canon

__all__ = ["GrowthError", "LiGO", "VARIANTS", "train_ligo", "unit_map", "source_layers"]

VARIANTS = ("authors", "canon")
DEPTH_INITS = ("stackbert_noisy", "interlace")
WIDTH_INITS = ("net2net", "rand", "rand_gauss")


def unit_map(n_old: int, n_new: int, gen: torch.Generator, group: int = 1) -> torch.Tensor:
    """Net2Net unit selection: index of the old unit each of ``n_new`` units copies.

    Units ``0..n_old-1`` map to themselves; the extra units cycle through
    random permutations of the old ones, so copy counts differ by at most one
    (and are all ``n_new / n_old`` when that divides).  ``group > 1`` selects
    whole blocks of ``group`` consecutive units (attention heads).  O(n_new).
    """
    g_old, g_new = n_old // group, n_new // group
    extra = g_new - g_old
    perms = [torch.randperm(g_old, generator=gen) for _ in range(math.ceil(extra / g_old))]
    picks = torch.cat([torch.arange(g_old), *perms])[:g_new]
    return (picks[:, None] * group + torch.arange(group)).reshape(-1)


def source_layers(n_small: int, n_large: int, how: str) -> list[int]:
    """Small layer each large layer copies: ``stack`` (l mod L1) or ``interlace`` (floor(l L1/L2))."""
    if how in ("stack", "stackbert", "stackbert_noisy"):
        return [l % n_small for l in range(n_large)]
    if how in ("interlace", "interpolation"):
        return [l * n_small // n_large for l in range(n_large)]
    raise GrowthError(f"unknown depth scheme {how!r}")


def _key(kind: str, name: str) -> str:
    return f"small_{kind}_" + name.replace(".", "_")


class LiGO(nn.Module):
    """The learned growth operator; its only parameters are the operator's.

    ``LiGO(small, large_config, depth_init, width_init, depth_noise=None, seed=0)``
    copies the small model's weights into frozen (non-persistent) buffers, so
    ``state_dict()`` holds just the operator (expansions, depth coefficients
    and the fixed split scales).  Raises GrowthError on invalid requests.
    """

    def __init__(self, small_model: nn.Module, large_config, depth_init: str | None = None,
                 width_init: str | None = None, depth_noise: float | None = None, seed: int = 0,
                 variant: str = "authors"):
        super().__init__()
        if variant not in VARIANTS:
            raise GrowthError(f"variant {variant!r} is not one of {VARIANTS}")
        depth_init = depth_init or ("stackbert_noisy")
        width_init = width_init or ("rand" if variant == "authors" else "net2net")
        if depth_init not in DEPTH_INITS or width_init not in WIDTH_INITS:
            raise GrowthError(f"depth_init in {DEPTH_INITS}, width_init in {WIDTH_INITS}; "
                              f"got {depth_init!r}, {width_init!r}")
        self.variant = variant
        self.arch = arch_of(small_model)
        self.small_dims, self.large_dims = check_growable(small_model.config, large_config)
        self.large_config = copy.deepcopy(large_config)
        s, l = self.small_dims, self.large_dims
        L1, L2 = s["layers"], l["layers"]
        gen = torch.Generator().manual_seed(seed)

        canon = to_canon(small_model, self.arch)
        self._glob_keys, self._layer_keys = list(canon.glob), list(canon.layers[0])
        for k, t in canon.glob.items():
            self.register_buffer(_key("g", k), t.detach().float().clone(), persistent=False)
        for k in self._layer_keys:
            stacked = torch.stack([lay[k].detach().float() for lay in canon.layers])
            self.register_buffer(_key("l", k), stacked, persistent=False)

        # ---- width: new rows of M = [I; M_new], plus fixed consumer-side split scales
        self.width = nn.ParameterDict()
        sizes = {"res": (s["hidden"], l["hidden"], 1), "attn": (s["hidden"], l["hidden"], s["head_dim"]),
                 "fi": (s["ffn"], l["ffn"], 1)}
        src = source_layers(L1, L2, depth_init)
        # canon: one expansion set per small layer; authors: one per large layer (large layer l starts from
        # the maps of the small layer it stacks, so noise-free one-hot inits reduce exactly to StackBERT)
        owners = list(range(L1)) if variant == "canon" else src
        self._head_exp = variant == "authors" and "head.dense.w" in self._glob_keys

        # Draw order (res, then per small layer: heads, ffn) matches baselines.net2net_width.
        if width_init == "rand" and variant == "canon":
            width_init = "rand_gauss"  # canon's ``rand`` is the workbench's original: Gaussian rows of unit norm
        init = {"net2net": self._init_width_net2net, "rand": self._init_width_rand,
                "rand_gauss": self._init_width_gauss}[width_init]
        init(sizes, gen, L1, owners)

        # ---- depth: (L2, L1) coefficients per module type, separately for weights and biases
        base = nn.functional.one_hot(torch.tensor(src), L1).float()
        self.depth_w, self.depth_b = nn.ParameterDict(), nn.ParameterDict()
        if variant == "authors":
            # one-hot + U(0, noise) elsewhere, each row normalised to sum 1 (stackbert_noisy / interlace_noisy)
            noise = (0.03 if depth_init == "stackbert_noisy" else 0.0) if depth_noise is None else depth_noise
            for m in MODULES:
                for d in (self.depth_w, self.depth_b):
                    w = torch.where(base > 0, base, noise * torch.rand(L2, L1, generator=gen))
                    d[m] = nn.Parameter(w / w.sum(-1, keepdim=True))
        else:
            noise = (0.01 if depth_init == "stackbert_noisy" else 0.0) if depth_noise is None else depth_noise
            for m in MODULES:
                for d in (self.depth_w, self.depth_b):
                    d[m] = nn.Parameter(base + noise * torch.randn(L2, L1, generator=gen))

        # Template large model for functional_call: its own weights are never read.
        template = self.arch.model_cls(copy.deepcopy(large_config)).requires_grad_(False)
        object.__setattr__(self, "_template", template)  # not a submodule: no params/state_dict
        self._param_names = [n for n, _ in template.named_parameters()]

    def _init_width_net2net(self, sizes, gen, L1, owners):
        """One-hot new rows; Q/K/V of a layer share one head map so new heads are exact copies."""
        def rows(n_old, n_new, group):
            onehot = nn.functional.one_hot(unit_map(n_old, n_new, gen, group), n_old).float()
            return onehot[n_old:], 1.0 / onehot.sum(0)

        res = rows(*sizes["res"])
        per_layer = [(rows(*sizes["attn"]), rows(*sizes["fi"])) for _ in range(L1)]
        attn = [torch.stack([per_layer[j][0][i] for j in owners]) for i in (0, 1)]
        ffn = [torch.stack([per_layer[j][1][i] for j in owners]) for i in (0, 1)]
        self._set_width(res, attn, ffn, cls=(res[0].clone(), res[1]))

    def _init_width_rand(self, sizes, gen, L1, owners):
        """The authors' ``rand``: new rows ~ U(0, 1), each normalised to sum 1; no consumer-side split."""
        n = len(owners)

        def rows(n_old, n_new, _group, reps=None):
            r = torch.rand(*(() if reps is None else (reps,)), n_new - n_old, n_old, generator=gen)
            r = r / r.sum(dim=-1, keepdim=True).clamp_min(1e-12)
            return r, torch.ones(*(() if reps is None else (reps,)), n_old)

        res = rows(*sizes["res"])
        self._set_width(res, rows(*sizes["attn"], reps=n), rows(*sizes["fi"], reps=n),
                        cls=rows(*sizes["res"]) if self._head_exp else None)

    def _init_width_gauss(self, sizes, gen, L1, owners):
        """Random new rows ~ N(0, 1), each normalised to unit L2 norm; no consumer-side split."""
        n = len(owners)

        def rows(n_old, n_new, _group, reps=None):
            r = torch.randn(*(() if reps is None else (reps,)), n_new - n_old, n_old, generator=gen)
            r = r / r.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            return r, torch.ones(*(() if reps is None else (reps,)), n_old)

        res = rows(*sizes["res"])
        self._set_width(res, rows(*sizes["attn"], reps=n), rows(*sizes["fi"], reps=n),
                        cls=rows(*sizes["res"]) if self._head_exp else None)

    def _set_width(self, res, attn, ffn, cls=None):
        """Register new-row parameters (only for dimensions that grow) and split-scale buffers."""
        self.register_buffer("scale_res", res[1])
        self.register_buffer("scale_v", attn[1])
        self.register_buffer("scale_fi", ffn[1])
        if res[0].shape[-2]:
            self.width["res"] = nn.Parameter(res[0])
        if attn[0].shape[-2]:
            for n in "qkv":
                self.width[n] = nn.Parameter(attn[0].clone())
        if ffn[0].shape[-2]:
            self.width["fi"] = nn.Parameter(ffn[0])
        if self._head_exp and cls is not None:
            self.register_buffer("scale_cls", cls[1])
            if cls[0].shape[-2]:
                self.width["cls"] = nn.Parameter(cls[0])

    # ------------------------------------------------------------------ building the large weights

    def _small(self, kind: str, key: str) -> torch.Tensor:
        return getattr(self, _key(kind, key))

    def _new(self, name: str) -> torch.Tensor | None:
        return self.width[name] if name in self.width else None

    def materialize_canon(self) -> Canon:
        """Large weights in the canonical layout (differentiable in the operator).

        ``M = [I; M_new]`` is never formed: ``M W = [W; M_new W]`` and
        ``W (M diag(s))^T = [W s, (W s) M_new^T]``, which skips the identity
        block's FLOPs (half of them for 2x width).
        """
        res = self._new("res")
        tied = is_tied(self.large_config)
        # the MLM head's own expansion (authors: fuse_width_cls) or, canon, the residual one
        cls, s_cls = (self._new("cls"), self.scale_cls) if self._head_exp else (res, self.scale_res)
        glob = {}
        for k in self._glob_keys:
            t = self._small("g", k)
            if k in ("emb.word", "emb.pos", "emb.type"):
                glob[k] = _grow_in(t, res)
            elif k == "head.dense.w":
                glob[k] = _grow_out(_grow_in(t, res, self.scale_res), cls)
            elif k == "head.dec.w":
                glob[k] = _grow_in(t, cls, s_cls)
            elif k == "head.dec.b":
                glob[k] = t  # vocabulary-sized: nothing grows
            elif tied and k.startswith(self.arch.decoder_ln + "."):
                glob[k] = _grow_vec(t * s_cls, cls)  # the tied decoder's split, pushed into its LN
            elif k.startswith("head."):
                glob[k] = _grow_vec(t, cls)  # head.dense.b, head.ln: the head's basis
            else:
                glob[k] = _grow_vec(t, res)  # LayerNorm vectors on the residual stream

        # (output expansion, input expansion, input split) per module type
        s_res, s_v, s_fi = self.scale_res, self.scale_v[:, None, :], self.scale_fi[:, None, :]
        q, k, v, fi = (self._new(n) for n in ("q", "k", "v", "fi"))
        sides = {"q": (q, res, s_res), "k": (k, res, s_res), "v": (v, res, s_res), "o": (res, v, s_v),
                 "fi": (fi, res, s_res), "fo": (res, fi, s_fi), "ln1": (res, None, None), "ln2": (res, None, None)}
        depth_first = self.variant == "authors"
        stacked = {}
        for m, (out_new, in_new, in_scale) in sides.items():
            for p, coeff in (("w", self.depth_w[m]), ("b", self.depth_b[m])):
                key = f"{m}.{p}"
                if key not in self._layer_keys:
                    continue  # e.g. NeoX with attention_bias=False
                t = self._small("l", key)  # (L1, out1, in1) or (L1, out1)
                if depth_first:  # authors: mix small layers, then widen with large layer l's expansions
                    t = torch.einsum("lj,j...->l...", coeff, t)
                if t.dim() == 3:
                    wide = _grow_out(_grow_in(t, in_new, in_scale), out_new)
                else:
                    wide = _grow_vec(t, out_new)
                # canon: widen every small layer with its own expansions, then mix
                stacked[key] = wide if depth_first else torch.einsum("lj,j...->l...", coeff, wide)
        layers = [{k: v[i] for k, v in stacked.items()} for i in range(self.large_dims["layers"])]
        return Canon(glob, layers)

    def materialize(self) -> dict[str, torch.Tensor]:
        """``{HF parameter name: tensor}`` for the large model (tie-aware, deduplicated).

        Every tensor that depends on the operator is a non-leaf in the autograd
        graph; the vocabulary-sized decoder bias (and anything that does not
        grow at all) is just the frozen small tensor.  See module docstring
        for the cost.
        """
        named = from_canon(self.materialize_canon(), self.arch, self.large_config)
        missing = [n for n in self._param_names if n not in named]
        if missing:
            raise GrowthError(f"the operator does not produce {missing[:5]}")
        return {n: named[n] for n in self._param_names}

    # ------------------------------------------------------------------ running / exporting

    def _template_on(self, device: torch.device) -> nn.Module:
        if next(self._template.parameters()).device != device:
            self._template.to(device)
        return self._template

    def train(self, mode: bool = True):
        super().train(mode)
        self._template.train(mode)
        return self

    def forward(self, **batch):
        """Run the large HF model on ``batch`` with the materialised weights (grads reach the operator)."""
        model = self._template_on(self.scale_res.device)
        return functional_call(model, self.materialize(), args=(), kwargs=batch, tie_weights=True, strict=False)

    def call(self, fn: Callable, *args, **kwargs):
        """``fn(large_model, *args, **kwargs)`` with the large model holding the materialised weights.

        For losses that are not ``model(**batch).loss`` -- e.g. a task's sparse-head MLM loss,
        which runs the encoder body and decodes only the masked rows
        (``ligo.call(task.loss, batch)``).  Differentiable in the operator, like ``forward``.
        """
        model = self._template_on(self.scale_res.device)
        params = {"model." + n: t for n, t in self.materialize().items()}
        return functional_call(_Apply(model, fn), params, args=args, kwargs=kwargs, tie_weights=True, strict=False)

    def loss(self, batch: dict, loss_fn: Callable | None = None) -> torch.Tensor:
        """Scalar loss of the large model: ``loss_fn(outputs, batch)`` or, by default, ``outputs.loss``.

        Costs one materialisation plus one large-model forward; ``backward()``
        costs the large backward plus the (small) operator backward.
        """
        out = self(**batch)
        return out.loss if loss_fn is None else loss_fn(out, batch)

    @torch.no_grad()
    def export(self) -> nn.Module:
        """A plain ``from_config`` large HF model holding the materialised weights.

        Independent of the operator (safe to save_pretrained / train).  Costs
        one materialisation and one large-model allocation.
        """
        model = self.arch.model_cls(copy.deepcopy(self.large_config))
        return load_into(model.to(self.scale_res.device), self.materialize())


class _Apply(nn.Module):
    """Holds the template as submodule ``model`` so ``functional_call`` can run any ``fn(model, ...)``."""

    def __init__(self, model: nn.Module, fn: Callable):
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self, *args, **kwargs):
        return self.fn(self.model, *args, **kwargs)


def _grow_out(w: torch.Tensor, new: torch.Tensor | None) -> torch.Tensor:
    """``[I; new] @ w`` for ``w (..., out1, in)``, ``new (..., n, out1)``."""
    return w if new is None else torch.cat([w, new @ w], dim=-2)


def _grow_vec(b: torch.Tensor, new: torch.Tensor | None) -> torch.Tensor:
    """``[I; new] @ b`` for a vector (or a stack of vectors) ``b (..., out1)``."""
    return b if new is None else _grow_out(b.unsqueeze(-1), new).squeeze(-1)


def _grow_in(w: torch.Tensor, new: torch.Tensor | None, scale: torch.Tensor | None = None) -> torch.Tensor:
    """``w @ ([I; new] diag(scale))^T`` for ``w (..., out, in1)``: the consumer side."""
    if scale is not None:
        w = w * scale
    return w if new is None else torch.cat([w, w @ new.transpose(-1, -2)], dim=-1)


def _to(batch, device):
    if isinstance(batch, dict):
        return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
    return batch


OPTIMIZER = {
    # the authors' run_grow_distributed.py + param.py defaults: AdamW, weight decay 0.1 (configs/bert_wiki.txt),
    # eps 1e-6, clipping at norm 1.0, linear decay; warmup 0 (see the card for their README's inherited 10k)
    "authors": {"weight_decay": 0.1, "eps": 1e-6, "max_grad_norm": 1.0, "schedule": "linear", "warmup_steps": 0},
    # the workbench's original operator fit: constant LR, no decay, no clipping
    "canon": {"weight_decay": 0.0, "eps": 1e-8, "max_grad_norm": None, "schedule": "constant", "warmup_steps": 0},
}


def train_ligo(ligo: LiGO, batches: Iterable[dict], steps: int = 100, lr: float = 1e-3,
               loss_fn: Callable | None = None, weight_decay: float | None = None, progress: bool = True,
               model_loss: Callable | None = None, eps: float | None = None, max_grad_norm: float | None = -1.0,
               schedule: str | None = None, warmup_steps: int | None = None) -> list[float]:
    """Fit only the operator's parameters with AdamW for ``steps`` steps; returns the losses.

    ``batches`` yields dicts of model inputs (with ``labels`` unless
    ``loss_fn`` is given); a re-iterable (e.g. a list) is cycled, an iterator
    that runs out ends training early.  ``model_loss(large_model, batch)``,
    when given, replaces the forward + ``loss_fn`` pair: it receives the large
    model itself (holding the materialised weights, see ``LiGO.call``) -- e.g.
    ``task.loss`` of a workbench task, so the operator is fitted on exactly
    the loss the large model will be trained on.  Each step costs about one
    large-model training step.

    Optimizer settings left at None (``max_grad_norm`` at -1) come from the
    operator's variant (:data:`OPTIMIZER`): ``authors`` -- weight decay 0.1,
    eps 1e-6, gradient clipping at norm 1.0, LR decaying linearly from ``lr``
    to 0 over ``steps`` after ``warmup_steps`` (0) of linear warmup;
    ``canon`` -- constant LR, no weight decay, eps 1e-8, no clipping.
    ``schedule``: ``linear`` | ``constant``; ``max_grad_norm=None`` turns clipping off.
    """
    d = OPTIMIZER[getattr(ligo, "variant", "canon")]
    weight_decay = d["weight_decay"] if weight_decay is None else weight_decay
    eps = d["eps"] if eps is None else eps
    max_grad_norm = d["max_grad_norm"] if max_grad_norm == -1.0 else max_grad_norm
    schedule = d["schedule"] if schedule is None else schedule
    warmup_steps = d["warmup_steps"] if warmup_steps is None else warmup_steps
    if schedule not in ("linear", "constant"):
        raise GrowthError(f"operator schedule {schedule!r} is not linear or constant")
    if warmup_steps < 0:
        raise GrowthError(f"warmup_steps must be >= 0, got {warmup_steps}")
    params = [p for p in ligo.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, eps=eps)

    def factor(step):  # transformers' get_linear_schedule_with_warmup, or constant (after warmup)
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        if schedule == "constant":
            return 1.0
        return max(0.0, (steps - step) / max(1, steps - warmup_steps))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    device = ligo.scale_res.device
    ligo.train()
    losses: list[float] = []
    it = iter(batches)
    try:
        from tqdm.auto import tqdm
        bar = tqdm(range(steps), desc="LiGO", disable=not progress)
    except ImportError:  # pragma: no cover
        bar = range(steps)
    for _ in bar:
        batch = next(it, None)
        if batch is None and iter(batches) is not batches:  # re-iterable: start another pass
            it = iter(batches)
            batch = next(it, None)
        if batch is None:
            break
        batch = _to(batch, device)
        loss = ligo.call(model_loss, batch) if model_loss is not None else ligo.loss(batch, loss_fn)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    return losses
