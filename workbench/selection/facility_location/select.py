"""The entry point: :func:`facility_location`, and :func:`evaluate_objective`.

:func:`facility_location` checks its input (:mod:`.base`), builds the kernel (:mod:`.kernels`)
into an engine (:mod:`.engines`) and runs an optimizer (:mod:`.greedy`) on it; with
``backend="submodlib"`` it hands the same request to submodlib (:mod:`.reference`).
:func:`evaluate_objective` computes ``f(S)`` on the exact dense kernel in float64, independently
of the engine, to compare selections made by different code.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from .base import (
    METRICS,
    Selection,
    SelectionError,
    _as_matrix,
    _check_args,
    _check_dense_memory,
    _check_knn_memory,
    _populated_empty,
    _resolve_device,
    _row_chunk,
    _torch_threads,
)
from .engines import _NumpyEngine, _TorchEngine
from .greedy import _greedy_lazy, _greedy_naive, _greedy_stochastic, _progress
from .kernels import _dense_kernel, _ell_from_pairs, _knn_graph, _knn_pairs, _Sim, similarity_kernel
from .reference import _submodlib_select

__all__ = ["facility_location", "evaluate_objective"]


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
        return _submodlib_select(X, budget, metric, kernel, knn, optimizer, epsilon, progress, knn_backend,
                                 similarity_kernel=similarity_kernel)
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
