"""The one training loop.

Every method plugs into :func:`train` at one of its hooks (DESIGN.md): a *sampler* decides which
examples feed the next batches (and may re-select every R steps from the model), a *batch filter*
picks a small batch out of a large one, a *budget* stops the run, a *schedule* sets the LR, a
*backend* runs the step, a *run* directory records everything. Nothing else is special-cased.

Batch filter contract (duck-typed): ``large_batch_size(batch_size) -> int`` (how many examples to
draw for one small batch); ``select(model, batch, task, step) -> batch`` (the sub-batch to train
on, optionally with a per-example ``weight``); ``state_dict()`` / ``load_state_dict()``. A filter
records the scores it used to the run itself (``self.run`` is set by the loop when present).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from tqdm import tqdm

from ..errors import ConfigError, RunError
from ..runs import Run
from .budget import Budget
from .checkpoint import latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .samplers import FullSampler
from .schedules import Schedule


def resolve_device(device=None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def to_device(batch: dict, device) -> dict:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def index_batch(batch: dict, rows: torch.Tensor) -> dict:
    """Rows ``rows`` of every [B, ...] tensor in ``batch`` (a sub-batch)."""
    B = batch["index"].shape[0]
    rows = rows.to(batch["index"].device)
    out = {}
    for k, v in batch.items():
        out[k] = v[rows] if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == B else v
    if "attention_mask" in out and out["attention_mask"].dim() == 2:   # trim now-unused padding columns
        used = out["attention_mask"].any(0).nonzero()
        L = int(used.max()) + 1 if len(used) else 1
        for k in ("input_ids", "attention_mask", "labels"):
            if k in out and out[k].dim() == 2:
                out[k] = out[k][:, :L]
    return out


def make_optimizer(model, lr: float, weight_decay: float = 0.01, betas=(0.9, 0.999), eps: float = 1e-8):
    """AdamW with no weight decay on biases, LayerNorms and embeddings' norms (1-D parameters)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)


@torch.no_grad()
def evaluate(model, task, batch_size: int = 32, max_batches: int | None = None, device=None,
             precision: str = "fp32") -> float:
    """Mean loss of ``model`` on ``task`` over fixed batches (same masks every call)."""
    device = device or next(model.parameters()).device
    was = model.training
    model.eval()
    n = len(task)
    total, count = 0.0, 0
    starts = list(range(0, n, batch_size))
    if max_batches:
        starts = starts[:max_batches]
    for k, s in enumerate(starts):
        batch = to_device(task.collate(list(range(s, min(s + batch_size, n))), step=-(k + 1)), device)
        with autocast(device, precision):
            loss = task.loss(model, batch)
        w = int((batch["labels"] != -100).sum())
        total += float(loss) * w
        count += w
    model.train(was)
    return total / max(count, 1)


def autocast(device, precision: str):
    if precision == "fp32":
        return torch.autocast(device_type=torch.device(device).type, enabled=False)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


@dataclass
class TrainResult:
    model: Any
    step: int
    tokens: int
    stop_reason: str
    wall_s: float
    final_eval_loss: float | None
    history: list = field(default_factory=list)
    run: Run | None = None

    @property
    def metrics(self):
        import pandas as pd
        return pd.DataFrame(self.history)


def train(model, data, *, sampler=None, batch_filter=None, budget: Budget | None = None,
          schedule: Schedule | None = None, backend: str = "torch", run: Run | None = None,
          eval_data=None, batch_size: int = 32, grad_accum: int = 1, lr: float = 1e-3,
          weight_decay: float = 0.01, betas=(0.9, 0.999), eps: float = 1e-8, grad_clip: float | None = 1.0,
          eval_every: int = 0, eval_batches: int | None = 8, eval_batch_size: int | None = None,
          checkpoint_every: int = 0, keep_checkpoints: int = 2, seed: int = 0, device=None,
          precision: str = "fp32", progress: bool = True, log_every: int = 1,
          flops_per_token: float | None = None, callbacks: tuple[Callable, ...] = (),
          optimizer=None) -> TrainResult:
    """Train ``model`` on the task ``data``; see the module doc for the hooks.

    Parameters that cost: ``eval_every`` (an eval of ``eval_batches`` batches each time),
    ``checkpoint_every`` (a full weight + optimizer write), ``log_every`` (one JSON line per record).
    ``grad_accum`` multiplies the effective batch without memory. When ``run`` was opened with
    ``resume=True``, training continues from its latest checkpoint: same data order, RNG, optimizer
    and (for time budgets) the elapsed time.
    """
    if backend not in ("torch",):
        raise ConfigError(f"backend {backend!r} is not available (choose 'torch')")
    if precision not in ("fp32", "bf16", "fp16"):
        raise ConfigError(f"precision {precision!r} is not one of fp32, bf16, fp16")
    if batch_size < 1 or grad_accum < 1:
        raise ConfigError(f"batch_size ({batch_size}) and grad_accum ({grad_accum}) must be >= 1")
    if not (lr > 0 and math.isfinite(lr)):
        raise ConfigError(f"lr must be a positive number, got {lr}")
    budget = budget or Budget(max_steps=1000)
    schedule = schedule or Schedule("constant")
    if not schedule.time_based and schedule.name != "constant" and budget.max_steps is None:
        raise ConfigError(f"step-based schedule {schedule.name!r} needs a step budget (max_steps)")
    device = resolve_device(device)
    torch.manual_seed(seed)
    model.to(device)
    model.train()
    sampler = sampler or FullSampler()
    sampler.setup(data, seed=seed, run=run)
    if batch_filter is not None:
        batch_filter.run = run
        if hasattr(batch_filter, "setup"):
            batch_filter.setup(data, seed=seed, run=run)
    opt = optimizer or make_optimizer(model, lr, weight_decay, betas, eps)
    for g in opt.param_groups:
        g.setdefault("initial_lr", g["lr"])
    scaler = torch.amp.GradScaler(device.type, enabled=(precision == "fp16"))
    step, tokens, flops = 0, 0, 0.0
    history: list[dict] = []
    ckpt_root = run.path / "checkpoints" if run is not None else None

    if run is not None and run.resumed:
        ck = latest_checkpoint(ckpt_root)
        if ck is not None:
            st = load_checkpoint(ck, model, opt)
            step, tokens, flops = st["step"], st["tokens"], st.get("flops", 0.0)
            sampler.load_state_dict(st["sampler"])
            if batch_filter is not None and st.get("filter") is not None:
                batch_filter.load_state_dict(st["filter"])
            budget.load_state_dict(st["budget"])
            set_rng_state(st["rng"])
            if st.get("scaler"):
                scaler.load_state_dict(st["scaler"])
        run.truncate_metrics(lambda r: r.get("step", 0) <= step)
        history = [r for r in run.metrics()]

    def state() -> dict:
        return {"step": step, "tokens": tokens, "flops": flops, "sampler": sampler.state_dict(),
                "filter": batch_filter.state_dict() if batch_filter is not None else None,
                "budget": budget.state_dict(), "rng": rng_state(),
                "scaler": scaler.state_dict() if scaler.is_enabled() else None}

    def log(rec: dict):
        history.append(rec)
        if run is not None:
            run.log(rec)

    ebs = eval_batch_size or batch_size
    budget.start()
    t_wall0 = time.perf_counter()
    total = budget.max_steps
    bar = tqdm(total=total, initial=step, disable=not progress, mininterval=1.0, desc="train", leave=False)
    stop_reason = budget.exhausted(step, tokens)
    last_eval = None
    tok_window, t_window = 0, time.perf_counter()
    while stop_reason is None:
        sampler.refresh(model, step)
        frac = budget.fraction(step, tokens)
        f = schedule.factor(step, budget.max_steps, frac)
        for g in opt.param_groups:
            g["lr"] = g["initial_lr"] * f
        loss_sum, step_tokens = 0.0, 0
        for micro in range(grad_accum):
            n_draw = batch_filter.large_batch_size(batch_size) if batch_filter is not None else batch_size
            idx = sampler.next(n_draw)
            batch = to_device(data.collate(idx, step=step * grad_accum + micro), device)
            if batch_filter is not None:
                batch = batch_filter.select(model, batch, data, step)
            with autocast(device, precision):
                loss = data.loss(model, batch)
            scaler.scale(loss / grad_accum).backward()
            loss_sum += float(loss.detach())
            step_tokens += data.tokens(batch)
        loss_val = loss_sum / grad_accum
        if not math.isfinite(loss_val):
            opt.zero_grad(set_to_none=True)
            stop_reason = "loss_not_finite"
            log({"step": step, "event": "stop", "reason": stop_reason, "loss": loss_val})
            break
        if grad_clip:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        if scaler.is_enabled() and scaler.get_scale() < 1e-4:
            stop_reason = "loss_scale_collapsed"
        step += 1
        tokens += step_tokens
        if flops_per_token:
            flops += flops_per_token * step_tokens
        tok_window += step_tokens
        bar.update(1)
        if step % log_every == 0 or step == 1:
            now = time.perf_counter()
            rec = {"step": step, "tokens": tokens, "flops": flops, "loss": loss_val, "lr": opt.param_groups[0]["lr"],
                   "elapsed_s": budget.elapsed(), "tokens_per_s": tok_window / max(now - t_window, 1e-9)}
            tok_window, t_window = 0, now
            log(rec)
            bar.set_postfix(loss=f"{loss_val:.3f}")
        if eval_data is not None and eval_every and step % eval_every == 0:
            last_eval = evaluate(model, eval_data, ebs, eval_batches, device, precision)
            model.train()
            log({"step": step, "tokens": tokens, "flops": flops, "eval_loss": last_eval, "elapsed_s": budget.elapsed()})
            stop_reason = stop_reason or budget.early_stop(step, tokens, last_eval)
        for m in budget.due_markers(step, tokens):
            if run is not None:
                save_checkpoint(run.path / "markers", step, model, None, {"step": step, "marker": m},
                                name=f"marker-{m:g}", update_latest=False)
            log({"step": step, "event": "marker", "marker": m, "elapsed_s": budget.elapsed()})
        for cb in callbacks:
            cb(step=step, model=model, history=history)
        stop_reason = stop_reason or budget.exhausted(step, tokens)
        if run is not None and checkpoint_every and step % checkpoint_every == 0 and stop_reason is None:
            save_checkpoint(ckpt_root, step, model, opt, state(), keep=keep_checkpoints)
    bar.close()
    final_eval = None
    if eval_data is not None:
        final_eval = evaluate(model, eval_data, ebs, eval_batches, device, precision)
        if not history or history[-1].get("eval_loss") is None or history[-1].get("step") != step:
            log({"step": step, "tokens": tokens, "flops": flops, "eval_loss": final_eval, "elapsed_s": budget.elapsed()})
    wall = time.perf_counter() - t_wall0
    if run is not None:
        save_checkpoint(ckpt_root, step, model, opt, state(), keep=keep_checkpoints)
        from safetensors.torch import save_model
        save_model(model, str(run.path / ".model.safetensors.tmp"))
        import os
        os.replace(run.path / ".model.safetensors.tmp", run.path / "model.safetensors")
    return TrainResult(model=model, step=step, tokens=tokens, stop_reason=stop_reason, wall_s=wall,
                       final_eval_loss=final_eval, history=history, run=run)
