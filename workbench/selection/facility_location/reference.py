"""The submodlib reference adapter behind ``backend="submodlib"``.

Runs the same selection through submodlib's ``FacilityLocationFunction`` (the reference
implementation) and returns the result in the same :class:`~.base.Selection` form.  submodlib is
imported only when the adapter runs.
"""

from __future__ import annotations

import time

import numpy as np

from .base import Selection, SelectionError

_SUBMODLIB_OPTIMIZERS = {"naive": "NaiveGreedy", "lazy": "LazyGreedy", "stochastic": "StochasticGreedy"}


def _submodlib_select(X, budget, metric, kernel, knn, optimizer, epsilon, progress, knn_backend="auto", *,
                      similarity_kernel):
    """:func:`~.select.facility_location` run by submodlib; ``similarity_kernel`` is
    :func:`~.kernels.similarity_kernel` (passed in, so this module depends on :mod:`.base` only)."""
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
