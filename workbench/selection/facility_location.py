"""Fast facility-location subset selection (the selection engine of INGENIOUS).

What facility location is
-------------------------
Given ``n`` points and a similarity ``sim(i, j)``, the facility-location value of a subset ``S``
is::

    f(S) = sum over every point i of  max(0, max_{j in S} sim(i, j))

Each point ``i`` of the *ground set* is "served" by its most similar selected point (its
facility); ``f`` adds up how well everything is served.  A subset with a high value is
*representative*: every region of the data has a selected point nearby.  INGENIOUS uses it to
pick a small, representative part of a pretraining corpus (on sentence embeddings).

``f`` is monotone and submodular (adding a point never hurts, and helps less the more is already
selected), so the greedy algorithm -- repeatedly add the point with the largest *marginal gain*
``gain(j) = f(S + j) - f(S) = sum_i max(0, sim(i, j) - cur[i])`` where ``cur[i]`` is how well
``i`` is served now -- is within ``1 - 1/e`` of the best subset of that size.

The ``max(0, ...)`` matches submodlib: its memoised "similarity to the nearest selected point"
starts at 0, so negative similarities never count.  Similarities follow submodlib 0.0.3 exactly:

* ``metric="cosine"``: raw cosine similarity ``<x_i, x_j> / (|x_i| |x_j|)`` in [-1, 1], no
  shift; negative values simply never contribute.
* ``metric="euclidean"``: ``exp(-|x_i - x_j| / d)`` (submodlib's ``gamma = 1/num_features`` on
  the *unsquared* distance).

Degenerate data (decided behaviour): ``sim(i, i) = 1`` for every point, and an all-zero row has
cosine similarity 0 to every *other* point (no division by zero; this is also what submodlib's
kernel gives).  So constant data (all rows identical) is valid: the first pick serves everything
(gain ``n``) and every later gain is 0 (picks in index order).  All-zero data gives the identity
kernel (every gain is 1).

Options and what they cost (n points, d features, budget k)
-----------------------------------------------------------
``kernel="dense"``
    The full ``n x n`` float32 similarity matrix, built in row chunks with torch matmuls on
    ``device``: ``O(n^2 d)`` flops and ``4 n^2`` bytes (10k points: 0.4 GB; 32k: 4 GB).  Refused
    with a :class:`SelectionError` when it would exceed ``memory_limit_gb``.  Exact objective.
``kernel="knn"``
    Only the similarities between near neighbours are kept: entry ``(i, j)`` survives when ``j``
    is among the ``knn`` most similar points of ``i`` or ``i`` among those of ``j`` (every point
    is its own nearest neighbour, similarity 1); everything else counts as 0.  This symmetric
    k-NN kernel is what submodlib's sparse mode builds from a k-NN matrix.  Neighbours come from
    faiss (exact ``IndexFlatIP`` on normalised rows for cosine, ``IndexFlatL2`` for euclidean;
    on the GPU when faiss has GPU support and CUDA is present) or, without faiss, from a chunked
    torch top-k.  Finding them still costs ``O(n^2 d)`` flops, but memory is ``O(n knn)`` and
    the greedy becomes cheap: a pick only changes the gains of candidates that share a served
    point with it.  An approximation of the dense objective (Wei et al. 2014).

``optimizer="naive"``
    Textbook greedy: every step evaluates the gain of every remaining candidate (vectorised).
    ``O(k n w)`` where ``w`` is the kernel width (``n`` dense).  The reference for exactness.
``optimizer="lazy"``
    Exact lazy greedy (Minoux 1978): by submodularity a gain computed earlier is an upper bound
    of the current one, so only candidates whose stale bound still reaches the best gain found
    so far are re-evaluated -- all of them in one vectorised batch.  The "priority queue" is a
    flat array of bounds whose first maximum is found with one ``argmax`` (cheaper than a heap
    at these sizes, and it breaks ties by lowest index exactly as naive does).  Same picks and
    *bitwise* the same gains as ``naive``, with tens of evaluations per step instead of ``n``.
``optimizer="stochastic"``
    Stochastic greedy (Mirzasoleiman et al. 2015, "Lazier than lazy greedy"): each step
    evaluates only a random sample of ``(n/k) log(1/epsilon)`` remaining candidates and takes the
    best; ``1 - 1/e - epsilon`` in expectation, ``O(n log(1/epsilon) w)`` in total, seeded.

How the exact optimizers stay fast (and exact)
----------------------------------------------
* The kernel is stored candidate-major (a candidate's similarities are one row) and a gain is
  ``sum(max(0, row - cur[served]))`` in float32, computed by one function for naive and lazy
  alike, row by row, so both get identical bits.  Every float operation in it is monotone, so
  a stale gain is a valid upper bound *in floating point*, not only on paper.
* Compaction: an entry with ``sim(i, j) <= cur[i]`` can never contribute again (``cur`` only
  grows).  After a few picks almost every entry of a dense kernel is dead, so the kernel is
  rewritten -- in place, in its own memory -- as a padded sparse (ELL) matrix of the live
  entries: on 10k clustered points the width goes from 10,000 to ~1,300 after 7 picks and to
  ~30 later.  The decision depends only on state naive and lazy share, so both compact at the
  same steps, and every bound is recomputed right after, so exactness is kept.
* Once the kernel is sparse enough, a served-point -> candidates index tells which bounds a pick
  can change; all other bounds stay exact and are not re-evaluated.
* On CPU the loop runs on numpy (several times less overhead per call than torch for these
  small operations; ``engine="torch"`` runs the same algorithm on torch, the path used on GPUs),
  single-threaded: the work items are small and thread hand-offs cost more than they save.
* The dense kernel's pages are mapped in one call (``MAP_POPULATE``) instead of 100k page faults.

Use ``backend="submodlib"`` to run the same selection through submodlib (the reference
implementation) and get the result in the same :class:`Selection` form.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import ConfigError

__all__ = [
    "SelectionError",
    "Selection",
    "facility_location",
    "similarity_kernel",
    "evaluate_objective",
]

METRICS = ("cosine", "euclidean")
KERNELS = ("dense", "knn")
OPTIMIZERS = ("naive", "lazy", "stochastic")
BACKENDS = ("workbench", "submodlib")
KNN_BACKENDS = ("auto", "faiss", "torch")

_GIB = 1024**3
_NEG_INF = float("-inf")


class SelectionError(ConfigError):
    """Bad input or an impossible request for a subset selection (a :class:`ConfigError`)."""


@dataclass
class Selection:
    """Result of a facility-location maximisation.

    ``indices``: selected points in greedy order (int64); ``gains``: the marginal gain of each
    pick when it was made (float64; they sum to ``objective`` up to float32 rounding and are
    non-increasing for the exact optimizers); ``objective``: ``f(S)`` of the selected set on the
    kernel that was used; ``wall_s``: wall-clock seconds end to end (kernel + optimisation).
    The extra fields split the time (``kernel_s``, ``optimize_s``) and carry counters
    (``stats``: gain evaluations, kernel compactions, ...).
    """

    indices: np.ndarray
    gains: np.ndarray
    objective: float
    wall_s: float
    kernel_s: float = 0.0
    optimize_s: float = 0.0
    stats: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------


def _as_matrix(X) -> np.ndarray:
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    try:
        arr = np.asarray(X)
    except Exception as exc:  # ragged lists and the like
        raise SelectionError(f"X must be a 2-D numeric array (n points x d features): {exc}") from None
    if arr.ndim != 2:
        raise SelectionError(f"X must be a 2-D array (n points x d features), got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise SelectionError(f"X must be numeric, got dtype {arr.dtype}")
    n, d = arr.shape
    if n == 0 or d == 0:
        raise SelectionError(f"X is empty (shape {arr.shape})")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise SelectionError(f"X contains NaN or infinite values (in {bad} of {n} rows)")
    return arr


def _check_args(n, budget, metric, kernel, knn, optimizer, backend, epsilon, memory_limit_gb):
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise SelectionError(f"budget must be an integer, got {budget!r}")
    if budget <= 0:
        raise SelectionError(f"budget must be positive, got {budget}")
    if budget > n:
        raise SelectionError(f"budget ({budget}) exceeds the number of points ({n})")
    if metric not in METRICS:
        raise SelectionError(f"metric must be one of {METRICS}, got {metric!r}")
    if kernel not in KERNELS:
        raise SelectionError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if optimizer not in OPTIMIZERS:
        raise SelectionError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if backend not in BACKENDS:
        raise SelectionError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if kernel == "knn":
        if isinstance(knn, bool) or not isinstance(knn, (int, np.integer)) or knn < 1:
            raise SelectionError(f"knn must be a positive integer, got {knn!r}")
        if knn > n:
            raise SelectionError(f"knn ({knn}) exceeds the number of points ({n})")
    if optimizer == "stochastic" and not (0.0 < float(epsilon) < 1.0):
        raise SelectionError(f"epsilon must be in (0, 1), got {epsilon!r}")
    if not float(memory_limit_gb) > 0:
        raise SelectionError(f"memory_limit_gb must be positive, got {memory_limit_gb!r}")


def _resolve_device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise SelectionError(f"unknown device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SelectionError(f"device {device!r} requested but CUDA is not available")
    return dev


def _check_dense_memory(n: int, memory_limit_gb: float) -> None:
    need = 4.0 * n * n / _GIB
    if need > memory_limit_gb:
        raise SelectionError(
            f"the dense {n}x{n} float32 kernel needs {need:.1f} GB > memory_limit_gb="
            f"{memory_limit_gb:g}; use kernel=\"knn\" (sparse nearest-neighbour kernel), "
            f"partition the data and select per partition, or raise memory_limit_gb"
        )


def _check_knn_memory(n: int, knn: int, width: int, memory_limit_gb: float) -> None:
    # neighbour lists + symmetric pairs (~60 B per list entry) + padded kernel and index (12 B
    # per slot of the widest candidate)
    need = (60.0 * n * knn + 12.0 * n * width) / _GIB
    if need > memory_limit_gb:
        raise SelectionError(
            f"the knn kernel for n={n}, knn={knn} (widest row {width}) needs about {need:.1f} GB > "
            f"memory_limit_gb={memory_limit_gb:g}; lower knn, partition the data, or raise memory_limit_gb"
        )


@contextlib.contextmanager
def _torch_threads(device: torch.device, threads: int = 1):
    """Run the (latency-bound) optimisation loop with few CPU threads; restore afterwards."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------------------------
# similarities
# --------------------------------------------------------------------------------------------


class _Sim:
    """Row blocks of the similarity matrix, computed with one matmul per block (float32)."""

    def __init__(self, X: np.ndarray, metric: str, device: torch.device):
        self.metric = metric
        self.n, self.d = X.shape
        X64 = X.astype(np.float64, copy=False)
        if metric == "cosine":
            norms = np.sqrt((X64 * X64).sum(axis=1))
            inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
            self.A = torch.from_numpy((X64 * inv[:, None]).astype(np.float32)).to(device)
            self.sq = None
        else:
            A = X64.astype(np.float32)
            self.A = torch.from_numpy(A).to(device)
            self.sq = torch.from_numpy((X64 * X64).sum(axis=1).astype(np.float32)).to(device)

    def block(self, r0: int, r1: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """sim(r, i) for rows r in [r0, r1) and all i; the diagonal is exactly 1."""
        out = torch.matmul(self.A[r0:r1], self.A.T, out=out)
        if self.metric == "euclidean":
            # |a-b|^2 = |a|^2 + |b|^2 - 2<a,b>, clamped at 0 against cancellation
            out.mul_(-2.0).add_(self.sq[None, :]).add_(self.sq[r0:r1, None]).clamp_(min=0.0)
            out.sqrt_().mul_(-1.0 / self.d).exp_()
        rows = torch.arange(r1 - r0, device=out.device)
        out[rows, rows + r0] = 1.0
        return out


def _row_chunk(n: int, width: int, target_elems: int = 1 << 22) -> int:
    return int(max(1, min(n, target_elems // max(1, width))))


def _dense_kernel(sim: _Sim, on_chunk=None, out: torch.Tensor | None = None) -> torch.Tensor:
    """The n x n kernel, stored candidate-major: row j holds sim(., j) for every served point.

    ``on_chunk(r0, r1)`` is called right after rows [r0, r1) are written, while they are still
    in cache (used to compute the initial gains without another pass over the kernel).
    """
    n = sim.n
    K = torch.empty((n, n), dtype=torch.float32, device=sim.A.device) if out is None else out
    step = _row_chunk(n, n, 1 << 20)
    step = max(64, step - step % 64)
    for r0 in range(0, n, step):
        r1 = min(n, r0 + step)
        sim.block(r0, r1, out=K[r0:r1])
        if on_chunk is not None:
            on_chunk(r0, r1)
    return K


def _knn_torch(sim: _Sim, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = sim.n
    idx = torch.empty((n, k), dtype=torch.int64, device=sim.A.device)
    val = torch.empty((n, k), dtype=torch.float32, device=sim.A.device)
    step = _row_chunk(n, n, 1 << 23)
    for r0 in range(0, n, step):
        r1 = min(n, r0 + step)
        blk = sim.block(r0, r1)
        rows = torch.arange(r1 - r0, device=blk.device)
        blk[rows, rows + r0] = float("inf")  # every point is its own nearest neighbour
        v, i = torch.topk(blk, k, dim=1)
        v[:, 0] = 1.0
        idx[r0:r1], val[r0:r1] = i, v
    return idx, val


def _faiss_module():
    try:
        import faiss  # noqa: PLC0415
    except Exception:
        return None
    return faiss


def _knn_faiss(faiss, X: np.ndarray, metric: str, k: int, device: torch.device):
    n, d = X.shape
    X64 = X.astype(np.float64, copy=False)
    if metric == "cosine":
        norms = np.sqrt((X64 * X64).sum(axis=1))
        inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        A = np.ascontiguousarray((X64 * inv[:, None]).astype(np.float32))
        index = faiss.IndexFlatIP(d)
    else:
        A = np.ascontiguousarray(X64.astype(np.float32))
        index = faiss.IndexFlatL2(d)
    if (
        device.type == "cuda"
        and hasattr(faiss, "StandardGpuResources")
        and getattr(faiss, "get_num_gpus", lambda: 0)() > 0
    ):
        res = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(res, device.index or 0, index)
    index.add(A)
    D, I = index.search(A, k)
    I = I.astype(np.int64)
    if metric == "euclidean":
        S = np.exp(-np.sqrt(np.maximum(D, 0.0)) / d).astype(np.float32)
    else:
        S = D.astype(np.float32)
    ar = np.arange(n)
    is_self = I == ar[:, None]
    missing = ~is_self.any(axis=1)  # ties among duplicates can push a point out of its own list
    if missing.any():
        I[missing, -1] = ar[missing]
        is_self[missing, -1] = True
    S[is_self] = 1.0
    # faiss pads with -1 when it finds fewer than k results (cannot happen for flat indexes)
    if (I < 0).any():
        raise SelectionError("faiss returned fewer neighbours than requested")
    return torch.from_numpy(I).to(device), torch.from_numpy(S).to(device)


def _knn_graph(X: np.ndarray, metric: str, k: int, device: torch.device, method: str = "auto"):
    """(neighbours, similarities), both (n, k): row i lists the k points most similar to i."""
    if method not in KNN_BACKENDS:
        raise SelectionError(f"knn_backend must be one of {KNN_BACKENDS}, got {method!r}")
    faiss = _faiss_module() if method in ("auto", "faiss") else None
    if method == "faiss" and faiss is None:
        raise SelectionError("knn_backend='faiss' requested but faiss is not installed")
    if faiss is not None:
        return _knn_faiss(faiss, X, metric, k, device)
    return _knn_torch(_Sim(X, metric, device), k)


def similarity_kernel(X, metric="cosine", kernel="dense", knn=10, device=None, knn_backend="auto",
                      memory_limit_gb=4.0):
    """The kernel the engine optimises, as ``M[i, j] = sim(i, j)`` (i served, j candidate).

    ``kernel="dense"`` gives a float32 numpy array; ``"knn"`` a symmetric float64
    ``scipy.sparse.csr_matrix`` holding ``sim(i, j)`` wherever j is among the ``knn`` nearest
    neighbours of i or i among those of j.  Meant for inspection, tests and for feeding submodlib
    the very same kernel; :func:`facility_location` never materialises this copy.
    """
    X = _as_matrix(X)
    n = X.shape[0]
    if metric not in METRICS:
        raise SelectionError(f"metric must be one of {METRICS}, got {metric!r}")
    dev = _resolve_device(device)
    if kernel == "dense":
        _check_dense_memory(n, float(memory_limit_gb))
        return _dense_kernel(_Sim(X, metric, dev)).T.contiguous().cpu().numpy()
    if kernel != "knn":
        raise SelectionError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if not isinstance(knn, (int, np.integer)) or not 1 <= knn <= n:
        raise SelectionError(f"knn must be an integer in [1, {n}], got {knn!r}")
    from scipy import sparse  # noqa: PLC0415

    idx, val = _knn_graph(X, metric, int(knn), dev, knn_backend)
    cand, served, vals = _knn_pairs(idx.cpu().numpy(), val.cpu().numpy(), n)
    M = sparse.csr_matrix((vals.astype(np.float64), (served, cand)), shape=(n, n))
    M.sort_indices()
    return M


def evaluate_objective(X, indices, metric="cosine") -> float:
    """f(S) on the exact dense kernel, in float64 (chunked; never stores n x n).

    Independent of the engine: use it to compare selections made by different code.
    """
    X = _as_matrix(X).astype(np.float64)
    S = np.asarray(indices, dtype=np.int64)
    n, d = X.shape
    if S.size == 0:
        return 0.0
    if metric == "cosine":
        norms = np.sqrt((X * X).sum(axis=1))
        inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        A = X * inv[:, None]
    elif metric == "euclidean":
        A = X
        sq = (X * X).sum(axis=1)
    else:
        raise SelectionError(f"metric must be one of {METRICS}, got {metric!r}")
    At = torch.from_numpy(A)
    B = At[torch.from_numpy(S)]
    in_s = np.zeros(n, dtype=bool)
    in_s[S] = True
    total = 0.0
    step = _row_chunk(n, S.size, 1 << 22)
    for r0 in range(0, n, step):
        r1 = min(n, r0 + step)
        blk = At[r0:r1] @ B.T
        if metric == "euclidean":
            sqt = torch.from_numpy(sq)
            d2 = (sqt[r0:r1, None] + sqt[torch.from_numpy(S)][None, :] - 2 * blk).clamp_(min=0)
            blk = torch.exp(-d2.sqrt() / d)
        best = blk.max(dim=1).values.clamp_(min=0).numpy()
        best[in_s[r0:r1]] = np.maximum(best[in_s[r0:r1]], 1.0)  # sim(i, i) = 1
        total += float(best.sum())
    return total


# --------------------------------------------------------------------------------------------
# the optimisation engine
# --------------------------------------------------------------------------------------------


def _populated_empty(size: int) -> np.ndarray:
    """An uninitialised float32 array whose pages are mapped up front (Linux MAP_POPULATE).

    Touching a fresh 400 MB buffer page by page costs ~100k page faults, which on a small VM is
    a sizeable part of the whole selection; populating the mapping in one system call is
    several times cheaper.  Falls back to ``np.empty`` where that is not available.
    """
    flags = getattr(mmap, "MAP_POPULATE", 0)
    if size * 4 < (1 << 24) or not flags:
        return np.empty(size, dtype=np.float32)
    try:
        buf = mmap.mmap(-1, size * 4, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | flags)
    except (OSError, ValueError, AttributeError):
        return np.empty(size, dtype=np.float32)
    return np.frombuffer(buf, dtype=np.float32)  # the array keeps the mapping alive


def _index_dtype(n: int):
    """Served-point ids fit in int32 below 2^31 points: half the memory of int64."""
    return np.int32 if n + 1 < 2**31 else np.int64


class _Engine:
    """Coverage state plus exact gain evaluation over a candidate-major kernel.

    Two kernel representations:

    * dense: ``K`` (n, n) with ``K[j, i] = sim(i, j)`` (row j = everything candidate j offers);
    * ELL (padded sparse): ``R`` (n, w) served-point ids and ``V`` (n, w) similarities of the live
      entries of each candidate; padding points at the dummy slot ``n`` with value ``-inf``.

    ``cur`` has ``n + 1`` slots: ``cur[i]`` is how well point ``i`` is served by the current
    selection (0 initially, so negative similarities never count); slot ``n`` is the dummy that
    padding reads and (harmlessly) writes.

    ``T`` (optional): for every served point, a superset of the candidates holding an entry on
    it -- for the symmetric k-NN kernel simply the neighbour lists, for a compacted dense kernel
    its transpose once it is small.  With it a pick only makes stale the bounds of the
    candidates sharing a served point with it, instead of all of them.  (numpy engine: CSR
    ``(ptr, ids)``; torch engine: padded rows.)

    Subclasses implement the same primitives with numpy (CPU: several times lower per-call
    overhead than torch for these small, latency-bound operations) or torch (any device).  The
    optimizers below only talk to these primitives.
    """

    def __init__(self, n: int):
        self.n = n
        self.K = self.R = self.V = None
        self.evaluations = 0
        self.compactions = 0
        self.widths: list[int] = []
        self.compaction_steps: list[int] = []
        self.compaction_s = 0.0

    @property
    def width(self) -> int:
        return self.n if self.K is not None else int(self.V.shape[1])

    def _representation_changed(self) -> None:
        self.widths.append(self.width)

    def all_gains(self):
        """Gains of every candidate; picked ones get -inf."""
        g = self.gains(self.arange(0, self.n))
        self.put(g, self.picked_index(), _NEG_INF)
        return g

    @property
    def lazy_cap(self) -> int:
        """Most candidates the lazy optimizer re-evaluates in one batch."""
        return int(max(64, (1 << 20) // max(1, self.width)))


class _NumpyEngine(_Engine):
    """CPU engine on numpy arrays.

    Memory layout: one flat float32 buffer holds the kernel.  Dense: the (n, n) matrix.  ELL:
    rows of ``2w`` slots, ``[V_j (w floats) | R_j (w int32 ids)]`` -- a candidate's values and
    ids sit side by side, and a compaction can rewrite the kernel *in place*: the new (narrower)
    row j starts at or before the old row j, so rows are rewritten front to back without ever
    overwriting unread data, and without touching fresh memory (page faults are a large part of
    the cost of big allocations on small machines).
    """

    name = "numpy"

    def __init__(self, n: int, K=None, pairs=None, symmetric=False):
        """``K``: dense candidate-major kernel; or ``pairs``: (candidate, served, similarity)
        triples sorted by candidate (a sparse kernel; ``symmetric`` when every entry (i, j)
        comes with (j, i), which makes the candidate lists double as the served-point index)."""
        super().__init__(n)
        self.T = None  # served point -> candidates with an entry on it, CSR (ptr, ids)
        self.cur = np.zeros(n + 1, dtype=np.float32)
        self.picked = np.zeros(n, dtype=bool)
        self._wide = np.zeros(0, dtype=np.int64)  # the widest candidates at the last rebuild
        if K is not None:
            self.K = K
            self._buf = K.reshape(-1)
        else:
            cand, served, vals = pairs
            counts = np.bincount(cand, minlength=n)
            w = max(1, int(counts.max()))
            self._buf = _populated_empty(n * 2 * w)
            self.V, self.R = self._ell_views(w)
            self.V.fill(_NEG_INF)
            self.R.fill(n)
            ptr = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(counts, out=ptr[1:])
            pos = np.arange(cand.size, dtype=np.int64) - np.repeat(ptr[:-1], counts)
            off = cand * (2 * w) + pos  # row `cand`, slot `pos` of the [V | R] layout
            self._buf[off] = vals
            self._buf.view(np.int32)[off + w] = served
            if symmetric:
                self.T = (ptr, served.astype(np.int32))
            self._wide = np.argsort(counts)[-16:]
        self._representation_changed()

    def touched(self, rows: np.ndarray) -> np.ndarray:
        """Candidates holding an entry on any of ``rows`` (with repeats), from the CSR index."""
        ptr, ids = self.T
        if rows.size <= 64:  # the usual case: a few slices beat the vectorised ragged gather
            lo, hi = ptr[rows].tolist(), ptr[rows + 1].tolist()
            return np.concatenate([ids[a:b] for a, b in zip(lo, hi)]) if lo else ids[:0]
        lens = ptr[rows + 1] - ptr[rows]
        total = int(lens.sum())
        ends = np.cumsum(lens)
        return ids[np.repeat(ptr[rows] - ends + lens, lens) + np.arange(total)]

    def _ell_views(self, w: int):
        rows = self._buf[: self.n * 2 * w].reshape(self.n, 2 * w)
        V = rows[:, :w]
        R = rows.view(np.int32)[:, w:] if _index_dtype(self.n) == np.int32 else None
        if R is None:  # more than 2^31 points: no room for int64 ids next to float32 values
            raise SelectionError("more than 2^31 points are not supported by the CPU engine")
        return V, R

    def _representation_changed(self) -> None:
        super()._representation_changed()
        self.rows_per_chunk = max(1, (1 << 18) // self.width)  # ~1 MB of float32 per chunk

    # -- primitives used by the optimizers ---------------------------------------------------
    def vec(self, fill: float):
        return np.full(self.n, fill, dtype=np.float32)

    def copy(self, x):
        return x.copy()

    def arange(self, a: int, b: int):
        return np.arange(a, b, dtype=np.int64)

    def index(self, seq):
        return np.asarray(seq, dtype=np.int64)

    def size(self, idx) -> int:
        return int(idx.shape[0])

    def argmax(self, x) -> int:
        return int(np.argmax(x))  # first maximum => lowest index on ties

    def get(self, x, i: int) -> float:
        return float(x[i])

    def put(self, x, idx, vals) -> None:
        x[idx] = vals

    def at_least(self, x, tau: float):
        return np.flatnonzero(x >= tau)

    def top(self, x, idx, k: int):
        vals = x[idx]
        return idx[np.argpartition(-vals, k - 1)[:k]]

    def picked_index(self):
        return np.flatnonzero(self.picked)

    # -- gains and picks ---------------------------------------------------------------------
    def gains(self, idx):
        """Exact gains (float32) of candidates ``idx``: sum_i max(0, sim(i, j) - cur[i]).

        Rows are processed in chunks; numpy reduces every row on its own (pairwise sum over
        the row), so a candidate's gain has the same bits whatever chunk it lands in.
        """
        idx = np.asarray(idx, dtype=np.int64)
        m = idx.shape[0]
        out = np.empty(m, dtype=np.float32)
        step = self.rows_per_chunk
        for s in range(0, m, step):
            b = idx[s : s + step]
            # (fancy indexing, not np.take(..., out=): the latter is many times slower here)
            v = self.K[b] if self.K is not None else self.V[b]
            if self.K is not None:
                np.subtract(v, self.cur[: self.n], out=v)
            else:
                np.subtract(v, self.cur[self.R[b]], out=v)
            np.maximum(v, 0.0, out=v)
            out[s : s + b.shape[0]] = v.sum(axis=1)
        self.evaluations += m
        return out

    def add(self, c: int):
        """Select c; return the candidates whose gain may have changed (None = all of them)."""
        self.picked[c] = True
        if self.K is not None:
            np.maximum(self.cur[: self.n], self.K[c], out=self.cur[: self.n])
            return None
        r, v = self.R[c], self.V[c]
        up = v > self.cur[r]
        rows = r[up]
        self.cur[rows] = v[up]
        if self.T is None:
            return None
        # a gain changes only if the candidate has an entry on a row whose coverage went up
        return self.touched(rows)

    def objective(self) -> float:
        return float(self.cur[: self.n].astype(np.float64).sum())

    # -- compaction --------------------------------------------------------------------------
    def estimate_width(self, samples: int = 128) -> int:
        """Largest live-entry count among up to ``samples`` evenly spaced unpicked candidates."""
        free = np.flatnonzero(~self.picked)
        if free.size == 0:
            return 0
        cand = free[np.linspace(0, free.size - 1, min(samples, free.size)).astype(np.int64)]
        # plus the widest rows of the last rebuild: on a k-NN kernel a few hubs set the width
        cand = np.concatenate([cand, self._wide[~self.picked[self._wide]]])
        if self.K is not None:
            alive = self.K[cand] > self.cur[: self.n]
        else:
            alive = self.V[cand] > self.cur[self.R[cand]]
        return int(np.count_nonzero(alive, axis=1).max())

    def _alive(self, r0: int, r1: int, out: np.ndarray) -> np.ndarray:
        """Live entries of candidates [r0, r1): sim > cur, picked candidates excluded."""
        alive = out[: r1 - r0]
        if self.K is not None:
            np.greater(self.K[r0:r1], self.cur[: self.n], out=alive)
        else:
            np.greater(self.V[r0:r1], self.cur[self.R[r0:r1]], out=alive)
        gone = np.flatnonzero(self.picked[r0:r1])
        if gone.size:
            alive[gone] = False
        return alive

    def compact(self, max_width: int) -> bool:
        """Drop dead entries (``sim <= cur``: they can never contribute again) and picked rows.

        Pass 1 counts the live entries per candidate (and gives up, changing nothing, when the
        widest has more than ``max_width``); pass 2 left-packs each row's live entries, in
        their old order, into the new layout, in place.
        """
        n, w = self.n, self.width
        dense = self.K is not None
        step = _row_chunk(n, w, 1 << 22)
        alive_buf = np.empty((min(step, n), w), dtype=bool)
        counts = np.empty(n, dtype=np.int64)
        masks = []  # ELL: keep pass 1's masks (n*w bytes) instead of gathering coverage again
        for r0 in range(0, n, step):
            r1 = min(n, r0 + step)
            alive = self._alive(r0, r1, alive_buf)
            counts[r0:r1] = np.count_nonzero(alive, axis=1)
            if counts[r0:r1].max(initial=0) > max_width:
                return False
            if not dense:
                masks.append(alive.copy())
        m = max(1, int(counts.max()))
        if not dense and m >= w:
            return False
        V_new, R_new = self._ell_views(m)
        buf, bufi = self._buf, self._buf.view(np.int32)
        for c, r0 in enumerate(range(0, n, step)):
            r1 = min(n, r0 + step)
            alive = masks[c] if masks else self._alive(r0, r1, alive_buf)
            cnt = counts[r0:r1]
            flat = np.flatnonzero(alive)  # row-major: each row's live entries in their order
            row = np.repeat(np.arange(r0, r1, dtype=np.int64), cnt)
            slot = flat - (row - r0) * w  # column in the old row
            if dense:
                vals = self.K[r0:r1].reshape(-1)[flat]
                ids = slot.astype(np.int32)
            else:
                old = row * (2 * w) + slot
                vals, ids = buf[old], bufi[old + w]
            # everything the old rows [r0, r1) hold is read; the new rows may now overwrite them
            V_new[r0:r1].fill(_NEG_INF)
            R_new[r0:r1].fill(n)
            new = row * (2 * m) + (np.arange(flat.size) - np.repeat(np.cumsum(cnt) - cnt, cnt))
            buf[new] = vals
            bufi[new + m] = ids
        self.K, self.V, self.R = None, V_new, R_new
        self._wide = np.argsort(counts)[-16:]
        if counts.sum() <= _TRANSPOSE_MAX_ENTRIES:
            self.T = _transpose(self.R, n)  # tighter than any earlier one
        self.compactions += 1
        self._representation_changed()
        return True


_TRANSPOSE_MAX_ENTRIES = 1 << 19


def _transpose(R: np.ndarray, n: int):
    """CSR (ptr, ids) of the served point -> candidates index of a candidate-major ELL kernel
    (padding ``n`` skipped)."""
    w = R.shape[1]
    served = R.reshape(-1)
    live = np.flatnonzero(served != n)
    served = served[live]
    order = np.argsort(served, kind="stable")
    ids = (live[order] // w).astype(np.int32)
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(served, minlength=n), out=ptr[1:])
    return ptr, ids


class _TorchEngine(_Engine):
    """The same engine on torch tensors (CUDA, or CPU when asked for).

    Gains are evaluated on blocks of exactly ``block`` rows (padded by repeating an index):
    fixed shapes keep every reduction identical on any device, so naive and lazy still agree
    bit for bit.
    """

    name = "torch"

    def __init__(self, n: int, device: torch.device, K=None, R=None, V=None, T=None):
        super().__init__(n)
        self.T = T
        self.device = device
        self.cur = torch.zeros(n + 1, dtype=torch.float32, device=device)
        self.picked = torch.zeros(n, dtype=torch.bool, device=device)
        self.K, self.R, self.V = K, R, V
        self._representation_changed()

    def _representation_changed(self) -> None:
        super()._representation_changed()
        b = 16384 // max(1, self.width)
        self.block = int(min(256, max(16, 1 << max(0, b.bit_length() - 1))))

    # -- primitives --------------------------------------------------------------------------
    def vec(self, fill: float):
        return torch.full((self.n,), fill, dtype=torch.float32, device=self.device)

    def copy(self, x):
        return x.clone()

    def arange(self, a: int, b: int):
        return torch.arange(a, b, device=self.device)

    def index(self, seq):
        if isinstance(seq, np.ndarray):
            return torch.from_numpy(seq.astype(np.int64, copy=False)).to(self.device)
        return torch.as_tensor(seq, dtype=torch.int64, device=self.device)

    def size(self, idx) -> int:
        return int(idx.numel())

    def argmax(self, x) -> int:
        return int(torch.argmax(x))  # first maximum => lowest index on ties

    def get(self, x, i: int) -> float:
        return float(x[i])

    def put(self, x, idx, vals) -> None:
        x[idx] = vals

    def at_least(self, x, tau: float):
        return torch.nonzero(x >= tau).squeeze(1)

    def top(self, x, idx, k: int):
        return idx[torch.topk(x[idx], k, sorted=False).indices]

    def picked_index(self):
        return torch.nonzero(self.picked).squeeze(1)

    # -- gains and picks ---------------------------------------------------------------------
    def _block_gains(self, b: torch.Tensor) -> torch.Tensor:
        if self.K is not None:
            v = self.K.index_select(0, b)
            v.sub_(self.cur[: self.n])
        else:
            v = self.V.index_select(0, b)
            v.sub_(self.cur[self.R.index_select(0, b)])
        return v.clamp_(min=0.0).sum(dim=1)

    def gains(self, idx):
        idx = idx if isinstance(idx, torch.Tensor) else self.index(idx)
        m = int(idx.numel())
        B = self.block
        pad = (-m) % B
        if pad:
            idx = torch.cat([idx, idx[:1].expand(pad)])
        out = torch.empty(m + pad, dtype=torch.float32, device=self.device)
        for s in range(0, m + pad, B):
            out[s : s + B] = self._block_gains(idx[s : s + B])
        self.evaluations += m
        return out[:m]

    def add(self, c: int):
        self.picked[c] = True
        if self.K is not None:
            torch.maximum(self.cur[: self.n], self.K[c], out=self.cur[: self.n])
            return None
        r, v = self.R[c], self.V[c]
        up = v > self.cur[r]
        rows = r[up].long()
        self.cur[rows] = v[up]
        if self.T is None:
            return None
        return self.T[rows].reshape(-1)

    def objective(self) -> float:
        return float(self.cur[: self.n].double().sum())

    # -- compaction --------------------------------------------------------------------------
    def estimate_width(self, samples: int = 128) -> int:
        free = torch.nonzero(~self.picked).squeeze(1)
        if free.numel() == 0:
            return 0
        pos = torch.linspace(0, free.numel() - 1, min(samples, free.numel()), device=self.device)
        cand = free[pos.long()]
        if self.K is not None:
            alive = self.K.index_select(0, cand) > self.cur[: self.n]
        else:
            alive = self.V.index_select(0, cand) > self.cur[self.R.index_select(0, cand)]
        return int(torch.count_nonzero(alive, dim=1).max())

    def compact(self, max_width: int) -> bool:
        n, w = self.n, self.width
        step = _row_chunk(n, w, 1 << 22)
        limit = n * max_width
        buf = torch.empty((min(step, n), w), dtype=torch.bool, device=self.device)
        rows_l, cols_l, vals_l, total = [], [], [], 0
        for r0 in range(0, n, step):
            r1 = min(n, r0 + step)
            alive = buf[: r1 - r0]
            if self.K is not None:
                vals = self.K[r0:r1]
                torch.gt(vals, self.cur[: self.n], out=alive)
            else:
                vals = self.V[r0:r1]
                torch.gt(vals, self.cur[self.R[r0:r1]], out=alive)
            gone = torch.nonzero(self.picked[r0:r1]).squeeze(1)
            if gone.numel():
                alive[gone] = False
            flat = torch.nonzero(alive.reshape(-1)).squeeze(1)
            total += int(flat.numel())
            if total > limit:
                return False
            rows = torch.div(flat, w, rounding_mode="floor")
            vals_l.append(vals.reshape(-1).take(flat))
            if self.K is not None:
                cols_l.append(flat - rows * w)
            else:
                cols_l.append(self.R[r0:r1].reshape(-1).take(flat).long())
            rows_l.append(rows + r0)
        del buf
        rows = torch.cat(rows_l)
        counts = torch.bincount(rows, minlength=n)
        m = max(1, int(counts.max())) if rows.numel() else 1
        if m > max_width:
            return False
        starts = torch.cumsum(counts, 0) - counts
        pos = torch.arange(rows.numel(), device=self.device) - starts[rows]
        flat_new = rows * m + pos
        tdt = torch.int32 if _index_dtype(n) == np.int32 else torch.int64
        R = torch.full((n, m), n, dtype=tdt, device=self.device)
        V = torch.full((n, m), _NEG_INF, dtype=torch.float32, device=self.device)
        R.view(-1)[flat_new] = torch.cat(cols_l).to(tdt)
        V.view(-1)[flat_new] = torch.cat(vals_l)
        self.K, self.R, self.V = None, R, V
        self.compactions += 1
        self._representation_changed()
        return True


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
    from tqdm.auto import tqdm  # noqa: PLC0415

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


def _knn_pairs(idx: np.ndarray, val: np.ndarray, n: int):
    """The symmetric k-NN kernel as (candidate, served, similarity) triples.

    Entry (i, j) is kept when j is among the k nearest neighbours of i *or* i among those of
    j (the union of the neighbour relations) -- what submodlib's sparse mode computes from a
    k-NN matrix.  Sorted by candidate, then served point; the two float32 copies of a pair
    that both lists hold are merged with max (they agree up to rounding).
    """
    k = idx.shape[1]
    a = np.repeat(np.arange(n, dtype=np.int64), k)
    b = idx.reshape(-1).astype(np.int64)
    s = val.reshape(-1).astype(np.float32)
    key = np.concatenate([b * n + a, a * n + b])  # candidate * n + served
    vals = np.concatenate([s, s])
    order = np.argsort(key, kind="stable")
    key, vals = key[order], vals[order]
    first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    vals = np.maximum.reduceat(vals, first)
    key = key[first]
    return key // n, key % n, vals


def _ell_from_pairs(cand: np.ndarray, served: np.ndarray, vals: np.ndarray, n: int):
    """Candidate-major padded (ELL) arrays from triples sorted by candidate."""
    counts = np.bincount(cand, minlength=n)
    w = max(1, int(counts.max()))
    pos = np.arange(cand.size, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    R = np.full((n, w), n, dtype=_index_dtype(n))
    V = np.full((n, w), _NEG_INF, dtype=np.float32)
    R.reshape(-1)[cand * w + pos] = served
    V.reshape(-1)[cand * w + pos] = vals
    return R, V


# --------------------------------------------------------------------------------------------
# submodlib reference
# --------------------------------------------------------------------------------------------

_SUBMODLIB_OPTIMIZERS = {"naive": "NaiveGreedy", "lazy": "LazyGreedy", "stochastic": "StochasticGreedy"}


def _submodlib_select(X, budget, metric, kernel, knn, optimizer, epsilon, progress, knn_backend="auto"):
    try:
        from submodlib import FacilityLocationFunction  # noqa: PLC0415
    except Exception as exc:
        raise SelectionError(f"backend='submodlib' needs the submodlib package: {exc}") from None
    n = X.shape[0]
    if budget >= n:
        raise SelectionError(f"submodlib needs budget < n (got budget={budget}, n={n})")
    t0 = time.perf_counter()
    if kernel == "dense":
        fl = FacilityLocationFunction(n=n, mode="dense", data=np.asarray(X, dtype=np.float64), metric=metric)
    else:
        csr = similarity_kernel(X, metric=metric, kernel="knn", knn=knn, device="cpu", knn_backend=knn_backend)
        fl = FacilityLocationFunction(n=n, mode="sparse", sijs=csr, num_neighbors=int(knn))
    t1 = time.perf_counter()
    out = fl.maximize(
        budget=int(budget),
        optimizer=_SUBMODLIB_OPTIMIZERS[optimizer],
        stopIfZeroGain=False,
        stopIfNegativeGain=False,
        epsilon=float(epsilon),
        verbose=False,
        show_progress=bool(progress),
    )
    t2 = time.perf_counter()
    indices = np.array([int(p[0]) for p in out], dtype=np.int64)
    gains = np.array([float(p[1]) for p in out], dtype=np.float64)
    return Selection(
        indices=indices,
        gains=gains,
        objective=float(gains.sum()),
        wall_s=t2 - t0,
        kernel_s=t1 - t0,
        optimize_s=t2 - t1,
        stats={"backend": "submodlib"},
    )


# --------------------------------------------------------------------------------------------
# public entry point
# --------------------------------------------------------------------------------------------


def facility_location(
    X,
    budget,
    metric="cosine",
    kernel="dense",
    knn=10,
    optimizer="lazy",
    device=None,
    seed=0,
    backend="workbench",
    memory_limit_gb=4.0,
    epsilon=0.01,
    progress=False,
    *,
    knn_backend="auto",
    engine="auto",
) -> Selection:
    """Greedy facility-location selection of ``budget`` points out of the rows of ``X``.

    Parameters
    ----------
    X : (n, d) array (numpy, torch or nested lists) of finite numbers.
    budget : number of points to select, ``1 <= budget <= n``.
    metric : ``"cosine"`` (raw cosine, as submodlib) or ``"euclidean"`` (``exp(-dist/d)``).
    kernel : ``"dense"`` (exact, ``4 n^2`` bytes) or ``"knn"`` (each point keeps its ``knn`` most
        similar points; ``O(n knn)`` memory, fast greedy).
    knn : neighbours per point for ``kernel="knn"`` (the point itself counts as one).
    optimizer : ``"naive"`` | ``"lazy"`` (same result, much faster) | ``"stochastic"``.
    device : torch device for the kernel and the optimisation; None = CUDA if available.
    seed : seeds the stochastic optimizer (the others are deterministic).
    backend : ``"workbench"`` (this engine) or ``"submodlib"`` (reference implementation; needs
        ``budget < n``; its stochastic greedy is not seeded).
    memory_limit_gb : refuse a dense kernel larger than this (GiB).
    epsilon : stochastic greedy accuracy; sample size per step is ``(n/budget) log(1/epsilon)``.
    progress : show a tqdm bar over the picks.
    knn_backend : ``"auto"`` (faiss if importable, else torch), ``"faiss"`` or ``"torch"``.
    engine : where the optimisation loop runs: ``"auto"`` (numpy on CPU -- its small-array
        operations cost several times less per call than torch's --, torch on other devices),
        ``"torch"`` (the device path, also on CPU) or ``"numpy"``.  The kernel is always built
        with torch on ``device``.  Both engines give the same picks; gains can differ in the
        last float32 bits (different summation order), so compare across engines with a
        tolerance.

    Returns
    -------
    :class:`Selection` -- indices in greedy order, their marginal gains, ``f(S)`` and timings.

    Raises
    ------
    SelectionError on bad input (shape, NaN/inf, budget out of range, unknown option) or when
    the dense kernel would exceed ``memory_limit_gb``.
    """
    t_start = time.perf_counter()
    X = _as_matrix(X)
    n = X.shape[0]
    _check_args(n, budget, metric, kernel, knn, optimizer, backend, epsilon, memory_limit_gb)
    budget = int(budget)
    if backend == "submodlib":
        return _submodlib_select(X, budget, metric, kernel, knn, optimizer, epsilon, progress, knn_backend)
    dev = _resolve_device(device)
    if kernel == "dense":
        _check_dense_memory(n, float(memory_limit_gb))
    else:
        _check_knn_memory(n, int(knn), int(knn), float(memory_limit_gb))

    if engine not in ("auto", "numpy", "torch"):
        raise SelectionError(f"engine must be 'auto', 'numpy' or 'torch', got {engine!r}")
    use_numpy = engine == "numpy" or (engine == "auto" and dev.type == "cpu")
    if use_numpy and dev.type != "cpu":
        raise SelectionError("engine='numpy' runs on the CPU only; use engine='torch' on GPUs")

    t_kernel = time.perf_counter()
    ub0 = None
    if kernel == "dense":
        sim = _Sim(X, metric, dev)
        if dev.type == "cpu":
            K = torch.from_numpy(_populated_empty(n * n).reshape(n, n))
        else:
            K = torch.empty((n, n), dtype=torch.float32, device=dev)
        eng = _NumpyEngine(n, K=K.numpy()) if use_numpy else _TorchEngine(n, dev, K=K)
        if optimizer == "lazy":
            ub0 = eng.vec(0.0)

            def initial_gains(r0, r1):
                # computed while the rows are hot in cache, with the very function (and thread
                # count) the optimisation loop uses => the same bits as its evaluations
                with _torch_threads(dev, 1):
                    eng.put(ub0, eng.arange(r0, r1), eng.gains(eng.arange(r0, r1)))

        _dense_kernel(sim, initial_gains if ub0 is not None else None, out=K)
        del sim, K
    else:
        idx, val = _knn_graph(X, metric, int(knn), dev, knn_backend)
        pairs = _knn_pairs(idx.cpu().numpy(), val.cpu().numpy(), n)
        del idx, val
        # hubs (points in many neighbour lists) set the padded width: check the real size
        _check_knn_memory(n, int(knn), int(np.bincount(pairs[0], minlength=n).max()), float(memory_limit_gb))
        if use_numpy:
            # the kernel is symmetric: a candidate's served points are also the candidates
            # holding an entry on it, so its lists double as the served-point index
            eng = _NumpyEngine(n, pairs=pairs, symmetric=True)
        else:
            R, V = _ell_from_pairs(*pairs, n)
            T = np.where(R == n, np.arange(n, dtype=R.dtype)[:, None], R)  # pad with the row itself
            eng = _TorchEngine(n, dev, R=torch.from_numpy(R).to(dev), V=torch.from_numpy(V).to(dev),
                               T=torch.from_numpy(T).long().to(dev))
            del R, V, T
        del pairs
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t_opt = time.perf_counter()

    bar = _progress(budget, progress)
    try:
        with _torch_threads(dev, 1), torch.inference_mode():
            if optimizer == "naive":
                picks, gains = _greedy_naive(eng, budget, bar)
            elif optimizer == "lazy":
                picks, gains = _greedy_lazy(eng, budget, bar, ub0)
            else:
                picks, gains = _greedy_stochastic(eng, budget, float(epsilon), int(seed), bar)
            objective = eng.objective()
    finally:
        if bar is not None:
            bar.close()
    t_end = time.perf_counter()
    return Selection(
        indices=np.asarray(picks, dtype=np.int64),
        gains=np.asarray(gains, dtype=np.float64),
        objective=objective,
        wall_s=t_end - t_start,
        kernel_s=t_opt - t_kernel,
        optimize_s=t_end - t_opt,
        stats={
            "device": str(dev),
            "engine": eng.name,
            "kernel": kernel,
            "optimizer": optimizer,
            "evaluations": int(eng.evaluations),
            "compactions": int(eng.compactions),
            "widths": [int(w) for w in eng.widths],
            "compaction_steps": list(eng.compaction_steps),
            "compaction_s": round(eng.compaction_s, 4),
        },
    )
