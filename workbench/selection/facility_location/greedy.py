"""Greedy optimizers of the facility-location objective over an engine.

Optimizers and what they cost (n points, budget k, kernel width w)
------------------------------------------------------------------
``optimizer="naive"``
    Textbook greedy: every step evaluates the gain of every remaining candidate (vectorised).
    ``O(k n w)`` (``w = n`` for a dense kernel).  The reference for exactness.
``optimizer="lazy"``
    Exact lazy greedy (Minoux 1978): by submodularity a gain computed earlier is an upper bound
    of the current one, so only candidates whose stale bound still reaches the best gain found
    so far are re-evaluated -- all of them in one vectorised batch.  The "priority queue" is a
    flat array of bounds whose first maximum is found with one ``argmax`` (it breaks ties by
    lowest index exactly as naive does).  Same picks and *bitwise* the same gains as
    ``naive``, with far fewer evaluations per step.
``optimizer="stochastic"``
    Stochastic greedy (Mirzasoleiman et al. 2015, "Lazier than lazy greedy"): each step
    evaluates only a random sample of ``(n/k) log(1/epsilon)`` remaining candidates and takes the
    best; ``1 - 1/e - epsilon`` in expectation, ``O(n log(1/epsilon) w)`` in total, seeded.

All three ask :class:`_CompactionSchedule` after every pick whether the engine should drop its
dead kernel entries.  The decision depends only on state naive and lazy share, so both compact
at the same steps, and lazy recomputes every bound right after, so exactness is kept.
"""

from __future__ import annotations

import math
import time

import numpy as np
from tqdm.auto import tqdm

from .base import _NEG_INF
from .engines import _Engine

_DENSE_SHRINK = 8  # dense -> ELL once the live width is below n / 8
_EVALS_PER_STEP = 32


class _CompactionSchedule:
    """Decides when to rewrite the kernel without its dead entries.

    Checks happen at geometrically spaced steps (1, 2, 3, 4, 5, 7, 9, 12, ...) with a cheap
    sampled estimate of the live width; a rewrite is attempted only when it would shrink the
    width a lot.  The decision depends only on the engine state, so naive and lazy compact at
    the same steps (a requirement for bit-identical gains).
    """

    def __init__(self, budget: int):
        self.next = 1
        self.budget = budget

    def __call__(self, eng: _Engine, step: int) -> bool:
        """Called after pick number ``step`` (1-based count of picks made)."""
        if step < self.next or self.budget - step < 8 or eng.width <= 32:
            return False
        self.next = max(step + 1, int(math.ceil(step * 1.25)))
        t0 = time.perf_counter()
        est = eng.estimate_width()
        w, left = eng.width, self.budget - step
        if eng.K is not None:  # dense rows stream; ELL rows also gather ids and coverage
            done = est * _DENSE_SHRINK <= w and eng.compact(max_width=w // 3)
        else:
            # worth it when the evaluations saved over the remaining steps (at an assumed
            # _EVALS_PER_STEP; the real rate differs between naive and lazy, and both must
            # decide alike) outweigh ~4 passes over the current kernel
            done = (est * 2 <= w and left * _EVALS_PER_STEP * (w - est) > 4 * eng.n * w
                    and eng.compact(max_width=(w * 3) // 4))
        if done:
            eng.compaction_steps.append(step)
        eng.compaction_s += time.perf_counter() - t0
        return done


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    return tqdm(total=total, desc="facility location", unit="pick")


def _greedy_naive(eng: _Engine, budget: int, bar) -> tuple[list, list]:
    picks, gains = [], []
    schedule = _CompactionSchedule(budget)
    for t in range(budget):
        g = eng.all_gains()
        c = eng.argmax(g)
        picks.append(c)
        gains.append(eng.get(g, c))
        eng.add(c)
        schedule(eng, t + 1)
        if bar is not None:
            bar.update(1)
    return picks, gains


def _greedy_lazy(eng: _Engine, budget: int, bar, ub=None) -> tuple[list, list]:
    """Exact lazy greedy with batched re-evaluation.

    ``ub[j]`` is a gain of candidate j computed at some step (an upper bound of its current
    gain, by submodularity); ``stale[j]`` repeats it while it may be out of date and is -inf
    while it is exact (recomputed since the last pick that could change it: with a sparse
    kernel most picks leave most gains untouched, and those stay exact).

    Each step: take the first maximum c of ``ub``.  If it is exact, it is exactly naive
    greedy's pick: every other candidate's true gain is <= its bound <= ub[c], and an equal
    bound at a lower index would have been the first maximum.  Otherwise compute c's gain,
    then -- in one batch -- the gains of every stale candidate whose bound still reaches the
    best gain computed so far (at most ``lazy_cap`` at a time, best bounds first), and look
    again.
    """
    picks, gains = [], []
    schedule = _CompactionSchedule(budget)
    if ub is None:
        ub = eng.all_gains()
    stale = eng.vec(_NEG_INF)
    for t in range(budget):
        best = _NEG_INF  # the largest exact gain computed at this step
        while True:
            c = eng.argmax(ub)
            if eng.get(stale, c) == _NEG_INF:
                break
            first = eng.index([c])
            g = eng.gains(first)
            eng.put(ub, first, g)
            eng.put(stale, first, _NEG_INF)
            best = max(best, eng.get(g, 0))
            cand = eng.at_least(stale, best)
            n_cand = eng.size(cand)
            if n_cand:
                if n_cand > eng.lazy_cap:
                    cand = eng.top(stale, cand, eng.lazy_cap)
                g = eng.gains(cand)
                eng.put(ub, cand, g)
                eng.put(stale, cand, _NEG_INF)
                best = max(best, eng.get(g, eng.argmax(g)))
        picks.append(c)
        gains.append(eng.get(ub, c))
        touched = eng.add(c)
        eng.put(ub, c, _NEG_INF)
        eng.put(stale, c, _NEG_INF)
        if schedule(eng, t + 1):
            ub = eng.all_gains()  # new representation: recompute every bound exactly
            stale = eng.vec(_NEG_INF)
        elif touched is None:
            stale = eng.copy(ub)  # every bound is out of date; picked ones stay -inf
        elif eng.size(touched):
            eng.put(stale, touched, ub[touched])  # only these bounds are out of date
        if bar is not None:
            bar.update(1)
    return picks, gains


def _greedy_stochastic(eng: _Engine, budget: int, epsilon: float, seed: int, bar):
    """Stochastic greedy: the best of a fresh random sample of remaining candidates per step."""
    picks, gains = [], []
    schedule = _CompactionSchedule(budget)
    n = eng.n
    rng = np.random.default_rng(seed)
    sample = max(1, int(math.ceil(n / budget * math.log(1.0 / epsilon))))
    remaining = np.arange(n, dtype=np.int64)  # remaining[:r] are the unpicked candidates
    where = np.arange(n, dtype=np.int64)  # position of each candidate in `remaining`
    r = n
    for t in range(budget):
        s = min(sample, r)
        pos = rng.choice(r, size=s, replace=False) if s < r else np.arange(r)
        cand = np.sort(remaining[pos])
        g = eng.gains(eng.index(cand))
        k = eng.argmax(g)  # first maximum => lowest index of the sample on ties
        c = int(cand[k])
        picks.append(c)
        gains.append(eng.get(g, k))
        eng.add(c)
        pc, last = where[c], remaining[r - 1]  # swap-remove c from the pool
        remaining[pc], where[last] = last, pc
        r -= 1
        schedule(eng, t + 1)
        if bar is not None:
            bar.update(1)
    return picks, gains
