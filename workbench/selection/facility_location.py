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
    Every point keeps only its ``knn`` most similar points (itself included, with similarity
    1); the rest of the similarities are treated as 0.  Built with faiss (exact
    ``IndexFlatIP`` on normalised rows for cosine, ``IndexFlatL2`` for euclidean; on GPU when
    faiss has GPU support and CUDA is present) or, without faiss, with a chunked torch top-k.
    Still ``O(n^2 d)`` flops to *find* the neighbours, but only ``O(n k)`` memory, and the greedy
    becomes cheap: a pick only changes the gains of candidates that share a served point with it.
    An approximation of the dense objective (it is the standard fast FL approximation).

``optimizer="naive"``
    Textbook greedy: every step evaluates the gain of every remaining candidate (vectorised).
    ``O(k n w)`` where ``w`` is the kernel width (``n`` dense).  The reference for exactness.
``optimizer="lazy"``
    Exact lazy greedy (Minoux): by submodularity a gain computed earlier is an upper bound of the
    current one, so only candidates whose stale bound could still win are re-evaluated -- in
    batches (the B best stale bounds at once, B doubling while a step keeps failing).  The "priority queue" is a flat array of bounds on the device, whose
    maximum (first index on ties) is found with one ``argmax``.  Same picks and *bitwise* the
    same gains as ``naive``.  Usually tens of evaluations per step instead of ``n``.
``optimizer="stochastic"``
    Stochastic greedy (Mirzasoleiman et al. 2015, "Lazier than lazy greedy"): each step
    evaluates only a random sample of ``(n/k) log(1/epsilon)`` remaining candidates and takes the
    best; ``(1 - 1/e - epsilon)`` in expectation, ``O(n log(1/epsilon) w)`` in total, seeded.

How the exact optimizers stay fast
----------------------------------
* Gains are computed by a single function on fixed-shape blocks of candidate rows (the kernel is
  stored candidate-major, so a candidate's similarities are one contiguous row), in float32.
  Naive and lazy call the same function on the same rows, hence identical bits, and the computed
  gain is monotone in ``cur`` (every float operation involved is monotone), so stale values are
  valid bounds *in floating point*, not only on paper.
* Compaction: an entry ``sim(i, j) <= cur[i]`` can never contribute again (``cur`` only grows).
  After a few picks almost every entry of a dense kernel is dead, so the kernel is periodically
  rewritten as a padded sparse (ELL) matrix holding only live entries -- 10k points go from width
  10,000 to a few hundred after ~10 picks and to ~20 later.  Rewrites happen at the same steps
  for naive and lazy (the decision depends only on the shared state), and all bounds are
  recomputed right after one, so exactness is kept.
* On CPU the optimisation loop runs torch single-threaded: the work items are small, and thread
  hand-offs cost more than they save (especially on a busy machine).

Use ``backend="submodlib"`` to run the same selection through submodlib (the reference
implementation) and get the result in the same :class:`Selection` form.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

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


class SelectionError(ValueError):
    """Bad input or an impossible request for a subset selection."""


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


def similarity_kernel(X, metric="cosine", kernel="dense", knn=10, device=None, knn_backend="auto"):
    """The kernel the engine optimises, as ``M[i, j] = sim(i, j)`` (i served, j candidate).

    ``kernel="dense"`` gives a float32 numpy array, ``"knn"`` a ``scipy.sparse.csr_matrix`` whose
    row ``i`` holds the ``knn`` neighbours of ``i``.  Meant for inspection, tests and for feeding
    submodlib the very same kernel; :func:`facility_location` never materialises this copy.
    """
    X = _as_matrix(X)
    n = X.shape[0]
    if metric not in METRICS:
        raise SelectionError(f"metric must be one of {METRICS}, got {metric!r}")
    dev = _resolve_device(device)
    if kernel == "dense":
        _check_dense_memory(n, 4.0)
        return _dense_kernel(_Sim(X, metric, dev)).T.contiguous().cpu().numpy()
    if kernel != "knn":
        raise SelectionError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if not isinstance(knn, (int, np.integer)) or not 1 <= knn <= n:
        raise SelectionError(f"knn must be an integer in [1, {n}], got {knn!r}")
    from scipy import sparse  # noqa: PLC0415

    idx, val = _knn_graph(X, metric, int(knn), dev, knn_backend)
    idx, val = idx.cpu().numpy(), val.cpu().numpy().astype(np.float64)
    rows = np.repeat(np.arange(n), idx.shape[1])
    return sparse.csr_matrix((val.ravel(), (rows, idx.ravel())), shape=(n, n))


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


class _Engine:
    """Current coverage plus exact gain evaluation over a candidate-major kernel.

    Two representations:

    * dense: ``K`` (n, n), ``K[j, i] = sim(i, j)``;
    * ELL (padded sparse): ``R`` (n, w) served-point ids and ``V`` (n, w) similarities of the live
      entries of candidate ``j``; padding points at the dummy slot ``n`` with value ``-inf``.

    ``cur`` has ``n + 1`` slots; slot ``n`` is the dummy that padding reads and (harmlessly) writes.
    """

    def __init__(self, n: int, device: torch.device, K=None, R=None, V=None):
        self.n = n
        self.device = device
        self.cur = torch.zeros(n + 1, dtype=torch.float32, device=device)
        self.picked = torch.zeros(n, dtype=torch.bool, device=device)
        self.K, self.R, self.V = K, R, V
        self.evaluations = 0
        self.compactions = 0
        self.widths = [self.width]
        self.compaction_steps = []
        self.compaction_s = 0.0
        self._set_block()

    @property
    def width(self) -> int:
        return self.n if self.K is not None else int(self.V.shape[1])

    def _set_block(self) -> None:
        # rows per gain block: big enough to amortise the per-op overhead, small enough that a
        # block (rows x width floats) stays in cache.  Fixed per representation => the same
        # shapes for naive and lazy => the same bits.
        b = 16384 // max(1, self.width)
        self.block = int(min(256, max(16, 1 << max(0, b.bit_length() - 1))))

    # -- gains -------------------------------------------------------------------------------
    def _block_gains(self, b: torch.Tensor) -> torch.Tensor:
        if self.K is not None:
            v = self.K.index_select(0, b)
            v.sub_(self.cur[: self.n])
        else:
            v = self.V.index_select(0, b)
            v.sub_(self.cur[self.R.index_select(0, b)])
        return v.clamp_(min=0.0).sum(dim=1)

    def gains(self, idx: torch.Tensor) -> torch.Tensor:
        """Exact gains (float32) of candidates ``idx`` given the current coverage."""
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

    def all_gains(self) -> torch.Tensor:
        """Gains of every candidate; picked ones get -inf."""
        g = self.gains(torch.arange(self.n, device=self.device))
        return g.masked_fill_(self.picked, _NEG_INF)

    # -- picking -----------------------------------------------------------------------------
    def add(self, c: int) -> None:
        if self.K is not None:
            torch.maximum(self.cur[: self.n], self.K[c], out=self.cur[: self.n])
        else:
            r = self.R[c]
            self.cur[r] = torch.maximum(self.cur[r], self.V[c])
        self.picked[c] = True

    def objective(self) -> float:
        return float(self.cur[: self.n].double().sum())

    # -- compaction --------------------------------------------------------------------------
    def estimate_width(self, samples: int = 128) -> int:
        """Largest live-entry count among up to ``samples`` evenly spaced unpicked candidates."""
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
        """Drop dead entries (``sim <= cur``; they can never contribute again) and picked rows.

        One pass over the kernel collects the live entries (row-major, so each candidate keeps
        its entries in their old order).  Returns False and changes nothing when some candidate
        has more than ``max_width`` live entries.
        """
        n, w = self.n, self.width
        step = _row_chunk(n, w, 1 << 22)
        limit = n * max_width
        buf = torch.empty((min(step, n), w), dtype=torch.bool, device=self.device)
        found_rows, found_cols, found_vals, total = [], [], [], 0
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
            flat = _flat_nonzero(alive)
            rows = torch.div(flat, w, rounding_mode="floor")
            total += int(flat.numel())
            if total > limit:
                return False
            found_vals.append(vals.reshape(-1).take(flat))
            if self.K is not None:
                found_cols.append(flat - rows * w)
            else:
                found_cols.append(self.R[r0:r1].reshape(-1).take(flat))
            found_rows.append(rows + r0)
        del buf
        rows = torch.cat(found_rows)
        counts = torch.bincount(rows, minlength=n)
        m = max(1, int(counts.max())) if rows.numel() else 1
        if m > max_width:
            return False
        starts = torch.cumsum(counts, 0) - counts
        pos = torch.arange(rows.numel(), device=self.device) - starts[rows]
        flat_new = rows * m + pos
        R = torch.full((n, m), n, dtype=_index_dtype(n), device=self.device)
        V = torch.full((n, m), _NEG_INF, dtype=torch.float32, device=self.device)
        R.view(-1)[flat_new] = torch.cat(found_cols).to(R.dtype)
        V.view(-1)[flat_new] = torch.cat(found_vals)
        self.K, self.R, self.V = None, R, V
        self.compactions += 1
        self.widths.append(m)
        self._set_block()
        return True


def _index_dtype(n: int) -> torch.dtype:
    """Served-point ids fit in int32 below 2^31 points: half the memory of int64."""
    return torch.int32 if n + 1 < 2**31 else torch.int64


def _flat_nonzero(mask: torch.Tensor) -> torch.Tensor:
    """Flat indices of the True entries, in order (numpy's is ~10x faster on CPU)."""
    if mask.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(mask.numpy()))
    return torch.nonzero(mask.reshape(-1)).squeeze(1)


class _CompactionSchedule:
    """Decides when to rewrite the kernel without its dead entries.

    Checks happen at geometrically spaced steps (1, 2, 3, 4, 5, 6, 8, 10, 13, ...) with a cheap
    sampled estimate of the live width; a rewrite is attempted when it would shrink the width a
    lot.  The decision depends only on the engine state, so naive and lazy compact at the same
    steps (a requirement for bitwise-equal gains).
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
        if eng.K is not None:  # dense rows are contiguous, gathered ELL rows cost ~3x per entry
            done = est * 8 <= eng.width and eng.compact(max_width=eng.width // 5)
        else:
            done = est * 2 <= eng.width and eng.compact(max_width=(eng.width * 3) // 4)
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
        c = int(torch.argmax(g))  # first maximum => lowest index on ties
        picks.append(c)
        gains.append(float(g[c]))
        eng.add(c)
        schedule(eng, t + 1)
        if bar is not None:
            bar.update(1)
    return picks, gains


def _greedy_lazy(eng: _Engine, budget: int, bar, ub=None) -> tuple[list, list]:
    """Exact lazy greedy with batched re-evaluation.

    ``ub`` holds, per candidate, a gain computed at some earlier step (an upper bound of the
    current gain) and ``fresh`` says whether it was computed at this step.  Each step: take the
    first maximum of ``ub``; if it is fresh, it is exactly the candidate naive greedy would pick
    (every other candidate's true gain is <= its bound <= this gain, and an equal bound with a
    lower index would have been the first maximum).  Otherwise re-evaluate the B stale
    candidates with the largest bounds in one batch (B doubles each time within a step) and
    look again.
    """
    picks, gains = [], []
    schedule = _CompactionSchedule(budget)
    n = eng.n
    if ub is None:
        ub = eng.all_gains()
    fresh = torch.ones(n, dtype=torch.bool, device=eng.device)
    neg = torch.tensor(_NEG_INF, device=eng.device)
    for t in range(budget):
        batch = eng.block
        while True:
            c = int(torch.argmax(ub))
            if bool(fresh[c]):
                break
            stale = torch.where(fresh, neg, ub)
            cand = torch.topk(stale, min(batch, n), sorted=False).indices
            batch = min(batch * 2, 1 << 14)  # a step that needs many evaluations gets bigger batches
            g = eng.gains(cand)
            ub[cand] = torch.where(eng.picked[cand], neg, g)
            fresh[cand] = True
        picks.append(c)
        gains.append(float(ub[c]))
        eng.add(c)
        ub[c] = _NEG_INF
        if schedule(eng, t + 1):
            ub = eng.all_gains()  # new representation: recompute every bound exactly
            fresh.fill_(True)
        else:
            fresh.copy_(eng.picked)  # picked rows stay "fresh" so they are never re-evaluated
        if bar is not None:
            bar.update(1)
    return picks, gains


def _greedy_stochastic(eng: _Engine, budget: int, epsilon: float, seed: int, bar):
    """Stochastic greedy: best of a fresh random sample of remaining candidates at each step."""
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
        cand_np = np.sort(remaining[pos])
        cand = torch.from_numpy(cand_np).to(eng.device)
        g = eng.gains(cand)
        k = int(torch.argmax(g))  # first maximum => lowest index among the sample on ties
        c = int(cand_np[k])
        picks.append(c)
        gains.append(float(g[k]))
        eng.add(c)
        # swap-remove c from the remaining pool
        pc, last = where[c], remaining[r - 1]
        remaining[pc], where[last] = last, pc
        r -= 1
        schedule(eng, t + 1)
        if bar is not None:
            bar.update(1)
    return picks, gains


def _ell_from_knn(idx: torch.Tensor, val: torch.Tensor, n: int):
    """Candidate-major padded arrays from the (served point -> its neighbours) lists."""
    k = idx.shape[1]
    dev = idx.device
    j = idx.reshape(-1)
    i = torch.arange(n, device=dev).repeat_interleave(k)
    s = val.reshape(-1)
    order = torch.argsort(j, stable=True)
    j, i, s = j[order], i[order], s[order]
    counts = torch.bincount(j, minlength=n)
    w = max(1, int(counts.max()))
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.arange(j.numel(), device=dev) - starts[j]
    R = torch.full((n, w), n, dtype=_index_dtype(n), device=dev)
    V = torch.full((n, w), _NEG_INF, dtype=torch.float32, device=dev)
    R[j, pos] = i.to(R.dtype)
    V[j, pos] = s
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
        need = n * (int(knn) * 40 + 64) / _GIB
        if need > float(memory_limit_gb):
            raise SelectionError(
                f"the knn kernel for n={n}, knn={knn} needs about {need:.1f} GB > memory_limit_gb="
                f"{memory_limit_gb:g}; lower knn or partition the data"
            )

    t_kernel = time.perf_counter()
    ub0 = None
    if kernel == "dense":
        sim = _Sim(X, metric, dev)
        eng = _Engine(n, dev, K=torch.empty((n, n), dtype=torch.float32, device=dev))
        if optimizer == "lazy":
            ub0 = torch.empty(n, dtype=torch.float32, device=dev)

            def initial_gains(r0, r1):
                # same thread count as the optimisation loop => the same bits as its evaluations
                with _torch_threads(dev, 1):
                    ub0[r0:r1] = eng.gains(torch.arange(r0, r1, device=dev))

        _dense_kernel(sim, initial_gains if ub0 is not None else None, out=eng.K)
        del sim
    else:
        idx, val = _knn_graph(X, metric, int(knn), dev, knn_backend)
        R, V = _ell_from_knn(idx, val, n)
        del idx, val
        eng = _Engine(n, dev, R=R, V=V)
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
            "kernel": kernel,
            "optimizer": optimizer,
            "evaluations": int(eng.evaluations),
            "compactions": int(eng.compactions),
            "widths": [int(w) for w in eng.widths],
            "compaction_steps": list(eng.compaction_steps),
            "compaction_s": round(eng.compaction_s, 4),
        },
    )
