"""The one training loop.

Every method plugs into :func:`train` at one of its hooks (DESIGN.md): a *sampler* decides which
examples feed the next batches (and may re-select every R steps from the model), a *batch filter*
picks a small batch out of a large one, a *budget* stops the run, a *schedule* sets the LR, a
*backend* runs the step, a *run* directory records everything. Nothing else is special-cased.

One step, in order: ``sampler.refresh`` -> for each of the step's micro-batches (``grad_accum``, or
fewer early in a batch-size ramp): draw, collate, filter, forward + backward -> the LR for the
elapsed fraction *at the update* -> optimizer update -> log, eval, callbacks -> early stop, time
markers, deadline -> periodic checkpoint. Time is read from the budget's clock, so a test can drive
it; the deadline is checked after every step.

Batch filter contract (duck-typed): ``large_batch_size(batch_size) -> int`` (how many examples to
draw for one small batch); ``select(model, batch, task, step) -> batch`` (the sub-batch to train
on, optionally with a per-example ``weight``); ``state_dict()`` / ``load_state_dict()``. A filter
records the scores it used to the run itself (``self.run`` is set by the loop when present).

Several processes (``torchrun``, ``backend="torch"`` -> DDP; or ``backend="deepspeed"``): ``batch_size``
is per process, so a step trains on ``batch_size x grad_accum x world_size`` examples. Every rank
draws the same global micro-batch of ``batch_size x world_size`` indices from the shared sampler
stream, collates all of it (the MLM masks depend on the whole micro-batch) and trains on its own
rows; each rank's loss is weighted by its share of the micro-batch's targets, so N processes
compute exactly the gradient one process would on the global batch. A batch filter runs on each
rank's slice of ``large_batch_size(batch_size)`` candidates (selection within the slice);
``BatchSelector(shards=N)`` makes one process select the same way over the N slices. Only rank 0
writes the run (metrics, checkpoints, scores); losses and token counts are all-reduced for logging;
time-based decisions use rank 0's clock.
"""
from __future__ import annotations

import math
import os
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import save_model
from tqdm import tqdm

from ..errors import ConfigError, ModelError, RunError
from ..models import check_seq_len
from ..models.flops import flops_per_token as count_flops
from ..runs import Run
from .backends import BACKENDS, autocast, dist_env, local_rank, make_backend
from .budget import Budget, Decision, EvalCadence
from .checkpoint import latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .export import HF_DIR, save_hf, save_run_start
from .hooks import FullSampler
from .schedules import Schedule, ramp_micro_batches

__all__ = ["TrainResult", "autocast", "evaluate", "index_batch", "make_optimizer", "resolve_device", "train"]


def resolve_device(device=None) -> torch.device:
    """``None``/``"auto"``: this process's GPU when CUDA is present (``cuda:LOCAL_RANK`` under a launcher), else CPU."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank() % torch.cuda.device_count())
        return torch.device("cpu")
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


def _targets(batch: dict) -> int:
    """Number of loss targets in a batch (what a rank's loss is weighted by)."""
    if "labels" in batch:
        return int((batch["labels"] != -100).sum())
    return int(batch["index"].shape[0])


def make_optimizer(model, lr: float, weight_decay: float = 0.01, betas=(0.9, 0.999), eps: float = 1e-8,
                   foreach: bool | None = None, fused: bool | None = None):
    """AdamW with no weight decay on biases, LayerNorms and embeddings' norms (1-D parameters).

    ``foreach`` / ``fused`` pick torch's multi-tensor or fused implementation (``None``: torch's
    default for the device); the math is the same, the speed is not (one kernel per parameter vs.
    a few for all of them).
    """
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kw = {k: v for k, v in (("foreach", foreach), ("fused", fused)) if v is not None}
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, **kw)


#: the most tokens one evaluation forward takes (the fixed eval batches are merged up to this size)
EVAL_CHUNK_TOKENS = 32768
_EVAL_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _pad_cat(parts: list[torch.Tensor], key: str) -> torch.Tensor:
    """Concatenate [B_i, L_i] tensors along rows, right-padding to the longest L (labels with -100)."""
    if parts[0].dim() < 2:
        return torch.cat(parts)
    L = max(p.shape[1] for p in parts)
    fill = -100 if key == "labels" else 0
    return torch.cat([torch.nn.functional.pad(p, (0, L - p.shape[1]), value=fill) for p in parts])


def eval_chunks(task, batch_size: int = 32, max_batches: int | None = None) -> list[dict]:
    """The fixed evaluation batches of ``task`` (same masks every call), merged into as few forwards
    as :data:`EVAL_CHUNK_TOKENS` allows, and cached on the task: collating and one forward per small
    batch were most of an evaluation's time for the tiny models. Right padding under an attention
    mask (and -100 labels) leaves every real token's loss as it was."""
    n = len(task)
    key = (n, batch_size, max_batches)
    try:
        per_task = _EVAL_CACHE.setdefault(task, {})
    except TypeError:          # a task that cannot be weakly referenced: no cache
        per_task = {}
    if key in per_task:
        return per_task[key]
    starts = list(range(0, n, batch_size))
    if max_batches:
        starts = starts[:max_batches]
    batches = [task.collate(list(range(s, min(s + batch_size, n))), step=-(k + 1)) for k, s in enumerate(starts)]
    mergeable = all(set(b) == set(batches[0]) and all(torch.is_tensor(v) and v.dim() <= 2 for v in b.values())
                    and "attention_mask" in b for b in batches)
    if not mergeable:
        chunks = batches
    else:
        chunks, group, tokens = [], [], 0
        for b in batches:
            bt = b["input_ids"].numel()
            if group and tokens + bt > EVAL_CHUNK_TOKENS:
                chunks.append({k: _pad_cat([g[k] for g in group], k) for k in group[0]})
                group, tokens = [], 0
            group.append(b)
            tokens += bt
        if group:
            chunks.append({k: _pad_cat([g[k] for g in group], k) for k in group[0]})
    per_task[key] = chunks
    return chunks


@torch.no_grad()
def evaluate(model, task, batch_size: int = 32, max_batches: int | None = None, device=None,
             precision: str = "fp32") -> float:
    """Mean loss of ``model`` on ``task`` over fixed batches (same masks every call): the loss of
    every target token of the first ``max_batches`` batches of ``batch_size``, averaged."""
    device = device or next(model.parameters()).device
    was = model.training
    model.eval()
    total, count = 0.0, 0
    for chunk in eval_chunks(task, batch_size, max_batches):
        batch = to_device(chunk, device)
        with autocast(device, precision):
            loss = task.loss(model, batch)
        w = int((batch["labels"] != -100).sum())
        total += float(loss) * w
        count += w
    model.train(was)
    return total / max(count, 1)


def _check_vocab(model, task, what: str) -> None:
    """A task whose tokenizer has more ids than the model's embedding table would fail deep inside
    torch (``IndexError: index out of range in self``) at the first step: refuse it up front."""
    tv = getattr(task, "vocab_size", None)
    mv = getattr(getattr(model, "config", None), "vocab_size", None)
    if isinstance(tv, int) and isinstance(mv, int) and tv > mv:
        raise ModelError(f"vocabulary mismatch: {what}'s tokenizer has {tv} tokens but the model's vocab_size "
                         f"is {mv}; build the model with vocab_size=len(tokenizer)")


@dataclass
class TrainResult:
    model: Any
    step: int
    tokens: int
    stop_reason: str
    wall_s: float                       # the whole call: training, final eval, final checkpoint
    final_eval_loss: float | None
    history: list = field(default_factory=list)
    run: Run | None = None
    train_s: float | None = None        # budget-clock seconds of training (what the deadline is checked against)
    overshoot_s: float | None = None    # train_s past the deadline (0 when it ended before); None without one
    lr_factor_end: float | None = None  # schedule multiplier of the last optimizer update (0 = LR at zero)
    world_size: int = 1
    backend: str = "torch"

    @property
    def metrics(self):
        import pandas as pd
        return pd.DataFrame(self.history)


def _check_args(backend: str, precision: str, batch_size: int, grad_accum: int, lr: float, batch_ramp: float,
                budget: Budget, schedule: Schedule) -> None:
    """Refuse bad knobs before anything is built (one line each)."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend {backend!r} is not available (choose one of {', '.join(map(repr, BACKENDS))})")
    if precision not in ("fp32", "bf16", "fp16"):
        raise ConfigError(f"precision {precision!r} is not one of fp32, bf16, fp16")
    if batch_size < 1 or grad_accum < 1:
        raise ConfigError(f"batch_size ({batch_size}) and grad_accum ({grad_accum}) must be >= 1")
    if not (lr > 0 and math.isfinite(lr)):
        raise ConfigError(f"lr must be a positive number, got {lr}")
    if not 0 <= batch_ramp <= 1:
        raise ConfigError(f"batch_ramp is a fraction of the budget in [0, 1], got {batch_ramp}")
    needs_steps = not schedule.time_based and (schedule.name != "constant" or schedule.warmup)
    if needs_steps and budget.max_steps is None:
        raise ConfigError(f"step-based schedule {schedule.name!r} needs a step budget (max_steps)")


def _finish_summary(run: Run, numbers: dict) -> None:
    """Every run ends with a ``summary.json`` (``complete: true``): written when the run has none, or
    only one this function wrote (a resumed API run). A recipe's own summary is left alone, and a
    recipe writing its summary after ``train`` replaces this one."""
    p = run.path / "summary.json"
    if p.exists():
        try:
            if run.summary().get("source") != "train":
                return
        except RunError:            # a corrupted summary is not ours to replace
            return
    run.write_summary({"source": "train", **numbers}, complete=True)


def _task_flops(model, data, seq_len: int) -> float | None:
    """Training FLOPs per token of ``model`` on the LM task ``data`` (the sparse MLM head decodes the
    masked share only); None for a config the FLOP count does not know."""
    head = getattr(data, "mlm_probability", 0.15) if getattr(data, "kind", "") == "mlm" else 1.0
    try:
        return count_flops(model, seq_len, head_fraction=head)
    except (AttributeError, TypeError, ValueError, ModelError):
        return None


@dataclass
class _Progress:
    """The loop's counters: what a checkpoint saves besides the model, optimizer and hooks."""
    step: int = 0
    tokens: int = 0
    flops: float = 0.0
    step_s: float | None = None      # recent duration of one step on the budget clock (evals excluded)

    def state(self) -> dict:
        return {"step": self.step, "tokens": self.tokens, "flops": self.flops, "step_s": self.step_s}


def _resume(run_path: str, model, be, sampler, batch_filter, budget: Budget, prog: _Progress) -> None:
    """Load the latest checkpoint of the run directory (if any) into every part of the loop."""
    ckpt_root = Path(run_path) / "checkpoints"
    ck = latest_checkpoint(ckpt_root)
    if ck is None:
        return
    st = load_checkpoint(ck, model, be.checkpoint_optimizer)
    be.load_engine(ckpt_root, ck.name)
    prog.step, prog.tokens, prog.flops, prog.step_s = st["step"], st["tokens"], st.get("flops", 0.0), st.get("step_s")
    sampler.load_state_dict(st["sampler"])
    if batch_filter is not None and st.get("filter") is not None:
        batch_filter.load_state_dict(st["filter"])
    budget.load_state_dict(st["budget"])
    set_rng_state(st["rng"])
    be.load_extra_state(st)


def _micro_batch(data, sampler, batch_filter, be, model, step: int, micro: int, batch_size: int, grad_accum: int,
                 rank: int, world: int, device) -> tuple[dict, float | None]:
    """Draw, collate, slice (this rank's rows) and filter one micro-batch; returns it and this rank's
    share of the micro-batch's loss targets (None in one process)."""
    n_draw = batch_filter.large_batch_size(batch_size) if batch_filter is not None else batch_size
    idx = sampler.next(n_draw * world)
    batch = data.collate(idx, step=step * grad_accum + micro)
    if world > 1:
        n_all = _targets(batch)
        batch = index_batch(batch, torch.arange(rank * n_draw, (rank + 1) * n_draw))
    batch = to_device(batch, device)
    if batch_filter is not None:
        batch = batch_filter.select(model, batch, data, step)
        if world > 1:
            n_all = be.reduce_sum([_targets(batch)])[0]
    share = _targets(batch) / max(n_all, 1) if world > 1 else None
    return batch, share


def _forward_backward(data, sampler, batch_filter, be, model, step: int, n_micro: int, batch_size: int,
                      grad_accum: int, rank: int, world: int, device) -> tuple[float, int]:
    """Accumulate the gradient of one optimizer step; returns (summed micro-batch losses, tokens)."""
    loss_sum, step_tokens = 0.0, 0
    for micro in range(n_micro):
        batch, share = _micro_batch(data, sampler, batch_filter, be, model, step, micro, batch_size, grad_accum,
                                    rank, world, device)
        with be.accumulate(last=micro == n_micro - 1):
            with be.autocast():
                loss = be.loss(batch)
            # each rank's loss is weighted by its share of the targets: N ranks = one process's gradient
            be.backward(loss / n_micro if share is None else loss * (share * world / n_micro))
        loss_sum += float(loss.detach()) if share is None else float(loss.detach()) * share
        step_tokens += data.tokens(batch)
    return loss_sum, step_tokens


def train(model, data, *, sampler=None, batch_filter=None, budget: Budget | None = None,
          schedule: Schedule | None = None, backend: str = "torch", run: Run | None = None,
          eval_data=None, batch_size: int = 32, grad_accum: int = 1, lr: float = 1e-3,
          weight_decay: float = 0.01, betas=(0.9, 0.999), eps: float = 1e-8, grad_clip: float | None = 1.0,
          eval_every: "int | EvalCadence" = 0, eval_batches: int | None = 8, eval_batch_size: int | None = None,
          checkpoint_every: int = 0, keep_checkpoints: int = 2, seed: int = 0, device=None,
          precision: str = "fp32", progress: bool = True, log_every: int = 1,
          flops_per_token: float | None = None, callbacks: tuple[Callable, ...] = (),
          optimizer=None, batch_ramp: float = 0.0, zero_stage: int = 0,
          backend_config: dict | None = None) -> TrainResult:
    """Train ``model`` on the task ``data``; see the module doc for the hooks.

    Parameters that cost: ``eval_every`` (an eval of ``eval_batches`` batches each time; counts
    against a time budget; an :class:`~workbench.training.budget.EvalCadence` evaluates more often
    at the start and the end of the budget, as 24hBERT does), ``checkpoint_every`` (a full weight + optimizer write; counts too),
    ``log_every`` (one JSON line per record). ``grad_accum`` multiplies the effective batch without
    memory; ``batch_ramp`` (a fraction of the budget, Cramming: 0.6) grows it from one micro-batch to
    ``grad_accum`` over that share of the budget. ``backend``: ``"torch"`` (one process, or DDP under
    torchrun) or ``"deepspeed"`` (``zero_stage`` 0-2; ``backend_config`` is merged into the
    DeepSpeed config, or passed to DDP for torch). When ``run`` was opened with ``resume=True``,
    training continues from its latest checkpoint: same data order, RNG, optimizer and (for time
    budgets) the elapsed time. The result's ``train_s`` / ``overshoot_s`` measure the training
    itself; the final eval and checkpoint after it are in ``wall_s`` only.
    """
    # 1. check the knobs and the data against the model
    budget = budget or Budget(max_steps=1000)
    schedule = schedule or Schedule("constant")
    _check_args(backend, precision, batch_size, grad_accum, lr, batch_ramp, budget, schedule)
    _check_vocab(model, data, "data")
    if eval_data is not None:
        _check_vocab(model, eval_data, "eval_data")
    if run is not None and not run.writable:
        raise RunError(f"run {run.path} is not open for writing (closed, or opened read-only with Run.open)")
    seq_len = getattr(data, "seq_len", None)       # an LM task's tokens per example; labelled tasks have none
    if isinstance(seq_len, int) and getattr(model, "config", None) is not None:
        check_seq_len(model, seq_len)              # else a raw IndexError inside the embedding at step 0
        if flops_per_token is None:                # FLOPs are logged for any HF model, not only when passed
            flops_per_token = _task_flops(model, data, seq_len)

    # 2. build: device, hooks, optimizer, backend (rank 0 alone writes the run)
    device = resolve_device(device)
    rank = (dist_env() or {"rank": 0})["rank"]
    main = rank == 0
    wrun = run if main else None
    torch.manual_seed(seed + rank)
    model.to(device)
    model.train()
    sampler = sampler or FullSampler()
    sampler.setup(data, seed=seed, run=wrun)
    if batch_filter is not None:
        batch_filter.run = wrun
        if hasattr(batch_filter, "setup"):
            batch_filter.setup(data, seed=seed, run=wrun)
    opt = optimizer or make_optimizer(model, lr, weight_decay, betas, eps)
    for g in opt.param_groups:
        g.setdefault("initial_lr", g["lr"])
    be = make_backend(backend, model, data, opt, device, precision, batch_size, grad_accum, grad_clip, zero_stage,
                      backend_config)
    world = be.world_size

    # 3. resume from rank 0's run directory (every rank loads; DeepSpeed writes per-rank parts)
    prog = _Progress()
    history: list[dict] = []
    shared = be.share({"path": str(run.path), "resumed": run.resumed} if (main and run is not None) else None)
    ckpt_root = Path(shared["path"]) / "checkpoints" if shared else None
    if shared and shared["resumed"]:
        _resume(shared["path"], model, be, sampler, batch_filter, budget, prog)
        if wrun is not None:
            wrun.truncate_metrics(lambda r: r.get("step", 0) <= prog.step)
            history = [r for r in wrun.metrics()]
    if wrun is not None:            # what `python -m workbench export` needs besides a checkpoint's weights
        save_run_start(wrun.path, model, getattr(data, "tokenizer", None))

    def checkpoint() -> None:
        be.save_engine(ckpt_root, f"step-{prog.step:08d}")
        if main:
            st = {**prog.state(), "sampler": sampler.state_dict(),
                  "filter": batch_filter.state_dict() if batch_filter is not None else None,
                  "budget": budget.state_dict(), "rng": rng_state(), **be.extra_state()}
            save_checkpoint(ckpt_root, prog.step, be.saveable(model), be.checkpoint_optimizer, st,
                            keep=keep_checkpoints)
        be.barrier()

    def log(rec: dict):
        history.append(rec)
        if wrun is not None:
            wrun.log(rec)

    # 4. the steps: refresh -> forward/backward -> LR -> update -> log, eval -> one budget decision
    ebs = eval_batch_size or batch_size
    budget.start()
    t_wall0 = time.perf_counter()
    t_prev = be.agree(budget.elapsed())      # budget time at the last step boundary
    bar = tqdm(total=budget.max_steps, initial=prog.step, disable=not (progress and main), mininterval=1.0,
               desc="train", leave=False)
    # before the first step (or at the resume point) nothing is due yet: markers fire at step ends
    decision = Decision(stop=budget.exhausted(prog.step, prog.tokens, t_prev, prog.step_s),
                        fraction=budget.fraction(prog.step, prog.tokens, t_prev))
    aside = 0.0                              # budget time spent on evals / markers / checkpoints since t_prev
    stop_reason, last_eval, lr_factor = decision.stop, None, None
    tok_window, t_window = 0, time.perf_counter()
    while stop_reason is None:
        step = prog.step
        sampler.refresh(model, step)
        n_micro = ramp_micro_batches(decision.fraction, grad_accum, batch_ramp)
        loss_sum, step_tokens = _forward_backward(data, sampler, batch_filter, be, model, step, n_micro, batch_size,
                                                  grad_accum, rank, world, device)
        t_update = budget.elapsed()
        if world > 1:                         # global loss and tokens; rank 0's clock
            loss_sum, step_tokens, t_update = be.reduce_sum([loss_sum, step_tokens, t_update if main else 0.0])
            step_tokens = int(round(step_tokens))
        loss_val = loss_sum / n_micro
        if not math.isfinite(loss_val):
            be.discard()
            stop_reason = "loss_not_finite"
            log({"step": step, "event": "stop", "reason": stop_reason, "loss": loss_val})
            break
        # the LR of a time-based schedule is its value at the moment the update is applied
        lr_factor = schedule.factor(step, budget.max_steps, budget.fraction(step, prog.tokens, t_update))
        for g in be.param_groups:
            g["lr"] = g["initial_lr"] * lr_factor
        be.step(grad_clip)
        collapsed = be.loss_scale_collapsed()
        prog.step, prog.tokens = step + 1, prog.tokens + step_tokens
        step = prog.step
        if flops_per_token:
            prog.flops += flops_per_token * step_tokens
        tok_window += step_tokens
        bar.update(1)
        if step % log_every == 0 or step == 1:
            now = time.perf_counter()
            rec = {"step": step, "tokens": prog.tokens, "flops": prog.flops, "loss": loss_val,
                   "lr": be.param_groups[0]["lr"], "elapsed_s": budget.elapsed(),
                   "tokens_per_s": tok_window / max(now - t_window, 1e-9)}
            if n_micro != grad_accum:
                rec["micro_batches"] = n_micro
            tok_window, t_window = 0, now
            log(rec)
            bar.set_postfix(loss=f"{loss_val:.3f}")
        if isinstance(eval_every, EvalCadence):     # denser at the start and the end of the budget
            evaluated = eval_data is not None and eval_every.due(step, budget.fraction(step, prog.tokens))
        else:
            evaluated = eval_data is not None and eval_every and step % eval_every == 0
        if evaluated:
            t0 = budget.elapsed()
            last_eval = be.agree(evaluate(model, eval_data, ebs, eval_batches, device, precision))
            model.train()
            log({"step": step, "tokens": prog.tokens, "flops": prog.flops, "eval_loss": last_eval,
                 "elapsed_s": budget.elapsed()})
            aside += budget.elapsed() - t0
        for cb in callbacks:
            cb(step=step, model=model, history=history)
        t_end, aside = be.agree([budget.elapsed(), aside])   # one reading for every decision of this step
        dt = max(t_end - t_prev - aside, 0.0)
        prog.step_s = dt if prog.step_s is None else 0.7 * prog.step_s + 0.3 * dt
        t_prev, aside = t_end, 0.0
        decision = budget.check(step, prog.tokens, t_end, prog.step_s, eval_loss=last_eval if evaluated else None)
        stop_reason = "loss_scale_collapsed" if collapsed else decision.stop
        for m in decision.markers:
            t0 = budget.elapsed()
            if wrun is not None:
                save_checkpoint(run.path / "markers", step, be.saveable(model), None, {"step": step, "marker": m},
                                name=f"marker-{m:g}", update_latest=False)
            log({"step": step, "event": "marker", "marker": m, "elapsed_s": t_end})
            aside += budget.elapsed() - t0
        if ckpt_root is not None and checkpoint_every and step % checkpoint_every == 0 and stop_reason is None:
            t0 = budget.elapsed()
            checkpoint()
            aside += budget.elapsed() - t0
    bar.close()

    # 5. finish: stop the clock, final checkpoint, final eval, the weights beside the run (model.safetensors
    #    and hf/, a Hugging Face directory), summary.json unless a recipe wrote its own
    train_s = be.agree(budget.stop())        # the deadline judges training only: the clock stops here
    overshoot = budget.overshoot(train_s)
    if ckpt_root is not None:
        checkpoint()
    be.finish()
    final_eval = None
    if eval_data is not None:
        final_eval = be.agree(evaluate(model, eval_data, ebs, eval_batches, device, precision))
        if not history or history[-1].get("eval_loss") is None or history[-1].get("step") != prog.step:
            log({"step": prog.step, "tokens": prog.tokens, "flops": prog.flops, "eval_loss": final_eval,
                 "elapsed_s": train_s})
    if budget.max_minutes is not None:
        log({"step": prog.step, "event": "end", "reason": stop_reason, "train_s": train_s, "overshoot_s": overshoot,
             "lr_factor": lr_factor})
    if wrun is not None:
        weights = be.saveable(model)
        save_model(weights, str(run.path / ".model.safetensors.tmp"))
        os.replace(run.path / ".model.safetensors.tmp", run.path / "model.safetensors")
        save_hf(run.path / HF_DIR, model, state_dict=None if weights is model else weights.state_dict(),
                tokenizer=getattr(data, "tokenizer", None))
    wall = time.perf_counter() - t_wall0
    if wrun is not None:
        _finish_summary(wrun, {"steps": prog.step, "tokens": prog.tokens, "flops": prog.flops,
                               "stop_reason": stop_reason, "final_eval_loss": final_eval, "wall_s": wall,
                               "train_s": train_s, "overshoot_s": overshoot, "world_size": world,
                               "backend": backend})
    return TrainResult(model=model, step=prog.step, tokens=prog.tokens, stop_reason=stop_reason, wall_s=wall,
                       final_eval_loss=final_eval, history=history, run=run, train_s=train_s, overshoot_s=overshoot,
                       lr_factor_end=lr_factor, world_size=world, backend=backend)
