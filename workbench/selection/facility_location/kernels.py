"""Similarity kernels of the facility-location objective.

Similarities follow submodlib 0.0.3 exactly:

* ``metric="cosine"``: raw cosine similarity ``<x_i, x_j> / (|x_i| |x_j|)`` in [-1, 1], no
  shift; negative values simply never contribute.
* ``metric="euclidean"``: ``exp(-|x_i - x_j| / d)`` (submodlib's ``gamma = 1/num_features`` on
  the *unsquared* distance).

Degenerate data (decided behaviour): ``sim(i, i) = 1`` for every point, and an all-zero row has
cosine similarity 0 to every *other* point (no division by zero; this is also what submodlib's
kernel gives).

Kernels and what they cost (n points, d features)
-------------------------------------------------
``kernel="dense"``
    The full ``n x n`` float32 similarity matrix, built in row chunks with torch matmuls on
    ``device``: ``O(n^2 d)`` flops and ``4 n^2`` bytes.  Refused with a
    :class:`~.base.SelectionError` when it would exceed ``memory_limit_gb``.  Exact objective.
``kernel="knn"``
    Only the similarities between near neighbours are kept: entry ``(i, j)`` survives when ``j``
    is among the ``knn`` most similar points of ``i`` or ``i`` among those of ``j`` (every point
    is its own nearest neighbour, similarity 1); everything else counts as 0.  This symmetric
    k-NN kernel is what submodlib's sparse mode builds from a k-NN matrix.  Neighbours come from
    faiss (exact ``IndexFlatIP`` on normalised rows for cosine, ``IndexFlatL2`` for euclidean;
    on the GPU when faiss has GPU support and CUDA is present; imported only when used) or,
    without faiss, from a chunked torch top-k.  Finding them still costs ``O(n^2 d)`` flops, but
    memory is ``O(n knn)`` and the greedy becomes cheap: a pick only changes the gains of
    candidates that share a served point with it.  An approximation of the dense objective
    (Wei et al. 2014).

The engines store a kernel candidate-major (row ``j`` holds everything candidate ``j`` offers);
:func:`similarity_kernel` materialises it served-major (``M[i, j] = sim(i, j)``) for inspection,
tests and feeding submodlib the very same kernel.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import sparse

from .base import (
    _NEG_INF,
    KERNELS,
    KNN_BACKENDS,
    METRICS,
    SelectionError,
    _as_matrix,
    _check_dense_memory,
    _index_dtype,
    _resolve_device,
    _row_chunk,
)

__all__ = ["similarity_kernel"]


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
    idx, val = _knn_graph(X, metric, int(knn), dev, knn_backend)
    cand, served, vals = _knn_pairs(idx.cpu().numpy(), val.cpu().numpy(), n)
    M = sparse.csr_matrix((vals.astype(np.float64), (served, cand)), shape=(n, n))
    M.sort_indices()
    return M
