"""The INGENIOUS sampler (Renduchintala et al., Findings of EMNLP 2023).

INGENIOUS trains a language model on an informative subset (25% by default) of its corpus:

1. **Warm start**: the first ``warm_start_steps`` steps train on the full data, so the model's own
   representations become meaningful (the authors count it in epochs: 1 for BERT, 2 for GPT-2; the
   recipe converts epochs to steps).
2. **Features**: every training example is embedded with a hidden layer (``layer``) of the model
   being trained: the mean over non-padding tokens for encoders, the last token for decoders.
3. **Partitions**: the examples are split into ``partitions`` parts, random or by k-means
   (``partition_strategy``; facility location is quadratic in the part size, so this is what makes
   it scale; with ``distributed`` ranks, each rank orders its own share of the parts).
4. **Gains**: a submodular function (``function``: facility location by default, graph cut or
   log-determinant as in the authors' strategy class) *orders the partition* greedily; each
   example's marginal gain at the moment it was picked measures how much new ground it covers (a
   duplicate of an earlier pick gains ~0).
5. **Importance**: a Taylor softmax turns gains into probabilities within each partition,
   ``p ∝ 1 + x + x²/2`` with ``x = gain / temperature`` (always positive, flatter than softmax).
6. **Sampling**: ``fraction`` of each partition is drawn without replacement by ``p``; the model
   trains on that subset, which is **re-sampled every** ``resample_every`` steps from the same
   probabilities. With ``recompute_every > 0`` the embeddings and gains are recomputed with the
   current model every that many steps (the authors compute them once, after the warm start:
   ``recompute_every=0``, the default).

Two named configurations (``variant``), every field of which can be overridden:

``"authors"`` (the default) -- the released code (``run_mlm_nsp_ingenious.py``,
    ``train_mlm_nsp_ingenious.py``, ``selectionstrategies/submodstrategy.py``): temperature 1.0, raw
    (uncentred) embeddings of the hidden layer at three quarters of the depth for encoders
    (``hidden_states[9]`` of BERT-base's 12 layers) and the last layer for decoders, submodlib's
    ``LazierThanLazyGreedy`` (stochastic greedy, epsilon 0.1; here seeded) on each partition, which
    ranks all but one member of each partition (the unranked one cannot be drawn).
``"sharp"`` -- the workbench's earlier method: temperature 0.1, centred embeddings of the last
    layer, exact lazy greedy ranking every member. Centring matters for small, young models, whose
    hidden states are anisotropic (raw cosine similarities all near 1: facility location then sees
    every point as a near duplicate of the first). The gains of a whole partition sum to its size
    (every point serves itself), so their mean is about 1: at temperature 0.1 an example of average
    gain is about 60 times likelier to be drawn than an exact duplicate (gain 0); at 1.0 about 2.5
    times.

Every (re-)selection is recorded to the run's ``scores/ingenious_<k>.npz``: step, chosen indices,
their gains, probabilities and domains. ``select_s`` accumulates the seconds spent selecting
(embedding + ordering + sampling; :meth:`IngeniousSampler.stats`), so a notebook can report its
share of wall time. The sampler streams its subset through an
:class:`~workbench.training.hooks.EpochStream` (a fresh seeded order each epoch and each selection).

Cost: one forward pass over the corpus per gain computation, plus the ordering of ``partitions``
blocks of ``n / partitions`` points each (dense kernel: ``4 (n/P)²`` bytes for facility location,
twice that for graph cut and log-determinant).
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


#: the two named configurations (see the module docstring); ``layer=None`` means three quarters of
#: the depth for encoders and the last layer for decoders
VARIANTS = {
    "authors": {"temperature": 1.0, "center": False, "layer": None, "optimizer": "stochastic", "epsilon": 0.1,
                "rank_all": False},
    "sharp": {"temperature": 0.1, "center": True, "layer": -1, "optimizer": "lazy", "epsilon": 0.1,
              "rank_all": True},
}
PARTITION_STRATEGIES = ("random", "kmeans")
FUNCTIONS = ("fl", "gc", "logdet")
OPTIMIZERS = ("lazy", "naive", "stochastic")


def sample_partition(gains: np.ndarray, fraction: float, temperature: float, rng: np.random.Generator,
                     size: int | None = None):
    """Draw ``ceil(fraction·size)`` of the ``len(gains)`` ranked members of a partition (``size``
    members in all, default ``len(gains)``; at most ``len(gains)``) without replacement by
    Taylor-softmax importance of ``gains / temperature``; returns (positions in ``gains``,
    probabilities)."""
    p = taylor_softmax(np.asarray(gains, dtype=np.float64) / temperature)
    k = min(len(p), max(1, int(np.ceil(fraction * (len(p) if size is None else size)))))
    pos = rng.choice(len(p), size=k, replace=False, p=p)
    return np.sort(pos), p


def encoder_layer(model) -> int:
    """The ``hidden_states`` index at three quarters of the depth (the authors' layer 9 of 12)."""
    n = int(getattr(model.config, "num_hidden_layers", 0) or getattr(model.config, "n_layer", 0))
    if n < 1:
        raise ConfigError("cannot tell the model's depth (config.num_hidden_layers); pass layer= explicitly")
    return int(np.floor(0.75 * n + 0.5))


def kmeans_partitions(X: np.ndarray, k: int, seed: int, niter: int = 20) -> list[np.ndarray]:
    """Partition the rows of ``X`` by k-means (faiss, ``niter`` iterations, seeded): one sorted index
    array per non-empty cluster, so every point is in exactly one part."""
    import faiss
    X = np.ascontiguousarray(X, dtype=np.float32)
    km = faiss.Kmeans(X.shape[1], int(k), niter=niter, seed=int(seed) % (2**31), verbose=False)
    km.train(X)
    _, lab = km.index.search(X, 1)
    lab = lab.reshape(-1)
    return [np.flatnonzero(lab == c) for c in range(int(k)) if (lab == c).any()]


class IngeniousSampler:
    """A Sampler (see :mod:`workbench.training.hooks`) implementing INGENIOUS selection.

    ``variant`` (``"authors"``, the default, or ``"sharp"``) fills every knob left at ``None``:
    ``temperature``, ``layer`` (``None``: three quarters of the depth for encoders, last for
    decoders), ``center``, ``optimizer`` (``"stochastic"`` | ``"lazy"`` | ``"naive"``),
    ``epsilon`` (stochastic greedy) and ``rank_all`` (rank every member of a partition, or all but
    one as the authors' code does). ``partition_strategy`` is ``"random"`` or ``"kmeans"`` (faiss);
    ``function`` is ``"fl"`` (facility location), ``"gc"`` (graph cut) or ``"logdet"``.
    """

    name = "ingenious"

    def __init__(self, fraction: float = 0.25, warm_start_steps: int = 100, resample_every: int = 100,
                 recompute_every: int = 0, partitions: int = 4, temperature: float | None = None,
                 layer: int | None = None, center: bool | None = None, embed_batch_size: int = 128,
                 knn: int | None = None, device=None, rank: int | None = None, world_size: int | None = None, *,
                 variant: str = "authors", optimizer: str | None = None, epsilon: float | None = None,
                 rank_all: bool | None = None, partition_strategy: str = "random", function: str = "fl"):
        if variant not in VARIANTS:
            raise ConfigError(f"ingenious variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        v = VARIANTS[variant]
        temperature = v["temperature"] if temperature is None else temperature
        center = v["center"] if center is None else center
        layer = v["layer"] if layer is None else layer
        optimizer = v["optimizer"] if optimizer is None else optimizer
        epsilon = v["epsilon"] if epsilon is None else epsilon
        rank_all = v["rank_all"] if rank_all is None else rank_all
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
        if optimizer not in OPTIMIZERS:
            raise ConfigError(f"ingenious optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
        if not 0 < epsilon < 1:
            raise ConfigError(f"ingenious epsilon must be in (0, 1), got {epsilon}")
        if partition_strategy not in PARTITION_STRATEGIES:
            raise ConfigError(f"partition_strategy must be one of {', '.join(PARTITION_STRATEGIES)}, "
                              f"got {partition_strategy!r}")
        if function not in FUNCTIONS:
            raise ConfigError(f"ingenious function must be one of {', '.join(FUNCTIONS)}, got {function!r}")
        if function != "fl" and knn:
            raise ConfigError("knn= applies to facility location only (function='fl')")
        self.variant = variant
        self.fraction, self.warm, self.R, self.M = fraction, warm_start_steps, resample_every, recompute_every
        self.P, self.temperature, self.layer, self.center = partitions, temperature, layer, center
        self.optimizer, self.epsilon, self.rank_all = optimizer, epsilon, rank_all
        self.partition_strategy, self.function = partition_strategy, function
        self.embed_batch_size, self.knn, self.device = embed_batch_size, knn, device
        self.rank, self.world_size = rank, world_size
        self.gains: np.ndarray | None = None     # per example (global index), from the last computation
        self.ranked: np.ndarray | None = None    # whether each example was ranked (the authors leave one out per part)
        self.probs: np.ndarray | None = None     # Taylor-softmax probability within its partition
        self.parts: list[np.ndarray] | None = None
        self.subset: np.ndarray | None = None
        self.selections = 0
        self.last_gain_step = -1
        self.select_s = 0.0                      # seconds spent selecting, summed
        self.layer_used: int | None = None       # the hidden_states index the embeddings came from
        self.embedded_tokens = 0                 # tokens run through the model to embed (selection cost)
        self.order_flops = 0.0                   # FLOPs of the kernels and gain evaluations (selection cost)

    def config(self) -> dict:
        """The resolved configuration (what this sampler does, whatever the variant said)."""
        return {"variant": self.variant, "temperature": self.temperature, "layer": self.layer,
                "center": self.center, "optimizer": self.optimizer, "epsilon": self.epsilon,
                "rank_all": self.rank_all, "partition_strategy": self.partition_strategy,
                "function": self.function, "partitions": self.P, "layer_used": self.layer_used}

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
        """``select_s`` (seconds spent selecting), ``selections`` made so far, ``subset`` size (0 before
        the first), ``embedded_tokens`` and ``order_flops`` (what selection cost, for FLOP accounting)."""
        return {"select_s": self.select_s, "selections": self.selections,
                "subset": 0 if self.subset is None else len(self.subset),
                "embedded_tokens": self.embedded_tokens, "order_flops": self.order_flops}

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
    def resolve_layer(self, model) -> int:
        """The ``hidden_states`` index to embed with: ``layer`` if set, else three quarters of the
        depth for encoders (MLM data) and the last layer for decoders."""
        if self.layer is not None:
            return int(self.layer)
        return -1 if getattr(self.data, "kind", "mlm") == "clm" else encoder_layer(model)

    @torch.no_grad()
    def embeddings(self, model) -> np.ndarray:
        """[n, H] features of every example from the hidden layer :meth:`resolve_layer` (float32)."""
        was = model.training
        model.eval()
        dev = next(model.parameters()).device
        layer = self.layer_used = self.resolve_layer(model)
        out = []
        for s in range(0, self.n, self.embed_batch_size):
            idx = list(range(s, min(s + self.embed_batch_size, self.n)))
            batch = {k: v.to(dev) for k, v in self.data.unmasked(idx).items()}
            out.append(self.data.embed(model, batch, layer).float().cpu())
            mask = batch.get("attention_mask")
            self.embedded_tokens += int(mask.sum()) if mask is not None else len(idx)
        model.train(was)
        return torch.cat(out).numpy()

    def partition(self, X: np.ndarray, step: int) -> list[np.ndarray]:
        """Random parts of (nearly) equal size, or k-means clusters (seeded by seed and step).

        k-means clusters with a single member are left out, as in the authors' code (a lone point
        has nothing to be compared with): such points are never selected."""
        if self.partition_strategy == "kmeans":
            parts = kmeans_partitions(X, self.P, seed=int(np.random.SeedSequence([self.seed, 4242, step])
                                                             .generate_state(1)[0]))
            return [p for p in parts if len(p) >= 2]
        rng = np.random.default_rng([self.seed, 1234, step])
        return [np.sort(p) for p in np.array_split(rng.permutation(self.n), self.P)]

    def order(self, X: np.ndarray, k: int, step: int):
        """Greedy order of the rows of ``X`` (one partition, number ``k``) by ``function``: the
        picks and their marginal gains; all rows, or all but one (``rank_all=False``)."""
        m = X.shape[0]
        budget = m if self.rank_all or m < 2 else m - 1
        seed = int(np.random.SeedSequence([self.seed, 99, step, k]).generate_state(1)[0])
        if self.function == "fl":
            kernel = "knn" if self.knn else "dense"
            sel = facility_location(X, budget=budget, metric="cosine", kernel=kernel, knn=self.knn or 10,
                                    optimizer=self.optimizer, epsilon=self.epsilon, seed=seed, device=self.device)
        else:
            from .submodular import maximize
            sel = maximize(X, budget, function=self.function, optimizer=self.optimizer, epsilon=self.epsilon,
                           seed=seed)
        # the kernel (2 m^2 d) plus each gain evaluation (a pass over a kernel row: 2 m)
        self.order_flops += 2.0 * m * m * X.shape[1] + 2.0 * m * sel.stats.get("evaluations", 0)
        return sel.indices, sel.gains

    def compute_gains(self, model, step: int) -> None:
        X = self.embeddings(model)
        if self.center:
            X = X - X.mean(0, keepdims=True)
        if not np.isfinite(X).all():
            raise ConfigError("INGENIOUS embeddings contain NaN/inf (did training diverge?)")
        self.parts = self.partition(X, step)
        gains, ranked = np.zeros(self.n), np.zeros(self.n)
        for k in [k for k in range(len(self.parts)) if k % self.world_size == self.rank]:
            part = self.parts[k]
            picks, g = self.order(X[part], k, step)
            gains[part[picks]] = g
            ranked[part[picks]] = 1.0
        if self.world_size > 1:
            gains, ranked = _all_reduce_sum(gains), _all_reduce_sum(ranked)
        self.gains, self.ranked = gains, ranked > 0
        self.last_gain_step = step

    def _resample(self, step: int) -> None:
        rng = np.random.default_rng([self.seed, 4321, self.selections])
        chosen, probs = [], np.zeros(self.n)
        for part in self.parts:
            members = part[self.ranked[part]]
            pos, p = sample_partition(self.gains[members], self.fraction, self.temperature, rng, size=len(part))
            probs[members] = p
            chosen.append(members[pos])
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
                "ranked": self.ranked if self.ranked is not None else np.zeros(0, dtype=bool),
                "probs": self.probs if self.probs is not None else np.zeros(0),
                "subset": self.subset if self.subset is not None else np.zeros(0, dtype=np.int64),
                "parts": list(self.parts) if self.parts is not None else [],
                "layer_used": -999 if self.layer_used is None else self.layer_used,
                "embedded_tokens": self.embedded_tokens, "order_flops": self.order_flops}

    def load_state_dict(self, s: dict) -> None:
        self.selections, self.last_gain_step = int(s["selections"]), int(s["last_gain_step"])
        self.select_s = float(s["select_s"] if "select_s" in s else s["selection_wall_s"])   # older checkpoints
        self.gains = np.asarray(s["gains"]) if len(s["gains"]) else None
        ranked = np.asarray(s.get("ranked", np.zeros(0, dtype=bool)), dtype=bool)
        self.ranked = ranked if len(ranked) else (None if self.gains is None else np.ones(self.n, dtype=bool))
        self.probs = np.asarray(s["probs"]) if len(s["probs"]) else None
        self.subset = np.asarray(s["subset"], dtype=np.int64) if len(s["subset"]) else None
        self.parts = [np.asarray(p, dtype=np.int64) for p in s["parts"]] or None
        lu = int(s.get("layer_used", -999))
        self.layer_used = None if lu == -999 else lu
        self.embedded_tokens, self.order_flops = int(s.get("embedded_tokens", 0)), float(s.get("order_flops", 0.0))
        self.stream.load_state_dict(s)             # after subset/selections: the order depends on them


def _all_reduce_sum(a: np.ndarray) -> np.ndarray:
    import torch.distributed as dist
    t = torch.from_numpy(a.astype(np.float64))
    dist.all_reduce(t)
    return t.numpy()
