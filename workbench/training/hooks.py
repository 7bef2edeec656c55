"""The plug-in contracts of :func:`workbench.train`, on one page, and the two plain samplers.

Every method plugs into the one loop at one of these points (DESIGN.md): a :class:`Task` is the
data and its loss, a :class:`Sampler` decides which examples feed the next batches, a
:class:`BatchFilter` picks a small batch out of a large one, and the budget's
:class:`~workbench.training.budget.Decision` tells the loop, once per step, whether to stop and
which time markers are due. Nothing is inherited: a method object satisfies a Protocol by having
its methods (``isinstance(obj, Sampler)`` checks that at run time).

Samplers and filters save and restore their *whole* state (``state_dict`` / ``load_state_dict``:
plain JSON values and numpy arrays), so a resumed run selects exactly what an uninterrupted one
would. A sampler that streams epochs holds an :class:`EpochStream` instead of keeping (and having
others edit) its own position.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

from ..errors import ConfigError


@runtime_checkable
class Task(Protocol):
    """Training data and its loss (``MLMTask``, ``CLMTask``, the labelled tasks)."""

    def __len__(self) -> int: ...

    def collate(self, indices: list[int], step: int = 0) -> dict:
        """A batch (tensors with a leading batch dimension, ``index`` among them) of ``indices``."""

    def loss(self, model, batch: dict):
        """Mean loss of ``model`` on ``batch`` (a scalar tensor)."""

    def tokens(self, batch: dict) -> int:
        """Tokens (or examples) the batch trains on: what token budgets count."""


@runtime_checkable
class Sampler(Protocol):
    """Which examples feed the next batches; may re-select itself every R steps from the model."""

    def setup(self, data, seed: int = 0, run=None) -> None:
        """Called once before training: the data, the seed and the run to record choices to."""

    def refresh(self, model, step: int) -> None:
        """Called before every step; a re-selecting sampler recomputes here and records to ``run``."""

    def next(self, n: int) -> list[int]:
        """The next ``n`` dataset indices of the sampler's stream."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@runtime_checkable
class BatchFilter(Protocol):
    """Picks a small batch out of a large one (RHO-LOSS, train loss, token-level excess loss)."""

    def large_batch_size(self, batch_size: int) -> int:
        """How many examples to draw for one small batch of ``batch_size``."""

    def select(self, model, batch: dict, task, step: int) -> dict:
        """The sub-batch to train on (optionally with a per-example ``weight``); records its scores."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class EpochStream:
    """An endless stream of indices, epoch after epoch, each epoch in the order ``permute(epoch)``.

    A sampler owns one and asks it for indices; :meth:`restart` begins epoch 0 of a new order (after
    a re-selection), and the position (``epoch``, ``pos``) is all a checkpoint needs: the order is
    recomputed from ``permute`` on load, so ``permute`` must be a pure function of the epoch and the
    sampler's saved state.
    """

    def __init__(self, permute: Callable[[int], np.ndarray]):
        self.permute = permute
        self.epoch, self.pos = 0, 0
        self.order = np.asarray(permute(0))

    def restart(self) -> None:
        """Start over at epoch 0 of the (possibly changed) ``permute``."""
        self.epoch, self.pos = 0, 0
        self.order = np.asarray(self.permute(0))

    def next(self, n: int) -> list[int]:
        """The next ``n`` indices; an epoch that runs out continues with the next epoch's order."""
        out: list[int] = []
        while len(out) < n:
            if self.pos >= len(self.order):
                self.epoch, self.pos = self.epoch + 1, 0
                self.order = np.asarray(self.permute(self.epoch))
            take = self.order[self.pos: self.pos + n - len(out)]
            out.extend(int(i) for i in take)
            self.pos += len(take)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, s: dict) -> None:
        self.epoch, self.pos = int(s["epoch"]), int(s["pos"])
        self.order = np.asarray(self.permute(self.epoch))


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
        self.stream = EpochStream(self._permutation)

    def _permutation(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        return self.pool[rng.permutation(len(self.pool))]

    def refresh(self, model, step: int) -> None:
        pass

    def next(self, n: int) -> list[int]:
        return self.stream.next(n)

    def stats(self) -> dict:
        """What the sampler spent and did (``select_s``: seconds of selection; none here)."""
        return {"select_s": 0.0, "pool": len(self.pool)}

    def state_dict(self) -> dict:
        return {**self.stream.state_dict(), "pool": self.pool}

    def load_state_dict(self, s: dict) -> None:
        self.pool = np.asarray(s["pool"], dtype=np.int64)
        self.stream.load_state_dict(s)


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
            self.pool = self.subset
            self.stream.restart()
            self._record()

    def _record(self) -> None:
        if self.run is not None:
            self.run.save_scores("random_subset", indices=self.subset,
                                 domains=np.asarray([self.data.domains[i] for i in self.subset]))


class RandomOnlineSampler(FullSampler):
    """A *fresh* uniformly random ``fraction`` of the data every ``resample_every`` steps.

    INGENIOUS' "Random-Online" baseline (``run_mlm_nsp_ingenious.py``, ``selection_strategy
    Random-Online``): after ``warm_start_steps`` on the full data, a new random subset is drawn at
    the warm start's end and every ``resample_every`` steps after it, so over a long run it visits
    far more of the corpus than one fixed subset does. Draw ``k`` uses ``default_rng([seed, 54321,
    k])``; each draw is recorded as ``scores/random_online_<k>.npz``.
    """

    name = "random_online"

    def __init__(self, fraction: float = 0.25, warm_start_steps: int = 0, resample_every: int = 100):
        super().__init__()
        if not 0 < fraction <= 1:
            raise ConfigError(f"subset fraction must be in (0, 1], got {fraction}")
        if warm_start_steps < 0 or resample_every < 1:
            raise ConfigError(f"warm_start_steps >= 0 and resample_every >= 1 are required "
                              f"(got {warm_start_steps}, {resample_every})")
        self.fraction, self.warm, self.R = fraction, warm_start_steps, resample_every
        self.draws = 0
        self.subset: np.ndarray | None = None

    def setup(self, data, seed: int = 0, run=None) -> None:
        self.data = data
        super().setup(data, seed, run)

    def _permutation(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.draws, epoch])
        return self.pool[rng.permutation(len(self.pool))]

    def refresh(self, model, step: int) -> None:
        """Draw a new subset at the end of the warm start and every ``resample_every`` steps after."""
        if step < self.warm or (step - self.warm) % self.R != 0:
            return
        n = len(self.data)
        k = max(1, int(round(self.fraction * n)))
        self.draws += 1
        rng = np.random.default_rng([self.seed, 54321, self.draws])
        self.subset = self.pool = np.sort(rng.choice(n, size=k, replace=False))
        self.stream.restart()
        if self.run is not None:
            self.run.save_scores(f"random_online_{self.draws:03d}", step=np.array(step), indices=self.subset,
                                 domains=np.asarray([self.data.domains[i] for i in self.subset]))

    def stats(self) -> dict:
        return {"select_s": 0.0, "pool": len(self.pool), "draws": self.draws}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "draws": self.draws}

    def load_state_dict(self, s: dict) -> None:
        self.draws = int(s["draws"])
        self.pool = np.asarray(s["pool"], dtype=np.int64)
        self.subset = None if self.draws == 0 else self.pool
        self.stream.load_state_dict(s)


#: the samplers :func:`make_sampler` builds by name (the ``train`` command's ``sampler`` parameter)
SAMPLERS = ("full", "random")


def make_sampler(name: str, fraction: float = 0.25):
    if name == "full":
        return FullSampler()
    if name == "random":
        return RandomSubsetSampler(fraction)
    raise ConfigError(f"sampler {name!r} is not one of {', '.join(SAMPLERS)}")
