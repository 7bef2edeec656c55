"""Token-level RHO-LOSS for language models: Rho-1's selective language modelling.

Lin et al. 2024 ("Rho-1: Not All Tokens Are What You Need") carry RHO-LOSS from examples to tokens:
score every target token of a batch by its *excess loss* against a reference model trained on
curated data, ``L_θ(x_i) - L_ref(x_i)``, and train only on the top ``fraction`` of the batch's
tokens (the loss is averaged over those). Tokens the reference model also finds hard (noise,
unpredictable names, boilerplate it never saw) score low; tokens the current model has not yet
learnt but the reference can predict score high.

:class:`TokenExcessLoss` is a batch filter for ``wb.train`` on a causal-LM task
(:class:`~workbench.data.batching.CLMTask`): it keeps every sequence and sets ``labels`` to -100 at
the dropped positions, which ``CLMTask.loss`` already ignores. Cost per step: one extra forward of
the current model and one of the reference over the batch (no gradients).

Records per step (``scores/token_selection.npz`` on checkpoint or ``flush()``): ``step``, the
``index`` of each sequence, its ``kept`` and ``valid`` token counts, and its mean excess loss.
``stats()`` gives the share of tokens kept and ``select_s`` (seconds spent selecting). The filter
draws no random numbers: its state is its counters and that record (``state_dict``), so a resumed
run keeps exactly the tokens an uninterrupted one keeps.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from ..errors import ConfigError
from .rho_loss import restore_log


def token_keep_mask(excess: torch.Tensor, valid: torch.Tensor, fraction: float) -> torch.Tensor:
    """The top ``round(fraction * valid.sum())`` (at least one) valid positions of ``excess`` [B, T]
    by value, as a bool mask [B, T] (ties: the earlier position in row-major order first)."""
    n_valid = int(valid.sum())
    k = min(max(1, int(round(fraction * n_valid))), n_valid)
    flat = excess.float().masked_fill(~valid, float("-inf")).flatten()
    rows = torch.sort(flat, descending=True, stable=True).indices[:k]
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[rows] = True
    return mask.view(excess.shape)


class TokenExcessLoss:
    """Batch filter: train on the ``fraction`` of a batch's target tokens (share, in (0, 1]) with the
    highest excess loss over ``reference`` (a frozen causal LM on the same tokenizer)."""

    name = "token_excess"

    def __init__(self, reference, fraction: float = 0.6, record_every: int = 1):
        if not 0 < fraction <= 1:
            raise ConfigError(f"token fraction must be in (0, 1], got {fraction}")
        if record_every < 1:
            raise ConfigError(f"record_every must be >= 1, got {record_every}")
        self.reference, self.fraction, self.record_every = reference, fraction, record_every
        self.run = None
        self.kept_tokens = self.valid_tokens = self.n_steps = 0
        self.last_step = -1
        self.select_s = 0.0
        self._log: dict[str, list] = {k: [] for k in ("step", "index", "kept", "valid", "excess")}

    def large_batch_size(self, batch_size: int) -> int:
        return batch_size                            # every sequence stays; tokens are dropped

    def setup(self, data, seed: int = 0, run=None) -> None:
        if not hasattr(data, "per_token_loss"):
            raise ConfigError("token-level selection needs a causal-LM task with per_token_loss (CLMTask)")
        self.run = run if run is not None else self.run
        self.reference.eval()

    def select(self, model, batch: dict, task, step: int) -> dict:
        t0 = time.perf_counter()
        was = model.training
        model.eval()
        self.reference.to(batch["input_ids"].device)
        with torch.no_grad():
            cur = task.per_token_loss(model, batch)                       # [B, T-1]
            ref = task.per_token_loss(self.reference, batch)              # [B, T-1]
        model.train(was)
        valid = batch["labels"][:, 1:] != -100                            # the targets of positions 0..T-2
        excess = cur - ref
        mask = token_keep_mask(excess, valid, self.fraction)
        labels = batch["labels"].clone()
        labels[:, 1:] = torch.where(mask, labels[:, 1:], torch.full_like(labels[:, 1:], -100))
        out = dict(batch)
        out["labels"] = labels
        kept, nv = mask.sum(1), valid.sum(1)
        self.kept_tokens += int(kept.sum())
        self.valid_tokens += int(nv.sum())
        self.n_steps += 1
        self.last_step = max(self.last_step, int(step))
        if step % self.record_every == 0:
            mean_ex = (excess * valid).sum(1) / nv.clamp_min(1)
            for key, v in (("step", torch.full_like(kept, step)), ("index", batch["index"]), ("kept", kept),
                           ("valid", nv), ("excess", mean_ex)):
                self._log[key].append(v.detach().cpu().numpy())
        self.select_s += time.perf_counter() - t0
        return out

    def stats(self) -> dict:
        """``kept_fraction`` (share of the valid target tokens trained on), ``kept_tokens``, ``steps``
        and ``select_s`` (seconds spent in ``select``)."""
        return {"kept_fraction": self.kept_tokens / max(self.valid_tokens, 1), "kept_tokens": self.kept_tokens,
                "steps": self.n_steps, "select_s": self.select_s}

    def records(self) -> dict[str, np.ndarray]:
        """The per-sequence record so far, one row per (step, sequence)."""
        return {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in self._log.items()}

    def flush(self) -> None:
        """Write the record to ``scores/token_selection.npz`` of the run (if any)."""
        if self.run is not None:
            self.run.save_scores("token_selection", **self.records())

    def state_dict(self) -> dict:
        """Counters and timing; the record goes to the run's ``scores/`` (flushed here, read back on
        load), or into the state when there is no run. The reference model is frozen: not state."""
        self.flush()
        s = {"kept_tokens": self.kept_tokens, "valid_tokens": self.valid_tokens, "n_steps": self.n_steps,
             "last_step": self.last_step, "select_s": self.select_s}
        if self.run is None:
            s["records"] = self.records()
        return s

    def load_state_dict(self, s: dict) -> None:
        self.kept_tokens, self.valid_tokens = int(s["kept_tokens"]), int(s["valid_tokens"])
        self.n_steps, self.last_step = int(s.get("n_steps", 0)), int(s.get("last_step", -1))
        self.select_s = float(s["select_s"])
        upto = self.last_step if "last_step" in s else np.iinfo(np.int64).max     # older states: keep the record
        if "records" in s:
            self._log = restore_log(self._log, s["records"], upto)
        elif self.run is not None and "token_selection" in self.run.score_names():
            self._log = restore_log(self._log, self.run.load_scores("token_selection"), upto)
