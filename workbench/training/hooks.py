"""Samplers: which examples feed the next batches.

Contract (duck-typed): ``setup(data, seed, run)`` once; ``refresh(model, step)`` before every step
(a sampler that re-selects every R steps does it there, and records what it chose to the run's
``scores/``); ``next(n) -> list[int]`` the next ``n`` indices of its stream; ``state_dict()`` /
``load_state_dict()`` for resume (plain JSON values and numpy arrays).
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError


def next_in_epochs(sampler, n: int) -> list[int]:
    """The next ``n`` indices of ``sampler``'s stream of epochs: it walks ``sampler._perm`` from
    ``sampler.pos`` and, at the end of an epoch, bumps ``sampler.epoch`` and draws a new
    ``sampler._permutation()``. Every sampler here streams this way; only the permutation differs."""
    out: list[int] = []
    while len(out) < n:
        if sampler.pos >= len(sampler._perm):
            sampler.epoch, sampler.pos = sampler.epoch + 1, 0
            sampler._perm = sampler._permutation()
        take = sampler._perm[sampler.pos: sampler.pos + n - len(out)]
        out.extend(int(i) for i in take)
        sampler.pos += len(take)
    return out


class FullSampler:
    """Every example once per epoch, in a fresh seeded permutation each epoch."""

    name = "full"

    def __init__(self):
        self.pool: np.ndarray | None = None

    def setup(self, data, seed: int = 0, run=None) -> None:
        self.n = len(data)
        if self.n == 0:
            raise ConfigError("cannot sample from an empty dataset")
        self.seed, self.run = seed, run
        if self.pool is None:
            self.pool = np.arange(self.n)
        self.epoch, self.pos = 0, 0
        self._perm = self._permutation()

    def _permutation(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch])
        return self.pool[rng.permutation(len(self.pool))]

    def refresh(self, model, step: int) -> None:
        pass

    def next(self, n: int) -> list[int]:
        return next_in_epochs(self, n)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos, "pool": self.pool}

    def load_state_dict(self, s: dict) -> None:
        self.pool = np.asarray(s["pool"], dtype=np.int64)
        self.epoch, self.pos = int(s["epoch"]), int(s["pos"])
        self._perm = self._permutation()


class RandomSubsetSampler(FullSampler):
    """A uniformly random ``fraction`` of the data, chosen once (seeded), iterated in epochs.

    The baseline of subset-selection papers (INGENIOUS' "random 25%").
    """

    name = "random"

    def __init__(self, fraction: float = 0.25, warm_start_steps: int = 0):
        super().__init__()
        if not 0 < fraction <= 1:
            raise ConfigError(f"subset fraction must be in (0, 1], got {fraction}")
        if warm_start_steps < 0:
            raise ConfigError(f"warm_start_steps must be >= 0, got {warm_start_steps}")
        self.fraction, self.warm = fraction, warm_start_steps

    def setup(self, data, seed: int = 0, run=None) -> None:
        n = len(data)
        k = max(1, int(round(self.fraction * n)))
        rng = np.random.default_rng([seed, 12345])
        self.subset = np.sort(rng.choice(n, size=k, replace=False))
        self.data = data
        if self.pool is None:
            self.pool = self.subset if self.warm == 0 else np.arange(n)
        super().setup(data, seed, run)
        if self.warm == 0:
            self._record()

    def refresh(self, model, step: int) -> None:
        """With a warm start, train on everything until ``warm_start_steps``, then on the subset."""
        if self.warm and step == self.warm and len(self.pool) != len(self.subset):
            self.pool, self.epoch, self.pos = self.subset, 0, 0
            self._perm = self._permutation()
            self._record()

    def _record(self) -> None:
        if self.run is not None:
            self.run.save_scores("random_subset", indices=self.subset,
                                 domains=np.asarray([self.data.domains[i] for i in self.subset]))


#: the samplers :func:`make_sampler` builds by name (the ``train`` command's ``sampler`` parameter)
SAMPLERS = ("full", "random")


def make_sampler(name: str, fraction: float = 0.25):
    if name == "full":
        return FullSampler()
    if name == "random":
        return RandomSubsetSampler(fraction)
    raise ConfigError(f"sampler {name!r} is not one of {', '.join(SAMPLERS)}")
