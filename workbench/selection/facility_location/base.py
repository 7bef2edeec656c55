"""Shared pieces of the facility-location package: result, error, options and input checks.

:class:`Selection` is what every backend returns and :class:`SelectionError` (a
:class:`~workbench.errors.ConfigError`) what every bad input or impossible request raises.  The
option names (``METRICS``, ``KERNELS``, ``OPTIMIZERS``, ``BACKENDS``, ``KNN_BACKENDS``) and the
checks of the data matrix, the arguments, the device and the memory limits live here, with the
small helpers the other modules share: row chunking, the served-point id dtype, the thread limit
of the optimisation loop, and pre-populated kernel buffers (the dense kernel's pages are mapped
in one call, ``MAP_POPULATE``, instead of one page fault per page).
"""

from __future__ import annotations

import contextlib
import mmap
from dataclasses import dataclass, field

import numpy as np
import torch

from ...errors import ConfigError

__all__ = [
    "SelectionError",
    "Selection",
    "METRICS",
    "KERNELS",
    "OPTIMIZERS",
    "BACKENDS",
    "KNN_BACKENDS",
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


# --------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------


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


def _row_chunk(n: int, width: int, target_elems: int = 1 << 22) -> int:
    return int(max(1, min(n, target_elems // max(1, width))))


def _index_dtype(n: int):
    """Served-point ids fit in int32 below 2^31 points: half the memory of int64."""
    return np.int32 if n + 1 < 2**31 else np.int64


def _populated_empty(size: int) -> np.ndarray:
    """An uninitialised float32 array whose pages are mapped up front (Linux MAP_POPULATE).

    Touching a fresh large buffer page by page costs one page fault per page; populating the
    mapping in one system call is cheaper.  Falls back to ``np.empty`` where that is not
    available.
    """
    flags = getattr(mmap, "MAP_POPULATE", 0)
    if size * 4 < (1 << 24) or not flags:
        return np.empty(size, dtype=np.float32)
    try:
        buf = mmap.mmap(-1, size * 4, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | flags)
    except (OSError, ValueError, AttributeError):
        return np.empty(size, dtype=np.float32)
    return np.frombuffer(buf, dtype=np.float32)  # the array keeps the mapping alive
