"""Growth baselines: StackBERT stacking, interpolation, bert2BERT/Net2Net FPI and AKI.

All of them are fixed (non-learned) special cases of the LiGO operator: one-hot
depth coefficients and one-hot width expansions.  They are written here as
plain index copies on the canonical view (``arch.py``), independently of
``ligo.py``, so they double as a cross-check of it.  Each costs O(parameters)
memory traffic and one large-model allocation -- no training, no FLOPs worth
counting.

Function preservation (``model.eval()``, float32):

* ``stack_depth`` / ``interpolate_depth``: **not** preserving -- every extra
  block adds a residual update (there is no zero-initialised block here).
* ``net2net_width``: exactly preserving (up to float rounding, ~1e-6) under
  the conditions it enforces: same depth, ``hidden_large = k * hidden_small``
  for an integer k, same head_dim.  Why: every residual unit is copied exactly
  k times (in random order after the original block), so a LayerNorm over
  the grown hidden sees the same mean and variance and outputs copies of the
  small outputs; every consumer of the residual stream divides its incoming
  weights by k (Net2Net's split).  Heads are duplicated whole (Q, K, V share
  the head map; O's input split by the head's copy count) and FFN units by
  an arbitrary balanced map (split in FFN-out) -- there is no LayerNorm in
  between, so any head/FFN count works.  The tied decoder cannot be split
  without changing the embeddings, so the split goes into the LayerNorm that
  feeds it (its gain and shift are divided by k); an untied decoder is split
  directly.  A hidden size that is not an integer multiple raises GrowthError,
  since duplicating some units but not others changes LayerNorm statistics.
"""

from __future__ import annotations

import torch

from .arch import Canon, GrowthError, arch_of, check_growable, from_canon, is_tied, load_into, to_canon, with_dims
from .ligo import LiGO, source_layers, train_ligo, unit_map

__all__ = ["stack_depth", "interpolate_depth", "net2net_width", "grow", "METHODS"]

METHODS = ("scratch", "stackbert", "interpolation", "net2net", "bert2bert_fpi", "bert2bert_aki", "ligo")


def _build(arch, large_config, canon: Canon):
    return load_into(arch.model_cls(large_config), from_canon(canon, arch, large_config))


@torch.no_grad()
def _depth(small, large_config, how: str):
    arch = arch_of(small)
    s, l = check_growable(small.config, large_config)
    if any(s[k] != l[k] for k in ("hidden", "heads", "ffn")):
        raise GrowthError("depth-only growth needs equal hidden/heads/ffn; use grow() to combine with net2net")
    canon = to_canon(small, arch)
    layers = [canon.layers[j] for j in source_layers(s["layers"], l["layers"], how)]
    return _build(arch, large_config, Canon(canon.glob, layers))


def stack_depth(small, large_config):
    """StackBERT: large layer l copies small layer ``l mod L1`` (the whole stack repeated)."""
    return _depth(small, large_config, "stack")


def interpolate_depth(small, large_config):
    """Interpolation: large layer l copies small layer ``floor(l L1 / L2)`` (each layer repeated in place)."""
    return _depth(small, large_config, "interlace")


@torch.no_grad()
def net2net_width(small, large_config, seed: int = 0, aki: bool = False):
    """bert2BERT function-preserving width growth (FPI); see module docstring for the exact conditions.

    ``aki=True``: bert2BERT's advanced knowledge initialisation (Chen et al., ACL 2022, Sec. 3.2): the
    *new* output units of block ``l`` (new rows of every matrix, bias and LayerNorm vector of the block)
    are taken from block ``l + 1`` (the top block uses itself), mapped and split exactly as FPI maps
    block ``l``'s own units; old units keep block ``l``'s weights.  Not function preserving (that is
    the point: it breaks the symmetry of the copies).  The embeddings and the head are FPI's.
    """
    arch = arch_of(small)
    s, l = check_growable(small.config, large_config)
    if s["layers"] != l["layers"]:
        raise GrowthError("net2net_width grows width only; use grow(..., method='net2net') to add depth")
    if l["hidden"] % s["hidden"]:
        raise GrowthError(f"function-preserving width growth needs hidden to grow by an integer factor "
                          f"({s['hidden']} -> {l['hidden']}): LayerNorm statistics change otherwise")
    gen = torch.Generator().manual_seed(seed)

    def split(idx, n_old):  # per new unit: 1 / (copies of the old unit it copies)
        return 1.0 / torch.bincount(idx, minlength=n_old).float()[idx]

    r = unit_map(s["hidden"], l["hidden"], gen)
    r_split = split(r, s["hidden"])
    dev = next(small.parameters()).device   # the map is drawn on the CPU (same draw on every device)
    r, r_split = r.to(dev), r_split.to(dev)

    def lin(w, out_idx, in_idx, in_split):  # (out, in) -> (out2, in2) with Net2Net split on the input side
        return (w[out_idx][:, in_idx] * in_split).clone()

    canon = to_canon(small, arch)
    glob = {}
    for k, t in canon.glob.items():
        t = t.detach()
        if k in ("emb.word", "emb.pos", "emb.type"):
            glob[k] = t[:, r].clone()
        elif k == "head.dense.w":
            glob[k] = lin(t, r, r, r_split)
        elif k == "head.dec.w":
            glob[k] = (t[:, r] * r_split).clone()
        elif k == "head.dec.b":
            glob[k] = t.clone()
        elif is_tied(large_config) and k.startswith(arch.decoder_ln + "."):
            glob[k] = t[r] * r_split
        else:
            glob[k] = t[r].clone()

    layers = []
    n_layers = len(canon.layers)
    for i, lay in enumerate(canon.layers):
        upper = canon.layers[min(i + 1, n_layers - 1)] if aki else lay
        h = unit_map(s["hidden"], l["hidden"], gen, group=s["head_dim"])
        f = unit_map(s["ffn"], l["ffn"], gen)
        h_split, f_split = split(h, s["hidden"]), split(f, s["ffn"])
        h, f, h_split, f_split = (x.to(dev) for x in (h, f, h_split, f_split))
        rules = {"q": (h, r, r_split), "k": (h, r, r_split), "v": (h, r, r_split),
                 "o": (r, h, h_split), "fi": (f, r, r_split), "fo": (r, f, f_split), "ln1": (r,), "ln2": (r,)}
        new = {}
        for key, t in lay.items():
            m, p = key.split(".")
            rule = rules[m]
            t = t.detach()
            out_old = t.shape[0]
            if aki and upper is not lay:  # new output units from the block above
                t = torch.cat([t, upper[key].detach()], dim=0)
                idx = rule[0].clone()
                idx[out_old:] += out_old  # unit_map keeps old units first, in place: only new rows move
                rule = (idx, *rule[1:])
            new[key] = lin(t, *rule) if p == "w" and t.dim() == 2 else t[rule[0]].clone()
        layers.append(new)
    return _build(arch, large_config, Canon(glob, layers))


def grow(small, large_config, method: str = "ligo", **kw):
    """Grow ``small`` to ``large_config`` with one of ``METHODS``; returns a plain large HF model.

    * ``scratch``: a fresh ``from_config`` model (the baseline everything is compared to).
    * ``stackbert`` / ``interpolation``: depth by stacking / interpolation; if the
      width also grows, Net2Net width growth is applied first (``seed`` kw).
    * ``net2net`` = ``bert2bert_fpi``: bert2BERT FPI width growth; if depth also grows, StackBERT
      stacking afterwards (as bert2BERT does).  ``bert2bert_aki``: the same with AKI width growth.
    * ``ligo``: build ``LiGO(small, large_config, depth_init, width_init,
      depth_noise, seed, variant)`` (``variant="authors"`` by default); if ``batches`` is given,
      fit it with ``train_ligo(..., steps, lr, loss_fn, progress, weight_decay, eps, max_grad_norm,
      schedule, warmup_steps)``; return ``export()``.
    """
    if method not in METHODS:
        raise GrowthError(f"unknown method {method!r}; choose from {METHODS}")
    arch = arch_of(small)
    s, l = check_growable(small.config, large_config)
    if method == "scratch":
        _no_kw(kw)
        return arch.model_cls(large_config)
    if method == "ligo":
        train_keys = ("batches", "steps", "lr", "loss_fn", "progress", "weight_decay", "eps", "max_grad_norm",
                      "schedule", "warmup_steps")
        train_kw = {k: kw.pop(k) for k in train_keys if k in kw}
        ligo = LiGO(small, large_config, **kw)
        batches = train_kw.pop("batches", None)
        if batches is not None:
            train_ligo(ligo, batches, **train_kw)
        return ligo.export()
    seed = kw.pop("seed", 0)
    _no_kw(kw)
    widen = any(s[k] != l[k] for k in ("hidden", "heads", "ffn"))
    deepen = s["layers"] != l["layers"]
    model = small
    if widen:
        mid = with_dims(large_config, layers=s["layers"]) if deepen else large_config
        model = net2net_width(small, mid, seed=seed, aki=method == "bert2bert_aki")
    if deepen:
        model = (interpolate_depth if method == "interpolation" else stack_depth)(model, large_config)
    if model is small:  # nothing to grow: still hand back an independent copy
        model = _build(arch, large_config, to_canon(small, arch))
    return model


def _no_kw(kw):
    if kw:
        raise GrowthError(f"unexpected keyword argument(s) {sorted(kw)} for this growth method")
