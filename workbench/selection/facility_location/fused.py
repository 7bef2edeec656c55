"""Fused gain kernels for the CPU engine (numba), bit for bit what the numpy code computes.

The numpy engine computes a gain as ``np.maximum(row - cur, 0).sum()``: a copy of the row, a
subtraction, a clamp and numpy's *pairwise* float32 sum (blocks of up to 128 values summed with
eight accumulators, ``((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7))``, larger ranges split in two at a
multiple of 8).  Here the same sum runs in one pass over the row, with the same operations in the
same order -- so the gains have the same bits, and every selection is unchanged -- without the
temporary copies (four passes over each row become one).

numba is a dependency of submodlib (a dependency of the workbench).  This module imports it, so
it is imported only when the CPU engine first runs (:func:`.engines._fused_kernels`); without
numba (or with ``WORKBENCH_NO_NUMBA=1``) the engine runs its numpy code, the same computation.
Compiled code is cached on disk (``cache=True``): only the first process pays the compilation.
"""

from __future__ import annotations

import numba
import numpy as np

njit = numba.njit
zero = np.float32(0.0)

def plan(n: int) -> np.ndarray:
    """numpy's pairwise-summation tree over ``n`` values, as a post-order program (no recursion in
    compiled code: numba's disk cache does not handle recursive functions).

    Row k of the (m, 3) int64 result is a leaf ``(0, lo, len)`` (a block of at most 128 values)
    or an addition ``(1, left, right)`` of two earlier rows; the last row is the root.
    """
    rows: list[tuple[int, int, int]] = []

    def build(lo: int, m: int) -> int:
        if m <= 128:
            rows.append((0, lo, m))
            return len(rows) - 1
        m2 = m // 2
        m2 -= m2 % 8
        a = build(lo, m2)
        b = build(lo + m2, m - m2)
        rows.append((1, a, b))
        return len(rows) - 1

    build(0, max(0, n))
    return np.asarray(rows, dtype=np.int64)


@njit(cache=True, inline="always")
def _leaf(v, r, cur, i, dense):
    x = v[i] - (cur[i] if dense else cur[r[i]])
    return x if x > zero else zero


@njit(cache=True, inline="always")
def _block(v, r, cur, lo, n, dense):
    # numpy's pairwise_sum for n <= 128 (numpy/_core/src/umath/loops_utils.h.src), leaves max(0, v - cur)
    if n < 8:
        res = zero
        for i in range(lo, lo + n):
            res += _leaf(v, r, cur, i, dense)
        return res
    r0 = _leaf(v, r, cur, lo, dense)
    r1 = _leaf(v, r, cur, lo + 1, dense)
    r2 = _leaf(v, r, cur, lo + 2, dense)
    r3 = _leaf(v, r, cur, lo + 3, dense)
    r4 = _leaf(v, r, cur, lo + 4, dense)
    r5 = _leaf(v, r, cur, lo + 5, dense)
    r6 = _leaf(v, r, cur, lo + 6, dense)
    r7 = _leaf(v, r, cur, lo + 7, dense)
    end = lo + n - (n % 8)
    for i in range(lo + 8, end, 8):
        r0 += _leaf(v, r, cur, i, dense)
        r1 += _leaf(v, r, cur, i + 1, dense)
        r2 += _leaf(v, r, cur, i + 2, dense)
        r3 += _leaf(v, r, cur, i + 3, dense)
        r4 += _leaf(v, r, cur, i + 4, dense)
        r5 += _leaf(v, r, cur, i + 5, dense)
        r6 += _leaf(v, r, cur, i + 6, dense)
        r7 += _leaf(v, r, cur, i + 7, dense)
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    for i in range(end, lo + n):
        res += _leaf(v, r, cur, i, dense)
    return res


@njit(cache=True)
def _gains(V, R, cur, idx, prog, out, dense):
    m = prog.shape[0]
    acc = np.empty(m, dtype=np.float32)
    for t in range(idx.shape[0]):
        j = idx[t]
        v = V[j]
        r = R[j] if not dense else R[0]
        for k in range(m):
            if prog[k, 0] == 0:
                acc[k] = _block(v, r, cur, prog[k, 1], prog[k, 2], dense)
            else:
                acc[k] = acc[prog[k, 1]] + acc[prog[k, 2]]
        out[t] = acc[m - 1] if m else zero


def dense_gains(K, cur, idx, out, prog):
    """out[t] = sum_i max(0, K[idx[t], i] - cur[i]) (float32, numpy's summation order);
    ``prog = plan(K.shape[1])``."""
    _gains(K, _NO_IDS, cur, idx, prog, out, True)


def ell_gains(V, R, cur, idx, out, prog):
    """out[t] = sum_s max(0, V[j, s] - cur[R[j, s]]) for j = idx[t] (numpy's order);
    ``prog = plan(V.shape[1])``."""
    _gains(V, R, cur, idx, prog, out, False)


_NO_IDS = np.zeros((1, 1), dtype=np.int32)


@njit(cache=True)
def _count_live(buf, bufi, n, w, dense, cur, picked, counts, max_width):
    """counts[j] = live entries (value > coverage of its point) of unpicked candidate j; False as
    soon as one row has more than ``max_width`` (nothing is changed then)."""
    for j in range(n):
        c = 0
        if not picked[j]:
            if dense:
                base = j * w
                for s in range(w):
                    if buf[base + s] > cur[s]:
                        c += 1
            else:
                base = j * 2 * w
                for s in range(w):
                    if buf[base + s] > cur[bufi[base + w + s]]:
                        c += 1
        counts[j] = c
        if c > max_width:
            return False
    return True


@njit(cache=True)
def _pack_live(buf, bufi, n, w, m, dense, cur, picked, neg_inf):
    """Left-pack every row's live entries, in their order, into rows of ``2m`` slots
    ``[values | ids]``, in place, front to back (row j is read whole before it is written; the
    new row j ends at or before the old row j + 1 starts)."""
    tv = np.empty(max(m, 1), dtype=np.float32)
    ti = np.empty(max(m, 1), dtype=np.int32)
    for j in range(n):
        c = 0
        if not picked[j]:
            if dense:
                base = j * w
                for s in range(w):
                    v = buf[base + s]
                    if v > cur[s]:
                        tv[c] = v
                        ti[c] = s
                        c += 1
            else:
                base = j * 2 * w
                for s in range(w):
                    v = buf[base + s]
                    rid = bufi[base + w + s]
                    if v > cur[rid]:
                        tv[c] = v
                        ti[c] = rid
                        c += 1
        nb = j * 2 * m
        for s in range(c):
            buf[nb + s] = tv[s]
            bufi[nb + m + s] = ti[s]
        for s in range(c, m):
            buf[nb + s] = neg_inf
            bufi[nb + m + s] = n


def count_live(buf, bufi, n, w, dense, cur, picked, counts, max_width) -> bool:
    return bool(_count_live(buf, bufi, n, w, dense, cur, picked, counts, max_width))


def pack_live(buf, bufi, n, w, m, dense, cur, picked) -> None:
    _pack_live(buf, bufi, n, w, m, dense, cur, picked, np.float32(-np.inf))
