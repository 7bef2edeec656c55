"""Learning-rate schedules and the batch-size ramp, as functions of the step or of the elapsed fraction.

Step-based schedules (``constant``, ``linear``, ``cosine``) need the total number of steps, which a
wall-clock budget does not know in advance: the usual practice is to guess it from a measured step
time, and a wrong guess leaves the LR high at the deadline (too many steps guessed) or decays it to
zero long before the deadline (too few). Time-based schedules take the *fraction of the budget
elapsed* instead, so they end exactly at the deadline whatever the step time turns out to be:

``time-linear``  warmup over ``warmup`` (a fraction of the budget's wall time), then linear decay to
                 zero exactly at the deadline (24hBERT, Izsak et al. 2021: ``warmup=0.06``)::

                    1 ┤   /\\
                      │  /   \\___
                      │ /        \\___
                    0 ┼/             \\__  x = elapsed / budget
                      0  w            1

``triangle``     Cramming's budget triangle (Geiping & Goldstein 2022, ``budget-triangle2`` of its
                 final recipe): the LR starts at ``start`` (0.25) of its peak, rises linearly to the
                 peak at ``peak`` (0.75) of the budget, then falls linearly to zero at the deadline.
                 A late peak keeps the LR high while the loss still falls fast and leaves a short,
                 steep cooldown; Cramming found it the best of its budget schedules::

                    1 ┤          /\\
                      │      ___/  \\
                      │  ___/       \\
                 0.25 ┤_/            \\
                    0 ┼───────────────\\  x
                      0          0.75  1

24hBERT's code divides the time-linear decay by ``max(1 hour, budget - warmup)`` (hours are its time
unit; ``pretraining/schedules.py``, ``LinearCurve.get_decay``): under a budget shorter than about an
hour the LR drops at the end of the warmup to ``(budget - warmup) / 1 h`` of its peak and decays to
zero from there. ``min_decay_hours=1`` (with ``budget_hours``, the run's budget) reproduces that
clamp; the default 0 decays from the peak whatever the budget (the two agree from ~1.06 h on).

``warmup`` has one unit for every schedule: a fraction of the budget (of the total steps for the
step-based ones, of the wall-clock budget for the time-based ones).

``factor(step, total_steps, fraction)`` returns the multiplier of the base (peak) LR. The loop
evaluates it right before each optimizer update, so a time-based LR is the schedule's value at the
moment the update is applied (zero for an update applied past the deadline).

:func:`ramp_micro_batches` is Cramming's optional batch-size ramp: the number of micro-batches
accumulated per step grows linearly with the elapsed fraction, from one to the full
``grad_accum`` at fraction ``ramp`` (Cramming: 0.6), so early steps are cheap and frequent.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import check

NAMES = ("constant", "linear", "cosine", "time-linear", "triangle")


@dataclass(frozen=True)
class Schedule:
    name: str = "linear"       # one of NAMES
    warmup: float = 0.0        # fraction of the budget (steps or wall time) spent warming up (24hBERT: 0.06)
    peak: float = 0.75         # triangle: elapsed fraction at which the LR peaks (Cramming: 0.75)
    start: float = 0.25        # triangle: multiplier at the start of the budget (Cramming: 0.25)
    final: float = 0.0         # multiplier reached at the end (0 = decay to zero)
    min_decay_hours: float = 0.0   # time-linear: floor of the decay span in hours (24hBERT's code: 1.0; 0: off)
    budget_hours: float | None = None   # time-linear: the budget in hours (needed with min_decay_hours)

    def __post_init__(self):
        check(self.name in NAMES, f"schedule {self.name!r} is not one of {NAMES}")
        check(self.warmup >= 0 and math.isfinite(self.warmup), f"schedule warmup must be >= 0, got {self.warmup}")
        check(0 < self.peak <= 1, f"schedule peak must be in (0, 1], got {self.peak}")
        check(0 <= self.start <= 1, f"schedule start must be in [0, 1], got {self.start}")
        check(0 <= self.final <= 1, f"schedule final must be in [0, 1], got {self.final}")
        check(self.warmup < 1, f"schedule warmup is a fraction of the budget in [0, 1), got {self.warmup}")
        check(self.min_decay_hours >= 0 and math.isfinite(self.min_decay_hours),
              f"schedule min_decay_hours must be >= 0, got {self.min_decay_hours}")
        if self.min_decay_hours:
            check(self.name == "time-linear", "min_decay_hours applies to the time-linear schedule only")
            check(self.budget_hours is not None and self.budget_hours > 0,
                  "min_decay_hours needs budget_hours, the run's budget in hours")
        if self.name == "triangle":
            check(self.warmup == 0, "the triangle has its own rise (start -> peak); leave warmup at 0")

    @property
    def time_based(self) -> bool:
        return self.name in ("time-linear", "triangle")

    def warmup_steps(self, total_steps: int | None) -> int:
        """Warmup of a step-based schedule in optimizer steps: ``round(warmup * total_steps)``."""
        if not total_steps:
            raise ValueError(f"schedule {self.name!r} with warmup needs the total number of steps")
        return int(round(self.warmup * total_steps))

    def factor(self, step: int, total_steps: int | None = None, fraction: float | None = None) -> float:
        """LR multiplier for optimizer step ``step`` (0-based).

        Step-based schedules use ``step / total_steps``; time-based ones ``fraction`` (elapsed share of
        the budget, clipped to [0, 1]).
        """
        f0 = self.final
        if self.name == "constant":
            w = self.warmup_steps(total_steps) if self.warmup else 0
            if w and step < w:
                return (step + 1) / w
            return 1.0
        if self.time_based:
            if fraction is None:
                raise ValueError(f"schedule {self.name!r} needs the elapsed fraction of a budget")
            x = min(max(fraction, 0.0), 1.0)
            if self.name == "time-linear":
                if self.warmup and x < self.warmup:
                    return x / self.warmup
                span = 1 - self.warmup
                if self.min_decay_hours:                # 24hBERT: max(1 h, budget - warmup), as a fraction
                    span = max(span, self.min_decay_hours / self.budget_hours)
                return f0 + (1 - f0) * (1 - x) / span
            if x < self.peak:                          # triangle: rising edge from `start`
                return self.start + (1 - self.start) * x / self.peak
            if self.peak == 1:
                return 1.0
            return f0 + (1 - f0) * (1 - x) / (1 - self.peak)
        if not total_steps:
            raise ValueError(f"schedule {self.name!r} needs the total number of steps")
        w = self.warmup_steps(total_steps)
        if w and step < w:
            return (step + 1) / w
        span = max(total_steps - w, 1)
        x = min(max((step - w) / span, 0.0), 1.0)
        if self.name == "linear":
            return f0 + (1 - f0) * (1 - x)
        return f0 + (1 - f0) * 0.5 * (1 + math.cos(math.pi * x))


def ramp_micro_batches(fraction: float, grad_accum: int, ramp: float) -> int:
    """Micro-batches to accumulate at elapsed ``fraction`` under a batch-size ramp (Cramming).

    The batch grows linearly from one micro-batch at the start to ``grad_accum`` micro-batches at
    fraction ``ramp`` and stays there: ``min(grad_accum, 1 + floor(grad_accum * fraction / ramp))``.
    ``ramp=0`` switches the ramp off (always ``grad_accum``).
    """
    if ramp <= 0 or grad_accum <= 1:
        return grad_accum
    return int(min(grad_accum, 1 + math.floor(grad_accum * max(fraction, 0.0) / ramp)))


@dataclass(frozen=True)
class WarmupStableDecay:
    """Warmup-stable-decay (WSD): linear warmup over ``warmup`` of the steps, the peak LR held
    constant, then a linear decay to ``final`` over the last ``decay`` of the steps.

    The authors of MATES pretrain with WSD (``src/pretrain/pretrain.py``, ``get_wsd_lr``: warmup,
    constant until the checkpoint, then a decay) so that every probe step between the warmup and the
    decay takes the same LR. Drop-in for :class:`Schedule` in ``wb.train(schedule=...)``; build it
    with :func:`warmup_stable_decay`.
    """
    warmup: float = 0.0
    decay: float = 0.1
    final: float = 0.0
    name: str = "wsd"
    time_based: bool = False

    def __post_init__(self):
        check(0 <= self.warmup < 1 and 0 <= self.decay <= 1 and self.warmup + self.decay <= 1,
              f"wsd needs warmup, decay in [0, 1) with warmup + decay <= 1, got {self.warmup}, {self.decay}")
        check(0 <= self.final <= 1, f"schedule final must be in [0, 1], got {self.final}")

    def warmup_steps(self, total_steps: int | None) -> int:
        if not total_steps:
            raise ValueError("schedule 'wsd' needs the total number of steps")
        return int(round(self.warmup * total_steps))

    def factor(self, step: int, total_steps: int | None = None, fraction: float | None = None) -> float:
        """LR multiplier for optimizer step ``step`` (0-based) of ``total_steps``."""
        w = self.warmup_steps(total_steps)
        if w and step < w:
            return (step + 1) / w
        d = int(round(self.decay * total_steps))
        start = total_steps - d                      # first step of the decay
        if step < start or d == 0:
            return 1.0
        x = min((step - start + 1) / (d + 1), 1.0)  # reaches ``final`` just after the last step (as ``linear``)
        return 1.0 + (self.final - 1.0) * x


def warmup_stable_decay(warmup: float = 0.0, decay: float = 0.1, final: float = 0.0) -> WarmupStableDecay:
    """A warmup-stable-decay schedule (:class:`WarmupStableDecay`); fractions of the step budget."""
    return WarmupStableDecay(warmup=warmup, decay=decay, final=final)
