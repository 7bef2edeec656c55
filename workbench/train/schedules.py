"""Learning-rate schedules: the LR multiplier as a function of the step or of the elapsed fraction.

Step-based (``constant``, ``linear``, ``cosine``) need the total number of steps, which a wall-clock
budget does not know in advance: the usual practice is to guess it from a measured step time, and a
wrong guess leaves the LR high at the deadline or decays it too early. Time-based schedules take the
*fraction of the budget elapsed* instead:

``time-linear``  warmup over ``warmup`` (a fraction of the budget's wall time), then linear decay to
                 zero exactly at the deadline (24hBERT, Izsak et al. 2021).
``triangle``     Cramming's budget triangle (Geiping & Goldstein 2022): rises linearly from zero to
                 the peak at fraction ``peak`` of the budget, then falls linearly to zero at the end.

``factor(step, total_steps, fraction)`` returns the multiplier of the base LR.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import check

NAMES = ("constant", "linear", "cosine", "time-linear", "triangle")


@dataclass(frozen=True)
class Schedule:
    name: str = "linear"       # one of NAMES
    warmup: float = 0.0        # step-based: warmup steps; time-based: fraction of the budget
    peak: float = 0.5          # triangle: elapsed fraction at which the LR peaks
    final: float = 0.0         # multiplier reached at the end (0 = decay to zero)

    def __post_init__(self):
        check(self.name in NAMES, f"schedule {self.name!r} is not one of {NAMES}")
        check(self.warmup >= 0, f"schedule warmup must be >= 0, got {self.warmup}")
        check(0 < self.peak <= 1, f"schedule peak must be in (0, 1], got {self.peak}")
        check(0 <= self.final <= 1, f"schedule final must be in [0, 1], got {self.final}")
        if self.time_based:
            check(self.warmup < 1, f"time-based warmup is a fraction of the budget (< 1), got {self.warmup}")

    @property
    def time_based(self) -> bool:
        return self.name in ("time-linear", "triangle")

    def factor(self, step: int, total_steps: int | None = None, fraction: float | None = None) -> float:
        """LR multiplier before optimizer step ``step`` (0-based).

        Step-based schedules use ``step / total_steps``; time-based ones ``fraction`` (elapsed share of
        the budget, clipped to [0, 1]).
        """
        f0 = self.final
        if self.name == "constant":
            if self.warmup and step < self.warmup:
                return (step + 1) / self.warmup
            return 1.0
        if self.time_based:
            if fraction is None:
                raise ValueError(f"schedule {self.name!r} needs the elapsed fraction of a budget")
            x = min(max(fraction, 0.0), 1.0)
            if self.name == "time-linear":
                if self.warmup and x < self.warmup:
                    return x / self.warmup
                return f0 + (1 - f0) * (1 - x) / (1 - self.warmup)
            if x < self.peak:
                return x / self.peak
            return f0 + (1 - f0) * (1 - x) / (1 - self.peak) if self.peak < 1 else 1.0
        if not total_steps:
            raise ValueError(f"schedule {self.name!r} needs the total number of steps")
        if self.warmup and step < self.warmup:
            return (step + 1) / self.warmup
        span = max(total_steps - self.warmup, 1)
        x = min(max((step - self.warmup) / span, 0.0), 1.0)
        if self.name == "linear":
            return f0 + (1 - f0) * (1 - x)
        return f0 + (1 - f0) * 0.5 * (1 + math.cos(math.pi * x))
