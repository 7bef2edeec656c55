"""The INGENIOUS sampler (Renduchintala et al., Findings of EMNLP 2023).

INGENIOUS trains a language model on an informative subset (25% by default) of its corpus:

1. **Warm start**: the first ``warm_start_steps`` steps train on the full data, so the model's own
   representations become meaningful.
2. **Features**: every training example is embedded with a hidden layer (``layer``) of the model
   being trained: the mean over non-padding tokens for encoders, the last token for decoders.
3. **Partitions**: the examples are split into ``partitions`` random parts (facility location is
   quadratic in the part size, so this is what makes it scale; with ``distributed`` ranks, each rank
   orders its own share of the parts).
4. **Gains**: facility location (cosine) *orders the whole partition* greedily; each example's
   marginal gain at the moment it was picked measures how much new ground it covers (a duplicate
   of an earlier pick gains ~0).
5. **Importance**: a Taylor softmax turns gains into probabilities within each partition,
   ``p ∝ 1 + x + x²/2`` with ``x = gain / temperature`` (always positive, flatter than softmax).
6. **Sampling**: ``fraction`` of each partition is drawn without replacement by ``p``; the model
   trains on that subset, which is **re-sampled every** ``resample_every`` steps from the same
   probabilities. With ``recompute_every > 0`` the embeddings and gains are recomputed with the
   current model every that many steps (the reference code computes them once, after the warm
   start: ``recompute_every=0``, the default).

Two choices the paper leaves open, made explicit here: ``center=True`` subtracts the mean embedding
before the cosine kernel (the hidden states of a small, young model are anisotropic: raw cosine
similarities all sit near 1, and facility location then sees every point as a duplicate of the first);
``temperature`` divides the gains, whose mean over a partition is 1 by construction (the objective of
the whole partition is its size, since every point serves itself), so ``temperature=0.1`` makes an
example with an average gain about 60 times likelier to be drawn than an exact duplicate (gain 0).

Every (re-)selection is recorded to the run's ``scores/ingenious_<k>.npz``: step, chosen indices,
their gains, probabilities and domains. ``select_s`` accumulates the seconds spent selecting
(embedding + facility location + sampling; :meth:`IngeniousSampler.stats`), so a notebook can report
its share of wall time. The sampler streams its subset through an
:class:`~workbench.training.hooks.EpochStream` (a fresh seeded order each epoch and each selection).

Cost: one forward pass over the corpus per gain computation, plus facility location on
``partitions`` blocks of ``n / partitions`` points each (dense kernel: ``4 (n/P)²`` bytes).
"""
from __future__ import annotations

import time

import numpy as np
import torch

from ..errors import ConfigError
from ..training.hooks import EpochStream
from .facility_location import facility_location
from .sampling import taylor_softmax
from ..training.backends import dist_env


def sample_partition(gains: np.ndarray, fraction: float, temperature: float, rng: np.random.Generator):
    """Draw ``ceil(fraction·m)`` of a partition's ``m`` members without replacement by Taylor-softmax
    importance of ``gains / temperature``; returns (positions within the partition, probabilities)."""
    p = taylor_softmax(np.asarray(gains, dtype=np.float64) / temperature)
    k = max(1, int(np.ceil(fraction * len(p))))
    pos = rng.choice(len(p), size=k, replace=False, p=p)
    return np.sort(pos), p


class IngeniousSampler:
    """A Sampler (see :mod:`workbench.training.hooks`) implementing INGENIOUS selection."""

    name = "ingenious"

    def __init__(self, fraction: float = 0.25, warm_start_steps: int = 100, resample_every: int = 100,
                 recompute_every: int = 0, partitions: int = 4, temperature: float = 0.1, layer: int = -1,
                 center: bool = True, embed_batch_size: int = 128, knn: int | None = None, device=None,
                 rank: int | None = None, world_size: int | None = None):
        if rank is None or world_size is None:   # under torchrun: this process's place, from the environment
            env = dist_env() or {"rank": 0, "world_size": 1}
            rank = env["rank"] if rank is None else rank
            world_size = env["world_size"] if world_size is None else world_size
        if not 0 <= rank < world_size:
            raise ConfigError(f"ingenious rank must be in [0, world_size), got rank {rank}, world_size {world_size}")
        if not 0 < fraction <= 1:
            raise ConfigError(f"ingenious fraction must be in (0, 1], got {fraction}")
        if warm_start_steps < 0 or resample_every < 1 or recompute_every < 0:
            raise ConfigError("warm_start_steps >= 0, resample_every >= 1 and recompute_every >= 0 are required")
        if partitions < 1 or temperature <= 0:
            raise ConfigError(f"partitions must be >= 1 and temperature > 0 (got {partitions}, {temperature})")
        self.fraction, self.warm, self.R, self.M = fraction, warm_start_steps, resample_every, recompute_every
        self.P, self.temperature, self.layer, self.center = partitions, temperature, layer, center
        self.embed_batch_size, self.knn, self.device = embed_batch_size, knn, device
        self.rank, self.world_size = rank, world_size
        self.gains: np.ndarray | None = None     # per example (global index), from the last computation
        self.probs: np.ndarray | None = None     # Taylor-softmax probability within its partition
        self.parts: list[np.ndarray] | None = None
        self.subset: np.ndarray | None = None
        self.selections = 0
        self.last_gain_step = -1
        self.select_s = 0.0                      # seconds spent selecting, summed

    # ----------------------------------------------------------------------------- sampler API
    def setup(self, data, seed: int = 0, run=None) -> None:
        self.data, self.seed, self.run, self.n = data, seed, run, len(data)
        if self.n < self.P:
            raise ConfigError(f"{self.P} partitions need at least as many examples (have {self.n})")
        self.stream = EpochStream(self._permutation)

    def _pool(self) -> np.ndarray:
        return np.arange(self.n) if self.subset is None else self.subset

    def _permutation(self, epoch: int) -> np.ndarray:
        """The order of epoch ``epoch`` of the current pool: a function of the seed, the selection
        count and the epoch only, so a checkpoint's (epoch, pos) recovers the stream."""
        pool = self._pool()
        rng = np.random.default_rng([self.seed, self.selections, epoch, 77])
        return pool[rng.permutation(len(pool))]

    def next(self, n: int) -> list[int]:
        return self.stream.next(n)

    def stats(self) -> dict:
        """``select_s`` (seconds spent selecting), ``selections`` made so far, ``subset`` size (0 before the first)."""
        return {"select_s": self.select_s, "selections": self.selections,
                "subset": 0 if self.subset is None else len(self.subset)}

    def refresh(self, model, step: int) -> None:
        """Select at the end of the warm start, then re-sample every R steps (recompute every M)."""
        if step < self.warm or (step - self.warm) % self.R != 0:
            return
        t0 = time.perf_counter()
        need_gains = self.gains is None or (self.M > 0 and step - self.last_gain_step >= self.M)
        if need_gains:
            self.compute_gains(model, step)
        self._resample(step)
        self.select_s += time.perf_counter() - t0

    # ----------------------------------------------------------------------------- the method
    @torch.no_grad()
    def embeddings(self, model) -> np.ndarray:
        """[n, H] features of every example from hidden layer ``self.layer`` (float32)."""
        was = model.training
        model.eval()
        dev = next(model.parameters()).device
        out = []
        for s in range(0, self.n, self.embed_batch_size):
            idx = list(range(s, min(s + self.embed_batch_size, self.n)))
            batch = {k: v.to(dev) for k, v in self.data.unmasked(idx).items()}
            out.append(self.data.embed(model, batch, self.layer).float().cpu())
        model.train(was)
        return torch.cat(out).numpy()

    def compute_gains(self, model, step: int) -> None:
        X = self.embeddings(model)
        if self.center:
            X = X - X.mean(0, keepdims=True)
        if not np.isfinite(X).all():
            raise ConfigError("INGENIOUS embeddings contain NaN/inf (did training diverge?)")
        rng = np.random.default_rng([self.seed, 1234, step])
        perm = rng.permutation(self.n)
        self.parts = [np.sort(p) for p in np.array_split(perm, self.P)]
        gains = np.zeros(self.n)
        mine = [k for k in range(self.P) if k % self.world_size == self.rank]
        for k in mine:
            part = self.parts[k]
            kernel = "knn" if self.knn else "dense"
            sel = facility_location(X[part], budget=len(part), metric="cosine", kernel=kernel,
                                    knn=self.knn or 10, optimizer="lazy", device=self.device)
            gains[part[sel.indices]] = sel.gains
        if self.world_size > 1:
            gains = _all_reduce_sum(gains)
        self.gains = gains
        self.last_gain_step = step

    def _resample(self, step: int) -> None:
        rng = np.random.default_rng([self.seed, 4321, self.selections])
        chosen, probs = [], np.zeros(self.n)
        for part in self.parts:
            pos, p = sample_partition(self.gains[part], self.fraction, self.temperature, rng)
            probs[part] = p
            chosen.append(part[pos])
        self.probs = probs
        self.subset = np.sort(np.concatenate(chosen))
        self.selections += 1
        self.stream.restart()
        if self.run is not None and self.rank == 0:
            doms = np.asarray([self.data.domains[i] for i in self.subset])
            self.run.save_scores(f"ingenious_{self.selections:03d}", step=np.array(step), indices=self.subset,
                                 gains=self.gains[self.subset], probs=self.probs[self.subset], domains=doms)

    # ----------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {**self.stream.state_dict(), "selections": self.selections,
                "last_gain_step": self.last_gain_step, "select_s": self.select_s,
                "gains": self.gains if self.gains is not None else np.zeros(0),
                "probs": self.probs if self.probs is not None else np.zeros(0),
                "subset": self.subset if self.subset is not None else np.zeros(0, dtype=np.int64),
                "parts": list(self.parts) if self.parts is not None else []}

    def load_state_dict(self, s: dict) -> None:
        self.selections, self.last_gain_step = int(s["selections"]), int(s["last_gain_step"])
        self.select_s = float(s["select_s"] if "select_s" in s else s["selection_wall_s"])   # older checkpoints
        self.gains = np.asarray(s["gains"]) if len(s["gains"]) else None
        self.probs = np.asarray(s["probs"]) if len(s["probs"]) else None
        self.subset = np.asarray(s["subset"], dtype=np.int64) if len(s["subset"]) else None
        self.parts = [np.asarray(p, dtype=np.int64) for p in s["parts"]] or None
        self.stream.load_state_dict(s)             # after subset/selections: the order depends on them


def _all_reduce_sum(a: np.ndarray) -> np.ndarray:
    import torch.distributed as dist
    t = torch.from_numpy(a.astype(np.float64))
    dist.all_reduce(t)
    return t.numpy()
