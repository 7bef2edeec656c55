"""Graph cut and log-determinant: the other submodular functions of INGENIOUS' strategy class.

The authors' ``SubmodStrategy`` (``selectionstrategies/submodstrategy.py``) orders each partition
with facility location (``"fl"``, the default), graph cut (``"gc"``, lambda 0.4) or log-determinant
(``"logdet"``, lambda 1), all over submodlib's cosine kernel. Facility location runs on the
workbench engine (:mod:`.facility_location`); the other two run here, on a dense float64 kernel,
through the *same* greedy optimizers (exact lazy, naive, seeded stochastic), so every function gets
the same optimizer semantics and the same reproducibility:

graph cut
    ``f(S) = sum_{i in V, j in S} s_ij - lambda sum_{i, j in S} s_ij``; the gain of ``j`` is
    ``sum_i s_ij - lambda (2 sum_{i in S} s_ij + s_jj)``: representative points gain, points
    similar to what is already picked lose (monotone for ``lambda <= 0.5`` on a nonnegative kernel).
    It is submodular only on a nonnegative kernel: with negative cosine similarities a pick can
    *raise* another candidate's gain, and lazy greedy (which trusts stale gains as upper bounds) can
    then differ from naive greedy. Raw hidden states of a language model are anisotropic (their
    cosines are nearly all positive), which is the authors' setting; centred embeddings are not.
log-determinant
    ``f(S) = log det(K_S + lambda I)``; the gain of ``j`` is ``log d_j^2``, the squared residual of
    ``j``'s feature after projecting out the picked ones (an incremental Cholesky factorisation:
    ``O(n)`` per pick and candidate column, ``n x budget`` memory). Diversity, with a volume flavour.

Both cost ``8 n^2`` bytes for the kernel: use them on partitions, as INGENIOUS does.
"""
from __future__ import annotations

import time

import numpy as np

from .facility_location.base import Selection, SelectionError, _as_matrix
from .facility_location.engines import _NumpyEngine
from .facility_location.greedy import _greedy_lazy, _greedy_naive, _greedy_stochastic

#: function name -> the authors' default lambda
FUNCTIONS = {"fl": None, "gc": 0.4, "logdet": 1.0}


def cosine_kernel(X: np.ndarray) -> np.ndarray:
    """Dense cosine similarities (float64) of the rows of ``X`` (zero rows: similarity 0)."""
    X = np.asarray(X, dtype=np.float64)
    norms = np.linalg.norm(X, axis=1)
    A = X / np.where(norms > 0, norms, 1.0)[:, None]
    return A @ A.T


class _DenseFunctionEngine(_NumpyEngine):
    """Shared primitives of the numpy engine over a dense kernel, without compaction.

    Subclasses implement ``gains(idx)``, ``add(c)`` and ``objective()``. ``width`` is 0, which
    tells the compaction schedule that there is nothing to compact.
    """

    def __init__(self, K: np.ndarray):
        n = K.shape[0]
        self.n = n
        self.K = K
        self.R = self.V = self.T = None
        self.evaluations = self.compactions = 0
        self.widths, self.compaction_steps, self.compaction_s = [], [], 0.0
        self.picked = np.zeros(n, dtype=bool)
        self.sel: list[int] = []

    @property
    def width(self) -> int:
        return 0

    @property
    def lazy_cap(self) -> int:
        return 4096


class _GraphCutEngine(_DenseFunctionEngine):
    name = "graph-cut"

    def __init__(self, K: np.ndarray, lam: float):
        super().__init__(K)
        self.lam = float(lam)
        self.total = K.sum(axis=0)                 # sum_i s_ij, the representativeness of j
        self.inside = np.zeros(self.n)             # sum_{i in S} s_ij
        self.diag = np.diag(K).copy()

    def gains(self, idx):
        idx = np.asarray(idx, dtype=np.int64)
        self.evaluations += idx.size
        return (self.total[idx] - self.lam * (2 * self.inside[idx] + self.diag[idx])).astype(np.float32)

    def add(self, c: int):
        self.picked[c] = True
        self.sel.append(c)
        self.inside += self.K[c]
        return None

    def objective(self) -> float:
        S = np.asarray(self.sel, dtype=np.int64)
        return float(self.total[S].sum() - self.lam * self.K[np.ix_(S, S)].sum()) if S.size else 0.0


class _LogDetEngine(_DenseFunctionEngine):
    name = "log-determinant"

    def __init__(self, K: np.ndarray, lam: float, budget: int):
        super().__init__(K)
        self.lam = float(lam)
        self.d2 = np.diag(K).copy() + self.lam     # squared residual of every candidate
        self.C = np.zeros((self.n, budget))        # Cholesky columns of the picks, candidate-major
        self.logdet = 0.0

    def gains(self, idx):
        idx = np.asarray(idx, dtype=np.int64)
        self.evaluations += idx.size
        return np.log(np.maximum(self.d2[idx], 1e-300)).astype(np.float32)

    def add(self, c: int):
        t = len(self.sel)
        d = np.sqrt(max(self.d2[c], 1e-300))
        self.logdet += float(np.log(d * d))
        e = (self.K[c] - self.C[:, :t] @ self.C[c, :t]) / d
        e[c] = d                                   # (the diagonal: K_cc + lambda, not K_cc)
        self.C[:, t] = e
        self.d2 -= e * e
        self.picked[c] = True
        self.sel.append(c)
        return None

    def objective(self) -> float:
        return self.logdet


def maximize(X, budget: int, function: str = "gc", optimizer: str = "lazy", lam: float | None = None,
             epsilon: float = 0.1, seed: int = 0) -> Selection:
    """Greedy maximisation of graph cut (``"gc"``) or log-determinant (``"logdet"``) over the cosine
    kernel of the rows of ``X``; returns a :class:`Selection` (picks in greedy order, their gains).

    ``lam`` defaults to the authors' value (0.4 for graph cut, 1 for log-determinant);
    ``optimizer`` is ``"lazy"`` (exact), ``"naive"`` (the same picks) or ``"stochastic"`` (seeded,
    ``epsilon`` as in stochastic greedy). Facility location lives in
    :func:`~workbench.selection.facility_location.facility_location`.
    """
    if function not in ("gc", "logdet"):
        raise SelectionError(f"function must be 'gc' or 'logdet' here (facility location: facility_location()), "
                             f"got {function!r}")
    if optimizer not in ("lazy", "naive", "stochastic"):
        raise SelectionError(f"optimizer must be 'lazy', 'naive' or 'stochastic', got {optimizer!r}")
    t0 = time.perf_counter()
    X = _as_matrix(X)
    n = X.shape[0]
    if not 1 <= int(budget) <= n:
        raise SelectionError(f"budget must be in [1, {n}], got {budget}")
    budget = int(budget)
    lam = FUNCTIONS[function] if lam is None else float(lam)
    if lam < 0:
        raise SelectionError(f"lambda must be >= 0, got {lam}")
    K = cosine_kernel(X)
    t1 = time.perf_counter()
    eng = _GraphCutEngine(K, lam) if function == "gc" else _LogDetEngine(K, lam, budget)
    if optimizer == "naive":
        picks, gains = _greedy_naive(eng, budget, None)
    elif optimizer == "lazy":
        picks, gains = _greedy_lazy(eng, budget, None)
    else:
        picks, gains = _greedy_stochastic(eng, budget, float(epsilon), int(seed), None)
    t2 = time.perf_counter()
    return Selection(indices=np.asarray(picks, dtype=np.int64), gains=np.asarray(gains, dtype=np.float64),
                     objective=eng.objective(), wall_s=t2 - t0, kernel_s=t1 - t0, optimize_s=t2 - t1,
                     stats={"function": function, "lambda": lam, "optimizer": optimizer,
                            "evaluations": int(eng.evaluations), "engine": eng.name})


__all__ = ["FUNCTIONS", "cosine_kernel", "maximize"]
