"""MATES: oracle influence probing, Gumbel top-k selection and the staged sampler.

MATES (Yu, Das, Xiong, NeurIPS 2024, "Model-Aware Data Selection with Data
Influence Models") selects pretraining data with the *current* model's
preferences.  Every so often it (1) measures the oracle influence of a few
thousand candidates on the current checkpoint, (2) fits a small data-influence
model on those (candidate, influence) pairs (`influence_model.InfluenceModel`),
(3) predicts influence for the whole pool and (4) samples the next stage's
training data with Gumbel top-k.  This module holds (1) and (4), and
`MatesSampler`, the :class:`~workbench.training.hooks.Sampler` that runs the
four every ``stage_steps`` steps inside :func:`workbench.train`.

What "influence" means here
---------------------------
For a candidate token block ``x`` and a reference batch ``D_ref``::

    influence(x) = L_ref(theta') - L_ref(theta),   theta' = one optimizer step on x

``theta`` is the current checkpoint, ``theta'`` is what the *same* optimizer
(same type, hyperparameters, learning rate and state -- AdamW's exp_avg,
exp_avg_sq and step; SGD's momentum buffer) would produce after one step on
the LM loss of ``x`` alone, and ``L_ref`` is the mean LM loss on ``D_ref``.
Negative influence = training on ``x`` right now lowers the reference loss,
i.e. ``x`` is useful.  It is an exact, local, one-step quantity: no Taylor
expansion, no Hessian.  Probing always runs in eval mode (dropout off), and the
model's train/eval mode, parameters, gradients and optimizer state are
restored afterwards.

Two probers, same numbers
-------------------------
* `naive_probe` is the MATES reference procedure done in-process: per
  candidate restore the checkpoint and optimizer state, take a real
  ``optimizer.step()``, evaluate ``L_ref``.  Cost per candidate: one
  forward+backward on ``T`` tokens, one optimizer step, one forward on
  ``R*T`` reference tokens, plus the Python/dispatch overhead of each of them.
* `batched_probe` handles ``chunk_size`` candidates at a time: per-sample
  gradients with one ``vmap(grad(functional_call))``, the optimizer update
  written out in closed form for all of them at once (torch's formula, op by
  op), then the reference loss of the updated parameter sets in forwards
  vmapped over the stacked parameters.  Same arithmetic, values agree to
  ~1e-6 in float32.  Memory: about ``3 * chunk_size`` copies of the
  parameters plus ``eval_chunk_size`` times the activations of one reference
  forward (the ``R*T*V`` logits dominate).

Where the time goes (and what batching can buy).  Both probers do the same
FLOPs: ``3*T`` token-forwards for the candidate's forward+backward plus
``R*T`` for the reference loss, every one with *different* weights, so no
exact method can share work between candidates (a linearised/Taylor shortcut
could, but it is not the oracle).  Batching removes per-candidate overhead
(Python and dispatch, ``optimizer.step``'s per-tensor loop, state restores,
small poorly-threaded matmuls).  The reference forward of the naive loop is
already one ``[R*T, h]`` batch and stays compute-bound either way, so the gain
is large for tiny models / tiny reference batches and tends to 1x as ``R``
grows.  Measured on a (shared) 2-core CPU, one thread, 2-layer h=128
V=2048 GPT-2, T=64: about 1.5x for R=1..8; a h=64 V=512 T=32 model: ~4.5x
(``python -m workbench.bench.probe``).  Even at the matmul peak, the FLOPs
alone cap the default bench below ~5x.  On a GPU the small naive kernels
leave the device idle and batching matters far more.

Supported optimizers: ``torch.optim.SGD`` (momentum, dampening, nesterov,
weight decay, maximize) and ``torch.optim.AdamW`` / ``torch.optim.Adam``
(bias correction, eps, decoupled or L2 weight decay, maximize;
``amsgrad=True`` is rejected).  Anything else raises `MatesError`.

The reference task
------------------
`reference_blocks` turns the reference task into the ``[R, T]`` token blocks
the probes evaluate: a corpus spec (any ``wb.corpus`` spec: a ``.txt`` file, a
``.jsonl``/``.json``/``.csv``/``.parquet`` file, a datasets directory,
``pydocs:pkg``), a :class:`~workbench.data.corpus.Corpus` (e.g. a domain held
out of the training corpus), or blocks already tokenized, packed into
``seq_len``-token blocks with the run's tokenizer (as the training data is).
Only causal LMs are probed: `MatesSampler` refuses masked-LM (encoder) models.
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Sequence

import numpy as np
import torch
from torch.func import functional_call, grad, vmap

from ..config import check
from ..data.batching import CLMTask
from ..data.corpus import Corpus, corpus as load_corpus
from ..errors import ConfigError
from ..training.hooks import EpochStream
from .influence_model import InfluenceModel, MatesError, RidgeInfluence, influence_model_from_state


class RefBatch:
    """A reference batch whose loss counts only some tokens: ``ids`` ``[R, T]`` and ``labels`` ``[R, T]``
    (``-100`` where a token is not scored, as HF models read ``labels``).

    `last_word_batch` builds the LAMBADA-style one (only each item's last word is scored: the
    authors' probe target, ``src/select_data/probe_oracle_data_influence.py`` evaluates LAMBADA's
    last-word loss). A plain ``[R, T]`` tensor means every next token is scored (the full-text loss).
    Both probers and `reference_loss` take either.
    """

    def __init__(self, ids: torch.Tensor, labels: torch.Tensor):
        ids, labels = torch.as_tensor(ids), torch.as_tensor(labels)
        if ids.dim() != 2 or ids.shape != labels.shape:
            raise MatesError(f"RefBatch: ids and labels must be [R, T] tensors of one shape, got "
                             f"{tuple(ids.shape)} and {tuple(labels.shape)}")
        if not bool((labels[:, 1:] != -100).any()):
            raise MatesError("RefBatch: no scored token (every label is -100 past the first position)")
        self.ids, self.labels = ids.long(), labels.long()

    def to(self, device) -> "RefBatch":
        return RefBatch(self.ids.to(device), self.labels.to(device))

    def numel(self) -> int:
        return self.ids.numel()

    def __len__(self) -> int:
        return len(self.ids)


def last_word_batch(items: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int = 0) -> RefBatch:
    """LAMBADA-style reference batch from ``(context ids, last-word ids)`` items: each row is the
    context followed by the word, right-padded with ``pad_id``; only the word's tokens are scored."""
    items = [(list(c), list(t)) for c, t in items]
    if not items or any(not c or not t for c, t in items):
        raise MatesError("last_word_batch: need items with a non-empty context and target")
    L = max(len(c) + len(t) for c, t in items)
    ids = torch.full((len(items), L), int(pad_id), dtype=torch.long)
    labels = torch.full((len(items), L), -100, dtype=torch.long)
    for i, (c, t) in enumerate(items):
        ids[i, :len(c) + len(t)] = torch.tensor(c + t)
        labels[i, len(c):len(c) + len(t)] = torch.tensor(t)
    return RefBatch(ids, labels)


def _ref_parts(ref_batch: Any, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(input ids, labels) of a reference batch on ``dev``: labels are the ids for a plain block tensor."""
    if isinstance(ref_batch, RefBatch):
        ids = _as_blocks(ref_batch.ids, "ref_batch", dev)
        return ids, ref_batch.labels.to(dev)
    ids = _as_blocks(ref_batch, "ref_batch", dev)
    return ids, ids


def _clip_(params: list[torch.Tensor], max_norm: float | None) -> None:
    """``clip_grad_norm_`` of the training loop (same call, so the naive prober matches it exactly)."""
    if max_norm:
        torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], max_norm)

__all__ = ["InfluenceModel", "MatesError", "MatesSampler", "RefBatch", "RidgeInfluence", "batched_probe", "gumbel_topk",
           "last_word_batch", "naive_probe", "reference_blocks", "reference_loss", "resolve_prober"]


# --------------------------------------------------------------------------- helpers


def _as_blocks(x: Any, what: str, device: torch.device) -> torch.Tensor:
    """Stack token blocks into a ``[N, T]`` int64 tensor (blocks must share one length)."""
    if isinstance(x, torch.Tensor):
        t = x
    else:
        items = list(x)
        if not items:
            raise MatesError(f"{what}: empty")
        try:
            t = torch.stack([torch.as_tensor(b) for b in items])
        except RuntimeError as e:  # ragged
            raise MatesError(f"{what}: token blocks must all have the same length ({e})") from None
    if t.dim() == 1 and what == "ref_batch":
        t = t.unsqueeze(0)
    if t.dim() != 2:
        raise MatesError(f"{what}: expected a [N, T] tensor of token ids, got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] < 2:
        raise MatesError(f"{what}: need at least one block of >= 2 tokens, got shape {tuple(t.shape)}")
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise MatesError(f"{what}: token ids must be integers, got {t.dtype}")
    return t.to(device=device, dtype=torch.long)


def _loss_of(out: Any) -> torch.Tensor:
    loss = getattr(out, "loss", None)
    if loss is None and isinstance(out, dict):
        loss = out.get("loss")
    if loss is None and isinstance(out, (tuple, list)):
        loss = out[0]
    if loss is None:
        raise MatesError("model(input_ids=..., labels=...) returned no loss")
    return loss


def reference_blocks(reference: Any, tokenizer, seq_len: int, max_blocks: int | None = 256, seed: int = 0,
                     sample_seed: int = 1234) -> torch.Tensor:
    """The reference task as ``[R, seq_len]`` int64 token blocks, tokenized with ``tokenizer``.

    ``reference`` is a corpus spec (a text file, ``.jsonl``/``.json``/``.csv``/``.parquet``, a datasets
    directory, ``pydocs:pkg``: see :func:`workbench.corpus`), a :class:`Corpus` (such as a domain held
    out of the training corpus), or token blocks already made (a ``[R, T]`` tensor or a sequence of
    ``[T]`` blocks, returned as they are, validated). Documents are packed into blocks of ``seq_len``
    tokens exactly as a :class:`~workbench.data.batching.CLMTask` packs training data (``seed`` is its
    seed); when there are more than ``max_blocks`` blocks, a fixed random sample of ``max_blocks``
    (drawn with ``sample_seed``) is kept. Raises :class:`CorpusError` / :class:`MatesError`, naming the
    reference, when it cannot be read or yields no block.
    """
    if isinstance(reference, torch.Tensor) or (isinstance(reference, (list, tuple)) and reference
                                               and not isinstance(reference[0], str)):
        return _as_blocks(reference, "reference", torch.device("cpu"))
    if isinstance(reference, str):
        c = load_corpus(reference)
    elif isinstance(reference, Corpus):
        c = reference
    else:
        raise MatesError(f"reference must be a corpus spec, a text file, a Corpus or [R, T] token blocks, "
                         f"got {type(reference).__name__}")
    if max_blocks is not None and max_blocks < 1:
        raise MatesError(f"max_blocks must be >= 1, got {max_blocks}")
    ids = torch.from_numpy(CLMTask(c, tokenizer, seq_len, seed=seed).input_ids.astype(np.int64))
    if max_blocks is not None:
        g = torch.Generator().manual_seed(sample_seed)
        ids = ids[torch.randperm(len(ids), generator=g)[:max_blocks]]      # a fixed sample of <= max_blocks
    return ids


def is_masked_lm(model) -> bool:
    """True for masked-LM (encoder) models, whose ``labels`` loss is not a next-token loss MATES can probe."""
    name = type(model).__name__
    if "CausalLM" in name or "LMHeadModel" in name:
        return False
    if "MaskedLM" in name or name.endswith("ForPreTraining"):
        return True
    cfg = getattr(model, "config", None)
    if cfg is None:
        return False
    if getattr(cfg, "is_encoder_decoder", False):
        return True
    try:
        from ..models import is_encoder
        return bool(is_encoder(model))
    except Exception:       # not one of the families the presets know: judge by the class name alone
        return False


def reference_loss(model: torch.nn.Module, ref_batch: Any) -> float:
    """Mean LM loss of ``model`` on ``ref_batch`` (``[R, T]``), without gradients."""
    ref, lab = _ref_parts(ref_batch, next(model.parameters()).device)
    with torch.no_grad():
        return float(_loss_of(model(input_ids=ref, labels=lab)))


class _UpdateRule:
    """One optimizer step written out in closed form, batched over candidates.

    Validates the optimizer on construction (raises `MatesError`).  ``apply``
    takes the current (unbatched) parameters and a dict of per-candidate
    gradients ``[C, *shape]`` and returns the per-candidate updated parameters,
    replaying torch's single-tensor implementation op by op so that the results
    match ``optimizer.step()`` to rounding.
    """

    def __init__(self, optimizer: torch.optim.Optimizer):
        kind = type(optimizer)
        if kind is torch.optim.SGD:
            self.kind = "sgd"
        elif kind in (torch.optim.AdamW, torch.optim.Adam):
            self.kind = "adam"
        else:
            raise MatesError(f"unsupported optimizer {kind.__name__}: probing supports torch.optim.SGD and AdamW/Adam")
        self.optimizer = optimizer
        self.group_of: dict[int, dict] = {}
        for g in optimizer.param_groups:
            if self.kind == "adam" and g.get("amsgrad", False):
                raise MatesError("amsgrad=True is not supported")
            for p in g["params"]:
                self.group_of[id(p)] = g

    def owns(self, p: torch.Tensor) -> bool:
        return id(p) in self.group_of

    def apply(self, p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Updated copies ``[C, *p.shape]`` of ``p``; consumes ``g`` (reused as the output buffer).

        Same op sequence as torch's single-tensor SGD/Adam(W) step; the result
        is written into ``g``'s memory because fresh multi-MB CPU allocations
        (page faults) cost about as much as the arithmetic itself.
        """
        group, state = self.group_of[id(p)], self.optimizer.state.get(p, {})
        lr, wd = float(group["lr"]), float(group["weight_decay"])
        p = p.detach()
        g = g.contiguous()  # vmap may hand back expanded (stride-0) gradients
        if group.get("maximize", False):
            g.neg_()
        if self.kind == "sgd":
            if wd != 0:
                g.add_(p, alpha=wd)
            mom = float(group["momentum"])
            if mom != 0:
                buf = state.get("momentum_buffer")
                if buf is not None:  # first step: the buffer *is* the gradient
                    buf = torch.add(buf * mom, g, alpha=1 - float(group["dampening"]))
                    if not group["nesterov"]:
                        g = buf
                    else:
                        g.add_(buf, alpha=mom)
                elif group["nesterov"]:
                    g.mul_(1 + mom)  # g + mom * buf with buf == g
            return torch.add(p, g, alpha=-lr, out=g)
        b1, b2 = (float(b) for b in group["betas"])
        eps = float(group["eps"])
        decoupled = group.get("decoupled_weight_decay", type(self.optimizer) is torch.optim.AdamW)
        step = float(state["step"]) + 1 if "step" in state else 1.0
        m, v = state.get("exp_avg"), state.get("exp_avg_sq")
        if m is None:
            m, v = torch.zeros_like(p), torch.zeros_like(p)
        base = p
        if wd != 0:
            if decoupled:
                base = p * (1 - lr * wd)
            else:
                g.add_(p, alpha=wd)
        denom = torch.addcmul(v * b2, g, g, value=1 - b2)  # new exp_avg_sq
        torch.lerp(m.expand_as(g), g, 1 - b1, out=g)  # g <- new exp_avg
        denom.sqrt_().div_((1 - b2**step) ** 0.5).add_(eps)
        return torch.addcdiv(base, g, denom, value=-lr / (1 - b1**step), out=g)


# --------------------------------------------------------------------------- probers


def naive_probe(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    candidates: Any,
    ref_batch: Any,
    *,
    grad_clip: float | None = None,
) -> np.ndarray:
    """Oracle influence, one candidate at a time with the real optimizer (reference code).

    For each candidate: restore parameters and optimizer state (in-place copies
    from a snapshot taken once), ``zero_grad``, forward+backward on the
    candidate's LM loss, ``optimizer.step()``, evaluate the reference loss.

    Args:
        model: HF-style causal LM, ``model(input_ids=ids, labels=ids).loss``.
        optimizer: the training optimizer (SGD or AdamW), with its current state.
        candidates: ``[N, T]`` int tensor or a sequence of ``[T]`` token blocks.
        ref_batch: ``[R, T']`` token ids of the reference batch (every next token scored), or a
            `RefBatch` (only its labelled tokens scored, e.g. `last_word_batch`).
        grad_clip: clip each candidate's gradient to this global norm before the step, as the
            training loop clips its batches (``torch.nn.utils.clip_grad_norm_``; the authors'
            ``fabric.clip_gradients(max_norm=1.0)``); ``None``/0: unclipped.

    Returns:
        float64 array ``[N]`` of ``L_ref(theta') - L_ref(theta)``.
    """
    _UpdateRule(optimizer)  # validation only: same contract as batched_probe
    dev = next(model.parameters()).device
    cands = _as_blocks(candidates, "candidates", dev)
    ref, ref_lab = _ref_parts(ref_batch, dev)
    was_training = model.training
    params = list(model.parameters())
    saved_p = [p.detach().clone() for p in params]
    saved_grad = [p.grad for p in params]
    saved_state = {
        p: {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in s.items()}
        for p, s in optimizer.state.items()
    }

    def restore() -> None:
        with torch.no_grad():
            for p, s in zip(params, saved_p):
                p.copy_(s)
        for p in [p for p in optimizer.state if p not in saved_state]:
            del optimizer.state[p]
        for p, saved in saved_state.items():
            st = optimizer.state[p]
            for k in [k for k in st if k not in saved]:
                del st[k]
            for k, v in saved.items():
                cur = st.get(k)
                if isinstance(v, torch.Tensor) and isinstance(cur, torch.Tensor) and cur.shape == v.shape:
                    cur.copy_(v)
                else:
                    st[k] = v.clone() if isinstance(v, torch.Tensor) else v

    model.eval()
    try:
        base = reference_loss(model, RefBatch(ref, ref_lab) if ref_lab is not ref else ref)
        out = np.empty(len(cands), dtype=np.float64)
        for i in range(len(cands)):
            x = cands[i : i + 1]
            optimizer.zero_grad(set_to_none=True)
            _loss_of(model(input_ids=x, labels=x)).backward()
            _clip_(params, grad_clip)
            optimizer.step()
            with torch.no_grad():
                out[i] = float(_loss_of(model(input_ids=ref, labels=ref_lab))) - base
            restore()
    finally:
        restore()
        for p, g in zip(params, saved_grad):
            p.grad = g
        model.train(was_training)
    return out


def batched_probe(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    candidates: Any,
    ref_batch: Any,
    *,
    chunk_size: int = 16,
    eval_chunk_size: int | None = None,
    grad_clip: float | None = None,
) -> np.ndarray:
    """Oracle influence for many candidates at once; same values as `naive_probe`.

    Per chunk of ``chunk_size`` candidates:

    1. per-sample gradients of the LM loss, ``vmap(grad(loss))`` over the
       candidates with the parameters shared (one batched forward/backward);
    2. the optimizer update in closed form, broadcasting the shared optimizer
       state against the ``[C, ...]`` gradients (`_UpdateRule`);
    3. the reference loss of all ``C`` updated models in one forward vmapped
       over the stacked parameters (``functional_call``; tied weights such as
       GPT-2's ``lm_head``/``wte`` follow their single stored copy).

    Parameters outside the optimizer or with ``requires_grad=False`` are left
    unchanged, exactly as ``optimizer.step()`` would.  One difference: a
    trainable parameter the loss never touches gets a zero gradient here,
    whereas torch skips it (``.grad is None``) -- under AdamW a zero gradient
    still moves it by momentum and weight decay.  An unused parameter cannot
    change the reference loss of a static architecture, so this only matters
    for data-dependent routing (mixture-of-experts).  The model, its gradients
    and the optimizer are not modified.

    Args:
        chunk_size: candidates per vmapped gradient pass.  Larger amortises more
            overhead and costs proportionally more memory (see module docstring).
        eval_chunk_size: updated models per vmapped reference forward (<= chunk_size).
            Default: as many as keep one pass at <= 2048 reference tokens
            (measured sweet spot on CPU: bigger passes stream the
            ``[models, R, T, V]`` logits through memory and get slower, smaller
            ones pay vmap overhead per model).
        grad_clip: clip each candidate's gradient to this global norm (over every trainable
            parameter, as ``clip_grad_norm_`` in `naive_probe` and the training loop) before
            its update; ``None``/0: unclipped.

    Returns:
        float64 array ``[N]`` of ``L_ref(theta') - L_ref(theta)``.
    """
    rule = _UpdateRule(optimizer)
    if chunk_size < 1 or (eval_chunk_size is not None and eval_chunk_size < 1):
        raise MatesError(f"chunk sizes must be >= 1, got {chunk_size}, {eval_chunk_size}")
    dev = next(model.parameters()).device
    cands = _as_blocks(candidates, "candidates", dev)
    ref, ref_lab = _ref_parts(ref_batch, dev)
    if eval_chunk_size is None:
        eval_chunk_size = max(1, 2048 // ref.numel())
    eval_chunk_size = min(eval_chunk_size, chunk_size)
    was_training = model.training
    model.eval()
    try:
        base = reference_loss(model, RefBatch(ref, ref_lab) if ref_lab is not ref else ref)
        # named_parameters() de-duplicates tied weights: one entry per storage.
        trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        stepped = {n: p for n, p in trainable.items() if rule.owns(p)}
        # gradients of every trainable parameter when clipping (the norm spans them all, as in
        # clip_grad_norm_(model.parameters())), else of the stepped ones only
        shared = {n: p.detach() for n, p in (trainable if grad_clip else stepped).items()}

        def cand_loss(params: dict, ids: torch.Tensor) -> torch.Tensor:
            ids = ids.unsqueeze(0)
            return _loss_of(functional_call(model, params, (), {"input_ids": ids, "labels": ids}))

        def ref_loss(params: dict) -> torch.Tensor:
            return _loss_of(functional_call(model, params, (), {"input_ids": ref, "labels": ref_lab}))

        if not stepped:  # nothing would move: influence is exactly zero
            return np.zeros(len(cands))
        per_sample_grads = vmap(grad(cand_loss), in_dims=(None, 0))
        ref_losses = vmap(ref_loss)
        out = []
        with warnings.catch_warnings():
            # functorch warns when an op (e.g. CPU flash-SDPA) has no batching rule and
            # loops instead; at these sizes the loop is cheap, the warning is noise.
            warnings.filterwarnings("ignore", message=".*have not yet implemented the batching rule.*")
            for chunk in cands.split(chunk_size):
                grads = per_sample_grads(shared, chunk)
                if grad_clip:
                    with torch.no_grad():       # clip_grad_norm_'s formula, one norm per candidate
                        norm = torch.stack([g.flatten(1).norm(2, dim=1) for g in grads.values()], 1).norm(2, dim=1)
                        coef = (float(grad_clip) / (norm + 1e-6)).clamp(max=1.0)
                        grads = {n: (g * coef.view(-1, *([1] * (g.dim() - 1)))) if n in stepped else None
                                 for n, g in grads.items()}
                    grads = {n: g for n, g in grads.items() if g is not None}
                with torch.no_grad():  # popping frees each gradient as soon as it is used
                    new = {n: rule.apply(stepped[n], grads.pop(n)) for n in list(grads)}
                    for e in range(0, len(chunk), eval_chunk_size):
                        part = {n: v[e : e + eval_chunk_size] for n, v in new.items()}
                        out.append(ref_losses(part).double().cpu())
                    del new, part
    finally:
        model.train(was_training)
    return (torch.cat(out) - base).numpy()


# --------------------------------------------------------------------------- selection


def gumbel_topk(
    scores: Sequence[float] | np.ndarray,
    k: int,
    temperature: float = 0.5,
    *,
    seed: int | None = None,
    generator: np.random.Generator | None = None,
) -> np.ndarray:
    """Sample ``k`` distinct indices, favouring high scores (Gumbel top-k trick).

    Sign convention: **higher score = more wanted**.  MATES wants candidates
    whose predicted influence (change of reference loss) is most *negative*, so
    callers pass ``scores = -predicted_influence``.

    Adding i.i.d. Gumbel(0, 1) noise to ``scores / temperature`` and taking the
    top ``k`` is exactly sampling ``k`` items without replacement from
    ``softmax(scores / temperature)`` (Plackett-Luce): the first index returned
    is a draw from that softmax, the second from the softmax over the rest, etc.
    ``temperature`` is in the units of ``scores``: pass standardised scores
    (``InfluenceModel.predict(..., standardized=True)``, as `MatesSampler` does)
    so that it means the same at every stage; raw influences of order 1e-3
    divided by 0.5 are lost in the unit Gumbel noise and the draw is uniform.
    ``temperature`` trades exploitation for diversity: ``-> 0`` gives the
    deterministic top-k (``temperature == 0`` is handled exactly, ties broken by
    lower index); ``-> inf`` gives uniform sampling.  Cost: O(n) noise + an
    O(n) partial sort.

    Returns:
        int64 array of ``k`` indices, in sampling order (highest perturbed score first).
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise MatesError(f"scores must be a non-empty 1-D array, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise MatesError("scores must be finite")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= s.size:
        raise MatesError(f"k must be an integer in [0, {s.size}], got {k!r}")
    if not np.isfinite(temperature) or temperature < 0:
        raise MatesError(f"temperature must be a finite number >= 0, got {temperature}")
    if temperature == 0:
        return np.argsort(-s, kind="stable")[:k].astype(np.int64)
    rng = generator if generator is not None else np.random.default_rng(seed)
    keys = s / temperature + rng.gumbel(size=s.size)
    if k == 0:
        return np.empty(0, dtype=np.int64)
    top = np.argpartition(-keys, k - 1)[:k] if k < s.size else np.arange(s.size)
    order = np.lexsort((top, -keys[top]))  # by key desc, then index asc
    return top[order].astype(np.int64)



# --------------------------------------------------------------------------- the staged sampler


def check_cv_folds(folds: int, probe_size: int) -> None:
    """The influence model's k-fold check needs 0 (off) or 2..probe_size // 4 folds (>= 4 probes per fold)."""
    check(folds == 0 or 2 <= folds <= probe_size // 4,
          f"im_cv_folds must be 0 (off) or between 2 and probe_size // 4, got {folds}")


PROBERS = ("auto", "naive", "batched")

#: below this many parameters ``prober="auto"`` takes the batched prober on a CPU (see `resolve_prober`)
AUTO_BATCHED_MAX_PARAMS = 250_000


def resolve_prober(prober: str, model) -> str:
    """``"naive"`` or ``"batched"``: the prober ``prober`` names, ``"auto"`` resolved for ``model``'s size and device.

    Both probers return the same influences (to ~1e-6 in float32); only the speed differs. The
    ``"auto"`` rule, from ``python -m workbench bench probe`` (naive and batched interleaved in one
    process, best of the repeats) on the 2-core CPU these notebooks run on, shared with other jobs:

    * **CUDA: batched.** The naive loop launches many small kernels per candidate and leaves the GPU
      idle; batching is what a GPU wants (not measured on this machine: ``bench probe --device cuda``
      in ``make gpu-check`` measures it).
    * **CPU, at least** ``AUTO_BATCHED_MAX_PARAMS`` **(250k) parameters: naive.** At the MATES tiny
      notebook's probe sizes (``gpt2-tiny``: 2 layers, hidden 128, 2 heads, vocabulary 4096, 0.93M
      parameters; 64-token blocks, 8 reference blocks, chunk 16; 64 candidates, AdamW) the batched
      prober is **0.73x** the naive one at one thread in one run (20.3 vs 27.9 probes/s, load avg
      1.8-3.2) and 1.04x in another (30.2 vs 29.1, load avg 2.6-3.0), 0.83x with 4 reference blocks
      (18.0 vs 21.8, load avg 4.4): at best parity, so the simpler prober with no ``3 x chunk``
      parameter copies (the vmapped reference forwards stream ``[models, R, T, V]`` logits through
      memory and lose what batching saves in dispatch). Nearby sizes are at parity within this
      machine's noise (vocabulary 2048: 0.95x with 4 heads and 4 reference blocks, 1.47x with 2
      heads and 8). At two threads the rates were dominated by the machine's load (naive 46 probes/s
      against batched 11 at load 1.8-3.2; naive 1.5 against batched 6.2 at load 3.0), so the rule
      does not depend on the thread count; one thread per process is how the notebooks run small
      models, and there both are about 30 probes/s.
    * **CPU, under 250k parameters: batched.** Per-call overhead dominates a very small model: 1.25x
      at one thread for a 1-layer, hidden 32, vocabulary 128 model (17k parameters; 16-token blocks,
      2 reference blocks), about 4.5x for hidden 64, vocabulary 512 (module docstring).

    ``"naive"`` and ``"batched"`` are kept as given.
    """
    if prober not in PROBERS:
        raise ConfigError(f"prober must be one of {', '.join(PROBERS)}, got {prober!r}")
    if prober != "auto":
        return prober
    p = next(model.parameters(), None)
    if p is not None and p.device.type == "cuda":
        return "batched"
    n = sum(q.numel() for q in model.parameters() if q.requires_grad)
    return "batched" if n < AUTO_BATCHED_MAX_PARAMS else "naive"


IM_KINDS = ("bert", "pretrained", "ridge")


def _im_forward_flops(im: InfluenceModel, T: int) -> float:
    c = im.config
    return 2 * c.num_hidden_layers * (4 * c.hidden_size ** 2 + 2 * c.hidden_size * c.intermediate_size) \
        + 4 * c.num_hidden_layers * T * c.hidden_size


class MatesSampler:
    """A :class:`~workbench.training.hooks.Sampler` that re-selects its data every stage (MATES).

    Training runs in **stages** of ``stage_steps`` steps. Each stage draws a candidate pool (all
    training blocks, or ``pool_size`` of them) and keeps ``fraction`` of it to train on. With
    ``disjoint_pools=True`` (default, the authors' ``select_data.py``: every stage selects from new
    C4 shards) stage ``s`` takes the ``s``-th slice of ``pool_size`` blocks of one seeded
    permutation of the training set (wrapping around when the slices run out); with ``False``
    every stage draws a random ``pool_size`` from the whole set (the workbench's earlier choice).

    * stage 0: a random selection (the model knows nothing yet);
    * stage k > 0: **probe** the oracle influence of ``probe_size`` random pool members on the
      current checkpoint (``prober``: `naive_probe` or `batched_probe`, ``"auto"`` picks the faster for
      the model's size and device, see `resolve_prober`; one optimizer step on the candidate, with the real
      optimizer state and LR, then the reference loss), **fit** the data-influence model on them
      (``im_kind``: ``"bert"`` a small BERT from scratch on the LM's ids, ``"pretrained"`` the encoder
      saved at ``im_pretrained`` fine-tuned on the decoded text, ``"ridge"`` bag-of-tokens ridge;
      re-initialised every stage unless ``warm_start``; best epoch by validation Spearman),
      **predict** the influence of every pool member, and **select** by `gumbel_topk` on the negated
      prediction (lower reference loss after the step = better) at ``temperature``. The prediction
      is ranked in the influence model's own units (z-scores of the stage's probes, as it was
      fitted), so ``temperature`` is measured in oracle standard deviations and means the same at
      every stage and model size; raw influences (loss differences of order 1e-3) divided by it
      would be drowned by the unit Gumbel noise and the draw would be uniform.

    Within a stage the selection is streamed in epochs (an :class:`EpochStream`; epoch ``e`` of
    stage ``s`` is the selection in the order ``default_rng([seed, s, e, 31])``).

    ``optimizer`` must be the optimizer the loop steps (pass the same object to ``wb.train``), so
    probes see its state. ``method="random"`` is the baseline: the same stages and pool, random
    picks. ``im_cv_folds=k`` also scores each stage's influence model by k-fold cross-validation on
    its probes (``spearman_cv`` in ``per_stage``; see `InfluenceModel.cross_validate`), and each kind
    in ``im_compare`` the same way on the same probes (``spearman_cv_<kind>``). It is a
    measurement: the selection is the same with or without it, and its time is kept out of
    ``select_s`` (it is ``diagnostic_wall_s``).

    Probes: ``grad_clip`` (default 1.0, the loop's default and the authors' ``grad_clip``) clips each
    candidate's gradient before its probe step, as the loop clips its batches; ``None`` probes
    unclipped (the workbench's earlier choice). ``ref_batch`` is a ``[R, T]`` block tensor (full-text
    loss) or a `RefBatch` (e.g. `last_word_batch`: the authors' LAMBADA last-word loss).

    Cost: probing ``P`` candidates costs ``P`` per-example gradient steps plus ``P`` evaluations of
    the reference batch; fitting ``im_epochs × P`` encoder passes; prediction one pass over the
    pool. With ``flops_per_token`` the sampler adds up the FLOPs it spends (``selection_flops``);
    :meth:`stats` reports them with the seconds (``select_s``).

    Resuming: :meth:`state_dict` holds the whole state -- the stage, the selection and the stream's
    position, the influence model (its spec, weights, z-scoring constants), the per-stage records
    and the counters. Every draw is seeded by ``(seed, stage[, epoch])``, so no generator state is
    carried; a run resumed from a checkpoint selects exactly what an uninterrupted one does.
    """

    name = "mates"

    def __init__(self, optimizer, ref_batch: torch.Tensor, stage_steps: int = 50, fraction: float = 0.2,
                 pool_size: int | None = None, probe_size: int = 64, temperature: float = 0.5,
                 method: str = "mates", im_epochs: int = 5, im_hidden: int = 64, im_layers: int = 2,
                 probe_chunk: int = 16, flops_per_token: float | None = None, im_cv_folds: int = 0,
                 prober: str = "auto", grad_clip: float | None = 1.0, warm_start: bool = False,
                 disjoint_pools: bool = True, im_kind: str = "bert", im_pretrained: str | None = None,
                 im_compare: Sequence[str] = (), decode=None):
        if method not in ("mates", "random"):
            raise ConfigError(f"MATES method must be 'mates' or 'random', got {method!r}")
        if stage_steps < 1 or not 0 < fraction <= 1 or probe_size < 8 or not temperature > 0:
            raise ConfigError("stage_steps >= 1, fraction in (0, 1], probe_size >= 8 and temperature > 0 "
                              "are required")
        check_cv_folds(im_cv_folds, probe_size)
        if prober not in PROBERS:
            raise ConfigError(f"prober must be one of {', '.join(PROBERS)}, got {prober!r}")
        for kind in (im_kind, *im_compare):
            if kind not in IM_KINDS:
                raise ConfigError(f"influence model kind must be one of {', '.join(IM_KINDS)}, got {kind!r}")
            if kind == "pretrained" and not im_pretrained:
                raise ConfigError("influence model kind 'pretrained' needs im_pretrained, a local encoder directory")
        if grad_clip is not None and not grad_clip >= 0:
            raise ConfigError(f"grad_clip must be >= 0 or None, got {grad_clip}")
        self.prober = prober
        self.grad_clip, self.warm_start, self.disjoint_pools = grad_clip or None, bool(warm_start), bool(disjoint_pools)
        self.im_kind, self.im_pretrained, self.im_compare = im_kind, im_pretrained, tuple(im_compare)
        self.decode = decode
        self.opt, self.ref = optimizer, ref_batch
        self.S, self.fraction, self.pool_size, self.probe_size = stage_steps, fraction, pool_size, probe_size
        self.temperature, self.method = temperature, method
        self.im_epochs, self.im_hidden, self.im_layers = im_epochs, im_hidden, im_layers
        self.probe_chunk, self.fpt, self.cv_folds = probe_chunk, flops_per_token, im_cv_folds
        self.stage = -1
        self.subset: np.ndarray | None = None
        self.per_stage: list[dict] = []
        self.select_s = 0.0              # seconds spent selecting (probe, fit, predict, draw)
        self.selection_flops = 0.0
        self.diagnostic_wall_s = 0.0     # cross-validation of the influence model: measurement, not selection
        self.im: InfluenceModel | None = None
        self._checked = False            # the model and optimizer are checked at the first refresh

    def setup(self, data, seed: int = 0, run=None) -> None:
        self.data, self.seed, self.run, self.n = data, seed, run, len(data)
        self.stream = EpochStream(self._permutation)

    # ------------------------------------------------------------------------------- stream
    def _permutation(self, epoch: int) -> np.ndarray:
        if self.subset is None:          # before the first selection: nothing to stream yet
            return np.zeros(0, dtype=np.int64)
        rng = np.random.default_rng([self.seed, self.stage, epoch, 31])
        return self.subset[rng.permutation(len(self.subset))]

    def next(self, n: int) -> list[int]:
        if self.subset is None:
            raise ConfigError("MatesSampler.next before its first selection: call refresh(model, 0) first")
        return self.stream.next(n)

    def stats(self) -> dict:
        """What the sampler spent and did: ``select_s`` (seconds selecting, the k-fold check not
        included), ``selection_flops``, ``diagnostic_wall_s`` (the k-fold check), ``stages``."""
        return {"select_s": self.select_s, "selection_flops": self.selection_flops,
                "diagnostic_wall_s": self.diagnostic_wall_s, "stages": len(self.per_stage),
                "selected": 0 if self.subset is None else len(self.subset)}

    def check_model(self, model, step: int = 0) -> None:
        """Refuse, before any training, what would make the probes meaningless (one `MatesError`):
        a masked-LM (encoder) model, an unsupported optimizer, or an optimizer that holds none of the
        model's trainable parameters (a probe step would then change nothing: zero influence
        everywhere). ``method="random"`` probes nothing and is not checked."""
        if self.method != "mates":
            return
        if is_masked_lm(model):
            raise MatesError(f"MATES probes a causal language model; {type(model).__name__} is a masked-LM "
                             f"(encoder) model: use a decoder (e.g. gpt2-tiny) or method='random'")
        if self.opt is None:
            raise MatesError("MatesSampler needs the optimizer wb.train steps (got None): pass the same "
                             "optimizer to MatesSampler and to wb.train(optimizer=...)")
        _UpdateRule(self.opt)               # supported type and settings
        held = {id(p) for g in self.opt.param_groups for p in g["params"]}
        trainable = [p for p in model.parameters() if p.requires_grad]
        if not trainable:
            raise MatesError("the model has no trainable parameter to probe")
        if not any(id(p) in held for p in trainable):
            raise MatesError(f"MatesSampler's optimizer holds none of the model's {len(trainable)} trainable "
                             f"parameters (it was made for another model?): pass the optimizer of this model, "
                             f"the same one given to wb.train(optimizer=...)")

    def _check_stepped(self, model, step: int) -> None:
        """After steps were taken, an optimizer with per-parameter state (Adam, SGD with momentum) that
        still has none is not the one the loop steps: its probes would use a fresh state."""
        if self.method != "mates" or step == 0 or not self.opt.param_groups:
            return
        g0 = self.opt.param_groups[0]
        stateful = isinstance(self.opt, (torch.optim.Adam, torch.optim.AdamW)) or float(g0.get("momentum", 0)) != 0
        if stateful and not any(self.opt.state.get(p) for p in model.parameters()):
            raise MatesError(f"MatesSampler's optimizer has no state after {step} training steps: it is not the "
                             f"optimizer wb.train steps; pass the same one to wb.train(optimizer=...)")

    def refresh(self, model, step: int) -> None:
        if not self._checked:
            self.check_model(model, step)
            self._checked = True
        if step % self.S != 0 or step // self.S == self.stage:
            return
        t0 = time.perf_counter()
        self._check_stepped(model, step)
        self.stage = step // self.S
        rng = np.random.default_rng([self.seed, self.stage, 97])
        if not self.pool_size or self.pool_size >= self.n:
            pool = np.arange(self.n)
        elif self.disjoint_pools:      # the stage-th slice of one permutation: stages never share a candidate
            perm = np.random.default_rng([self.seed, 53]).permutation(self.n)
            start = self.stage * self.pool_size
            pool = np.sort(np.take(perm, np.arange(start, start + self.pool_size), mode="wrap"))
        else:
            pool = np.sort(rng.choice(self.n, self.pool_size, replace=False))
        k = max(1, int(round(self.fraction * len(pool))))
        rec = {"stage": self.stage, "step": step, "pool": len(pool), "selected": k}
        if self.stage == 0 or self.method == "random":
            chosen = np.sort(rng.choice(pool, k, replace=False))
            pred = None
        else:
            chosen, pred = self._select(model, pool, k, rng, rec)
        self.subset = chosen
        self.stream.restart()
        dt = time.perf_counter() - t0 - rec.get("im_cv_wall_s", 0.0)
        self.select_s += dt
        rec["wall_s"] = dt
        self.per_stage.append(rec)
        if self.run is not None:
            arrays = {"step": np.array(step), "indices": chosen,
                      "domains": np.asarray([self.data.domains[i] for i in chosen])}
            if pred is not None:
                arrays.update(pool=pool, predicted=pred, probe_indices=rec.pop("_probe_idx"),
                              oracle=rec.pop("_oracle"), probe_predicted=rec.pop("_probe_pred"),
                              score_mean=np.array(rec["score_mean"]), score_std=np.array(rec["score_std"]))
            self.run.save_scores(f"mates_stage_{self.stage:03d}", **arrays)
        for key in ("_probe_idx", "_oracle", "_probe_pred"):
            rec.pop(key, None)

    def _select(self, model, pool, k, rng, rec):
        dev = next(model.parameters()).device
        probe_idx = np.sort(rng.choice(pool, min(self.probe_size, len(pool)), replace=False))
        cand = self.data.collate(probe_idx)["input_ids"].to(dev)                    # [P, T]
        prober = resolve_prober(self.prober, model)
        rec["prober"] = prober
        if prober == "naive":
            oracle = naive_probe(model, self.opt, cand, self.ref.to(dev), grad_clip=self.grad_clip)
        else:
            oracle = batched_probe(model, self.opt, cand, self.ref.to(dev), chunk_size=self.probe_chunk,
                                   grad_clip=self.grad_clip)
        T = cand.shape[1]
        if self.im is None or not self.warm_start or self.im_kind == "ridge":
            self.im = self._new_im(self.im_kind, T)                 # re-initialised every stage (the authors')
        probes = self._im_inputs(self.im_kind, cand.cpu())          # the influence model's inputs
        if self.cv_folds:   # before the fit: the folds start from the same weights the real fit does
            t_cv = time.perf_counter()
            cv = self.im.cross_validate(probes, oracle, self.cv_folds, epochs=self.im_epochs,
                                        seed=self.seed + self.stage, warm_start=self.warm_start)
            rec.update(spearman_cv=cv["spearman"], spearman_cv_folds=cv["fold_spearmans"])
            for kind in self.im_compare:            # the other influence models, on the same probes and folds
                other = self._new_im(kind, T).cross_validate(self._im_inputs(kind, cand.cpu()), oracle, self.cv_folds,
                                                             epochs=self.im_epochs, seed=self.seed + self.stage)
                rec[f"spearman_cv_{kind}"] = other["spearman"]
            dt_cv = time.perf_counter() - t_cv
            self.diagnostic_wall_s += dt_cv
            rec["im_cv_wall_s"] = dt_cv
        self.im.fit(probes, oracle, epochs=self.im_epochs, seed=self.seed + self.stage,
                    warm_start=self.warm_start)
        blocks = torch.from_numpy(self.data.input_ids[pool].astype(np.int64))
        z = self.im.predict(self._im_inputs(self.im_kind, blocks), standardized=True)   # oracle-std units
        pred = z * self.im.score_std + self.im.score_mean
        chosen = np.sort(pool[gumbel_topk(-z, k, self.temperature, seed=self.seed * 1000 + self.stage)])
        if self.fpt:
            fwd = self.fpt / 3
            probe = len(probe_idx) * (self.fpt * T + fwd * self.ref.numel())
            if isinstance(self.im, RidgeInfluence):
                fit, predict = self.im.fit_flops(len(probe_idx)), self.im.predict_flops(len(pool))
            else:
                im_fwd = _im_forward_flops(self.im, T)
                fit = self.im_epochs * len(probe_idx) * 3 * im_fwd * T
                predict = len(pool) * im_fwd * T
            self.selection_flops += probe + fit + predict
            rec.update(probe_flops=probe, im_fit_flops=fit, im_predict_flops=predict)
        rec.update(spearman_val=self.im.spearman_val, oracle_mean=float(np.mean(oracle)),
                   score_mean=self.im.score_mean, score_std=self.im.score_std, predicted_z_std=float(np.std(z)),
                   _probe_idx=probe_idx, _oracle=oracle, _probe_pred=self.im.predict(probes))
        return chosen, pred

    def _new_im(self, kind: str, T: int):
        if kind == "ridge":
            return RidgeInfluence(self.data.vocab_size)
        if kind == "pretrained":
            return InfluenceModel(0, max_len=T * 4, pretrained=self.im_pretrained)
        return InfluenceModel(self.data.vocab_size, hidden=self.im_hidden, layers=self.im_layers, heads=2, max_len=T)

    def _im_inputs(self, kind: str, blocks: torch.Tensor) -> list:
        """Token blocks for the LM-vocabulary models; decoded texts for a pretrained encoder."""
        if kind != "pretrained":
            return list(blocks)
        decode = self.decode or getattr(getattr(self.data, "tokenizer", None), "decode", None)
        if decode is None:
            raise MatesError("a pretrained influence model reads text: pass decode= (token ids -> text) to "
                             "MatesSampler, or train on a task that has a tokenizer")
        return [decode(b.tolist()) for b in blocks]

    # ------------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """The whole state, as plain values and numpy arrays (see the class doc)."""
        return {"seed": self.seed, "stage": self.stage, **self.stream.state_dict(),
                "subset": self.subset if self.subset is not None else np.zeros(0, dtype=np.int64),
                "im": self.im.state_dict() if self.im is not None else None,
                "per_stage": [dict(r) for r in self.per_stage],
                "select_s": self.select_s, "selection_flops": self.selection_flops,
                "diagnostic_wall_s": self.diagnostic_wall_s}

    def load_state_dict(self, s: dict) -> None:
        if "seed" in s and int(s["seed"]) != self.seed:
            raise ConfigError(f"MATES sampler state was saved with seed {s['seed']}, this run has seed {self.seed}")
        self.stage = int(s["stage"])
        self.subset = np.asarray(s["subset"], dtype=np.int64) if self.stage >= 0 else None
        self.im = influence_model_from_state(s["im"]) if s.get("im") is not None else None
        self.per_stage = [dict(r) for r in s.get("per_stage", [])]
        self.select_s = float(s["select_s"] if "select_s" in s else s["selection_wall_s"])    # older checkpoints
        self.selection_flops = float(s["selection_flops"])
        self.diagnostic_wall_s = float(s.get("diagnostic_wall_s", 0.0))
        self.stream.load_state_dict(s)
