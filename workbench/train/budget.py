"""Training budgets: a limit in steps, tokens or wall-clock minutes, checked every step.

The clock is injectable (``clock=``) so tests can drive time. Elapsed time is part of the state
(``state_dict``) so a resumed run continues the schedule by time rather than starting it over.
Time markers (fractions of the budget) fire once each; :mod:`workbench.train.loop` saves a
fine-tuning checkpoint at each.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Budget:
    max_steps: int | None = None        # optimizer steps
    max_tokens: int | None = None       # training tokens seen
    max_minutes: float | None = None    # wall-clock minutes of training (eval and checkpoints included)
    markers: tuple[float, ...] = ()     # fractions of the budget at which to save a checkpoint
    early_stop_after: float | None = None   # fraction of the budget after which ...
    early_stop_loss: float | None = None    # ... an eval loss still above this stops the run
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    def __post_init__(self):
        from ..config import check
        check(any(v is not None for v in (self.max_steps, self.max_tokens, self.max_minutes)),
              "a budget needs max_steps, max_tokens or max_minutes")
        for k in ("max_steps", "max_tokens"):
            v = getattr(self, k)
            check(v is None or v > 0, f"budget {k} must be positive, got {v}")
        check(self.max_minutes is None or (self.max_minutes > 0 and math.isfinite(self.max_minutes)),
              f"budget max_minutes must be positive, got {self.max_minutes}")
        check(all(0 < m < 1 for m in self.markers), f"budget markers must be in (0, 1), got {self.markers}")
        self._t0 = None
        self._offset = 0.0
        self.fired: list[float] = []

    # ------------------------------------------------------------------ time
    def start(self) -> None:
        self._t0 = self.clock()

    def elapsed(self) -> float:
        return self._offset + (self.clock() - self._t0 if self._t0 is not None else 0.0)

    @property
    def budget_s(self) -> float | None:
        return None if self.max_minutes is None else 60.0 * self.max_minutes

    def fraction(self, step: int, tokens: int) -> float:
        """Elapsed share of the budget: by time when a time limit is set, else steps, else tokens."""
        if self.max_minutes is not None:
            return self.elapsed() / self.budget_s
        if self.max_steps is not None:
            return step / self.max_steps
        return tokens / self.max_tokens

    def exhausted(self, step: int, tokens: int) -> str | None:
        """The reason to stop now, or None."""
        if self.max_steps is not None and step >= self.max_steps:
            return "max_steps"
        if self.max_tokens is not None and tokens >= self.max_tokens:
            return "max_tokens"
        if self.max_minutes is not None and self.elapsed() >= self.budget_s:
            return "deadline"
        return None

    def due_markers(self, step: int, tokens: int) -> list[float]:
        f = self.fraction(step, tokens)
        due = [m for m in self.markers if m <= f and m not in self.fired]
        self.fired.extend(due)
        return due

    def early_stop(self, step: int, tokens: int, eval_loss: float | None) -> str | None:
        if eval_loss is not None and not math.isfinite(eval_loss):
            return "eval_loss_not_finite"
        if self.early_stop_loss is None or eval_loss is None:
            return None
        after = self.early_stop_after or 0.0
        if self.fraction(step, tokens) >= after and eval_loss > self.early_stop_loss:
            return "eval_loss_above_threshold"
        return None

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {"elapsed": self.elapsed(), "fired": list(self.fired)}

    def load_state_dict(self, s: dict) -> None:
        self._offset = float(s["elapsed"])
        self._t0 = None
        self.fired = list(s.get("fired", []))
