"""MATES core primitives: oracle influence probing and Gumbel top-k selection.

MATES (Yu, Das, Xiong, NeurIPS 2024, "Model-Aware Data Selection with Data
Influence Models") selects pretraining data with the *current* model's
preferences.  Every so often it (1) measures the oracle influence of a few
thousand candidates on the current checkpoint, (2) fits a small data-influence
model on those (candidate, influence) pairs (`influence_model.InfluenceModel`),
(3) predicts influence for the whole pool and (4) samples the next stage's
training data with Gumbel top-k.  This module holds (1) and (4).

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
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np
import torch
from torch.func import functional_call, grad, vmap

from ..errors import ConfigError

__all__ = ["MatesError", "naive_probe", "batched_probe", "reference_loss", "gumbel_topk", "InfluenceModel"]


class MatesError(ConfigError):
    """Invalid input to a MATES primitive (bad shapes, k > n, unsupported optimizer...); a :class:`ConfigError`."""


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


def reference_loss(model: torch.nn.Module, ref_batch: Any) -> float:
    """Mean LM loss of ``model`` on ``ref_batch`` (``[R, T]``), without gradients."""
    ref = _as_blocks(ref_batch, "ref_batch", next(model.parameters()).device)
    with torch.no_grad():
        return float(_loss_of(model(input_ids=ref, labels=ref)))


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
) -> np.ndarray:
    """Oracle influence, one candidate at a time with the real optimizer (reference code).

    For each candidate: restore parameters and optimizer state (in-place copies
    from a snapshot taken once), ``zero_grad``, forward+backward on the
    candidate's LM loss, ``optimizer.step()``, evaluate the reference loss.

    Args:
        model: HF-style causal LM, ``model(input_ids=ids, labels=ids).loss``.
        optimizer: the training optimizer (SGD or AdamW), with its current state.
        candidates: ``[N, T]`` int tensor or a sequence of ``[T]`` token blocks.
        ref_batch: ``[R, T']`` token ids of the reference batch.

    Returns:
        float64 array ``[N]`` of ``L_ref(theta') - L_ref(theta)``.
    """
    _UpdateRule(optimizer)  # validation only: same contract as batched_probe
    dev = next(model.parameters()).device
    cands, ref = _as_blocks(candidates, "candidates", dev), _as_blocks(ref_batch, "ref_batch", dev)
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
        base = reference_loss(model, ref)
        out = np.empty(len(cands), dtype=np.float64)
        for i in range(len(cands)):
            x = cands[i : i + 1]
            optimizer.zero_grad(set_to_none=True)
            _loss_of(model(input_ids=x, labels=x)).backward()
            optimizer.step()
            with torch.no_grad():
                out[i] = float(_loss_of(model(input_ids=ref, labels=ref))) - base
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

    Returns:
        float64 array ``[N]`` of ``L_ref(theta') - L_ref(theta)``.
    """
    rule = _UpdateRule(optimizer)
    if chunk_size < 1 or (eval_chunk_size is not None and eval_chunk_size < 1):
        raise MatesError(f"chunk sizes must be >= 1, got {chunk_size}, {eval_chunk_size}")
    dev = next(model.parameters()).device
    cands, ref = _as_blocks(candidates, "candidates", dev), _as_blocks(ref_batch, "ref_batch", dev)
    if eval_chunk_size is None:
        eval_chunk_size = max(1, 2048 // ref.numel())
    eval_chunk_size = min(eval_chunk_size, chunk_size)
    was_training = model.training
    model.eval()
    try:
        base = reference_loss(model, ref)
        # named_parameters() de-duplicates tied weights: one entry per storage.
        stepped = {n: p for n, p in model.named_parameters() if p.requires_grad and rule.owns(p)}
        shared = {n: p.detach() for n, p in stepped.items()}

        def cand_loss(params: dict, ids: torch.Tensor) -> torch.Tensor:
            ids = ids.unsqueeze(0)
            return _loss_of(functional_call(model, params, (), {"input_ids": ids, "labels": ids}))

        def ref_loss(params: dict) -> torch.Tensor:
            return _loss_of(functional_call(model, params, (), {"input_ids": ref, "labels": ref}))

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
    tau: float = 0.5,
    *,
    seed: int | None = None,
    generator: np.random.Generator | None = None,
) -> np.ndarray:
    """Sample ``k`` distinct indices, favouring high scores (Gumbel top-k trick).

    Sign convention: **higher score = more wanted**.  MATES wants candidates
    whose predicted influence (change of reference loss) is most *negative*, so
    callers pass ``scores = -predicted_influence``.

    Adding i.i.d. Gumbel(0, 1) noise to ``scores / tau`` and taking the top ``k``
    is exactly sampling ``k`` items without replacement from
    ``softmax(scores / tau)`` (Plackett-Luce): the first index returned is a
    draw from that softmax, the second from the softmax over the rest, etc.
    ``tau`` is in the units of ``scores``: pass standardised scores
    (``InfluenceModel.predict(..., standardized=True)``, as ``mates_recipe.MatesSampler``
    does) so that it means the same at every stage; raw influences of order
    1e-3 divided by 0.5 are lost in the unit Gumbel noise and the draw is
    uniform.  ``tau`` trades exploitation for diversity: ``tau -> 0`` gives the
    deterministic top-k (``tau == 0`` is handled exactly, ties broken by lower
    index); ``tau -> inf`` gives uniform sampling.  Cost: O(n) noise + an
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
    if not np.isfinite(tau) or tau < 0:
        raise MatesError(f"tau must be a finite number >= 0, got {tau}")
    if tau == 0:
        return np.argsort(-s, kind="stable")[:k].astype(np.int64)
    rng = generator if generator is not None else np.random.default_rng(seed)
    keys = s / tau + rng.gumbel(size=s.size)
    if k == 0:
        return np.empty(0, dtype=np.int64)
    top = np.argpartition(-keys, k - 1)[:k] if k < s.size else np.arange(s.size)
    order = np.lexsort((top, -keys[top]))  # by key desc, then index asc
    return top[order].astype(np.int64)


def __getattr__(name: str) -> Any:  # lazy re-export, avoids a circular import
    if name == "InfluenceModel":
        from workbench.selection.influence_model import InfluenceModel

        return InfluenceModel
    raise AttributeError(name)
