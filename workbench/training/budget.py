"""Training budgets: a limit in steps, tokens or wall-clock minutes, checked after every step.

The academic-budget papers train "as well as possible in 24 hours": the deadline is the central knob.
Two details matter and are easy to get wrong:

* **Check the deadline every step.** 24hBERT's reference code checks the clock only between data
  shards and can overshoot by a whole shard; here :meth:`Budget.exhausted` runs after every optimizer
  step, so a run ends within one step of its deadline. ``finish="after"`` (the default, as both
  papers) steps until the deadline has passed: the overshoot is less than one step and the last
  update of a time-based schedule is applied at (or past) the deadline, with the LR at zero.
  ``finish="nearest"`` stops at the step boundary *nearest* the deadline, predicted from the recent
  step time: another step starts only if it is expected to end closer to the deadline than the run
  is now (half the expected overshoot and no zero-LR last step; the run may end up to half a step
  early, its last update at a small LR).
* **Elapsed time survives a resume.** It is part of :meth:`state_dict`, so a resumed run continues
  a time-based schedule where it stopped instead of starting it over.

Time markers (fractions of the budget, e.g. 0.5 and 0.9) fire once each; the loop saves a
fine-tuning checkpoint at each (24hBERT evaluates such checkpoints downstream). Early stop: an eval
loss still above ``early_stop_loss`` once ``early_stop_after`` of the budget has passed ends the run
(24hBERT's rule for abandoning a bad hyper-parameter trial early); the loop also stops on a
non-finite loss or a collapsed fp16 loss scale.

The loop asks the budget once per step: :meth:`Budget.check` returns a :class:`Decision` (the reason
to stop, or None; the time markers now due; the elapsed fraction), read off one clock reading.

The clock is injectable (``clock=``) so tests can drive time. Every method that reads time takes an
optional ``elapsed=`` so that all ranks of a distributed run decide on the same (rank 0's) reading.

:class:`SimClock` is a simulated clock for comparisons that must not depend on the machine's load:
each micro-batch costs a fixed number of simulated seconds times a seeded, slowly drifting factor
(within +-``drift``), optionally times ``slowdown`` once ``slowdown_at`` simulated seconds have passed.
The clock advances when the loop draws a micro-batch (wrap the sampler with :meth:`SimClock.sampler`),
so the update of step k is applied at the simulated end of step k, as on a real clock; evaluations
cost no simulated time. The run is then a deterministic function of its seeds, and
:meth:`SimClock.steps_within` tells in advance how many steps a budget holds (an oracle's step count).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..config import check


@dataclass(frozen=True)
class Decision:
    """What the budget decided at the end of a step, from one reading of the clock."""
    stop: str | None                    # why to stop now ("max_steps", "deadline", "eval_loss_above_threshold", ...), or None
    markers: tuple[float, ...] = ()     # time markers reached since the last check (each fires once)
    fraction: float = 0.0               # elapsed share of the budget at this check


@dataclass
class Budget:
    max_steps: int | None = None        # optimizer steps
    max_tokens: int | None = None       # training tokens seen
    max_minutes: float | None = None    # wall-clock minutes of training (periodic evals and checkpoints included)
    markers: tuple[float, ...] = ()     # fractions of the budget at which to save a checkpoint
    early_stop_after: float | None = None   # fraction of the budget after which ...
    early_stop_loss: float | None = None    # ... an eval loss still above this stops the run
    finish: str = "after"               # "after": stop once past the deadline; "nearest": at the nearest step boundary
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    def __post_init__(self):
        check(any(v is not None for v in (self.max_steps, self.max_tokens, self.max_minutes)),
              "a budget needs max_steps, max_tokens or max_minutes")
        for k in ("max_steps", "max_tokens"):
            v = getattr(self, k)
            check(v is None or v > 0, f"budget {k} must be positive, got {v}")
        check(self.max_minutes is None or (self.max_minutes > 0 and math.isfinite(self.max_minutes)),
              f"budget max_minutes must be positive, got {self.max_minutes}")
        self.markers = tuple(sorted(float(m) for m in self.markers))
        check(all(0 < m < 1 for m in self.markers), f"budget markers must be in (0, 1), got {self.markers}")
        check(self.early_stop_after is None or 0 <= self.early_stop_after <= 1,
              f"budget early_stop_after must be a fraction in [0, 1], got {self.early_stop_after}")
        check(self.finish in ("nearest", "after"), f"budget finish must be 'nearest' or 'after', got {self.finish!r}")
        self._t0 = None
        self._offset = 0.0
        self.fired: list[float] = []

    # ------------------------------------------------------------------ time
    def start(self) -> None:
        """Start (or restart, after :meth:`load_state_dict`) the clock."""
        self._t0 = self.clock()

    def stop(self) -> float:
        """Freeze the clock (training is over; a final eval or save does not count); returns elapsed."""
        self._offset = self.elapsed()
        self._t0 = None
        return self._offset

    def elapsed(self) -> float:
        """Seconds of training so far (including time before a resume)."""
        return self._offset + (self.clock() - self._t0 if self._t0 is not None else 0.0)

    @property
    def budget_s(self) -> float | None:
        return None if self.max_minutes is None else 60.0 * self.max_minutes

    def _now(self, elapsed: float | None) -> float:
        return self.elapsed() if elapsed is None else elapsed

    def fraction(self, step: int, tokens: int, elapsed: float | None = None) -> float:
        """Elapsed share of the budget: by time when a time limit is set, else steps, else tokens."""
        if self.max_minutes is not None:
            return self._now(elapsed) / self.budget_s
        if self.max_steps is not None:
            return step / self.max_steps
        return tokens / self.max_tokens

    def exhausted(self, step: int, tokens: int, elapsed: float | None = None,
                  step_s: float | None = None) -> str | None:
        """The reason to stop now, or None.

        ``step_s`` is the expected duration of the next step; with ``finish="nearest"`` the deadline
        counts as reached once the next step would end further past it than the run is before it.
        """
        if self.max_steps is not None and step >= self.max_steps:
            return "max_steps"
        if self.max_tokens is not None and tokens >= self.max_tokens:
            return "max_tokens"
        if self.max_minutes is not None:
            now = self._now(elapsed)
            ahead = 0.5 * step_s if (self.finish == "nearest" and step_s) else 0.0
            if now + ahead >= self.budget_s:
                return "deadline"
        return None

    def overshoot(self, elapsed: float | None = None) -> float | None:
        """Seconds past the deadline (0 when the run ended before it); None without a time limit."""
        if self.max_minutes is None:
            return None
        return max(0.0, self._now(elapsed) - self.budget_s)

    def due_markers(self, step: int, tokens: int, elapsed: float | None = None) -> list[float]:
        """Markers reached since the last call (each fires once, also across a resume)."""
        f = self.fraction(step, tokens, elapsed)
        due = [m for m in self.markers if m <= f and m not in self.fired]
        self.fired.extend(due)
        return due

    def early_stop(self, step: int, tokens: int, eval_loss: float | None, elapsed: float | None = None) -> str | None:
        """The reason to stop after an eval of ``eval_loss``, or None."""
        if eval_loss is not None and not math.isfinite(eval_loss):
            return "eval_loss_not_finite"
        if self.early_stop_loss is None or eval_loss is None:
            return None
        after = self.early_stop_after or 0.0
        if self.fraction(step, tokens, elapsed) >= after and eval_loss > self.early_stop_loss:
            return "eval_loss_above_threshold"
        return None

    def check(self, step: int, tokens: int, elapsed: float | None = None, step_s: float | None = None,
              eval_loss: float | None = None) -> Decision:
        """The budget's one decision per step, at budget time ``elapsed`` (default: now).

        ``eval_loss`` is the held-out loss when this step evaluated (for the early-stop rule);
        ``step_s`` the expected duration of the next step (for ``finish="nearest"``). An early stop
        takes precedence over an exhausted budget; the due markers are reported either way.
        """
        now = self._now(elapsed)
        stop = self.early_stop(step, tokens, eval_loss, now) if eval_loss is not None else None
        markers = tuple(self.due_markers(step, tokens, now))
        stop = stop or self.exhausted(step, tokens, now, step_s)
        return Decision(stop=stop, markers=markers, fraction=self.fraction(step, tokens, now))

    # ------------------------------------------------------------------ state
    def state_dict(self, elapsed: float | None = None) -> dict:
        return {"elapsed": self._now(elapsed), "fired": list(self.fired)}

    def load_state_dict(self, s: dict) -> None:
        """Continue from a saved state: elapsed time carries over; the clock restarts at :meth:`start`."""
        self._offset = float(s["elapsed"])
        self._t0 = None
        self.fired = list(s.get("fired", []))


@dataclass(frozen=True)
class EvalCadence:
    """When to evaluate, by the elapsed share of the budget (24hBERT's ``should_run_validation``).

    Every ``every`` steps in the middle of the budget; every ``every_begin`` steps while less than
    ``begin`` of it has elapsed, and every ``every_end`` steps once more than ``1 - end`` has
    (``validation_epochs`` / ``validation_epochs_begin`` / ``validation_epochs_end`` and
    ``validation_begin_proportion`` / ``validation_end_proportion`` in academic-budget-bert's
    ``run_pretraining.py``, whose units are data shards rather than steps). The share is the budget's
    :meth:`Budget.fraction`: by time under a time budget, else by steps or tokens. Pass it as
    ``wb.train(..., eval_every=EvalCadence(...))``.
    """
    every: int
    every_begin: int | None = None      # steps between evals in the first `begin` of the budget (None: every)
    every_end: int | None = None        # steps between evals in the last `end` of the budget (None: every)
    begin: float = 0.0                  # share of the budget with the denser cadence at the start
    end: float = 0.0                    # share of the budget with the denser cadence at the end

    def __post_init__(self):
        for k in ("every", "every_begin", "every_end"):
            v = getattr(self, k)
            check(v is None or (isinstance(v, int) and v >= 1), f"eval cadence {k} must be an int >= 1, got {v!r}")
        check(0 <= self.begin <= 1 and 0 <= self.end <= 1 and self.begin + self.end <= 1,
              f"eval cadence begin and end are shares of the budget in [0, 1] summing to at most 1, "
              f"got {self.begin} and {self.end}")

    def period(self, fraction: float) -> int:
        """Steps between evals at this elapsed share of the budget."""
        if fraction < self.begin:
            return self.every_begin or self.every
        if fraction > 1 - self.end:
            return self.every_end or self.every
        return self.every

    def due(self, step: int, fraction: float) -> bool:
        """Whether to evaluate after optimizer step ``step`` at elapsed share ``fraction``."""
        return step % self.period(fraction) == 0


class SimClock:
    """A simulated clock: ``clock()`` returns simulated seconds; :meth:`tick` advances it by micro-batches.

    One micro-batch costs ``micro_s * m(t)`` simulated seconds, where ``m(t)`` is a drift factor in
    ``[1 - drift, 1 + drift]`` interpolated linearly between seeded knots every ``period`` simulated
    seconds (uniform draws of ``np.random.default_rng(seed)``), times ``slowdown`` from simulated time
    ``slowdown_at`` on (a machine that gets busier halfway, say). Same seed, same time for every call
    sequence: ``Budget(max_minutes=..., clock=c)`` with ``train(..., sampler=c.sampler(FullSampler()))``.
    """

    def __init__(self, micro_s: float = 1.0, drift: float = 0.2, seed: int = 0, period: float | None = None,
                 slowdown: float = 1.0, slowdown_at: float | None = None):
        check(micro_s > 0 and math.isfinite(micro_s), f"SimClock micro_s must be positive, got {micro_s}")
        check(0 <= drift < 1, f"SimClock drift must be in [0, 1), got {drift}")
        check(slowdown > 0, f"SimClock slowdown must be positive, got {slowdown}")
        self.micro_s, self.drift, self.seed, self.slowdown, self.slowdown_at = micro_s, drift, seed, slowdown, slowdown_at
        self.period = float(period) if period is not None else 10.0 * micro_s   # simulated seconds between drift knots
        check(self.period > 0, f"SimClock period must be positive, got {period}")
        self._rng = np.random.default_rng(seed)
        self._knots: list[float] = []
        self.t = 0.0
        self.ticks = 0

    def __call__(self) -> float:
        return self.t

    def _knot(self, i: int) -> float:
        while len(self._knots) <= i:
            self._knots.append(1.0 + self.drift * (2.0 * float(self._rng.random()) - 1.0))
        return self._knots[i]

    def factor(self, t: float) -> float:
        """The step-time multiplier at simulated time ``t`` (drift x slowdown)."""
        i, r = divmod(t / self.period, 1.0)
        i = int(i)
        m = (1.0 - r) * self._knot(i) + r * self._knot(i + 1)
        if self.slowdown_at is not None and t >= self.slowdown_at:
            m *= self.slowdown
        return m

    def tick(self, n: int = 1) -> float:
        """Advance by ``n`` micro-batches (each priced at the time it starts); returns the new time."""
        for _ in range(n):
            self.t += self.micro_s * self.factor(self.t)
            self.ticks += 1
        return self.t

    def fresh(self) -> "SimClock":
        """A copy of this clock at time zero (same seed, same drift)."""
        return SimClock(self.micro_s, self.drift, self.seed, self.period, self.slowdown, self.slowdown_at)

    def steps_within(self, budget_s: float, micro_per_step: int = 1) -> int:
        """Optimizer steps a run from time zero makes under ``Budget(max_minutes=budget_s / 60)`` with
        ``finish="after"``: the first step that ends at or past the deadline is the last."""
        c, n = self.fresh(), 0
        while c.t < budget_s:
            c.tick(micro_per_step)
            n += 1
        return n

    def sampler(self, inner) -> "ClockedSampler":
        """``inner`` (a Sampler) wrapped so every micro-batch it serves advances this clock."""
        return ClockedSampler(inner, self)


class ClockedSampler:
    """A sampler that advances a :class:`SimClock` by one micro-batch per draw; otherwise ``inner``."""

    def __init__(self, inner, clock: SimClock):
        self.inner, self.clock = inner, clock
        self.name = getattr(inner, "name", "clocked")

    def setup(self, data, seed: int = 0, run=None) -> None:
        self.inner.setup(data, seed=seed, run=run)

    def refresh(self, model, step: int) -> None:
        self.inner.refresh(model, step)

    def next(self, n: int) -> list[int]:
        self.clock.tick(1)
        return self.inner.next(n)

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)

    def __getattr__(self, name):                 # stats() and anything else the inner sampler offers
        if name in ("inner", "clock"):
            raise AttributeError(name)
        return getattr(self.inner, name)
