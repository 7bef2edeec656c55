"""Engines: coverage state and exact marginal gains over a candidate-major kernel.

An engine holds the kernel -- dense, or padded sparse (ELL) -- stored candidate-major (row ``j``
holds everything candidate ``j`` offers), and ``cur[i]``, how well point ``i`` is served now.  A
gain ``sum(max(0, row - cur[served]))`` is computed in float32 by one function for naive and lazy
alike, row by row, so both get identical bits; every float operation in it is monotone, so a
stale gain is a valid upper bound *in floating point*, not only on paper.  An entry with
``sim(i, j) <= cur[i]`` can never contribute again (``cur`` only grows), so the engine can
rewrite its kernel -- in place, in its own memory -- as an ELL matrix of the live entries, with a
served-point -> candidates index telling which bounds a pick can change.  :class:`_NumpyEngine`
is the CPU path (lower per-call overhead than torch for these small operations, run
single-threaded); :class:`_TorchEngine` runs the same algorithm on torch, on any device.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from .base import _NEG_INF, SelectionError, _index_dtype, _populated_empty, _row_chunk
from .kernels import _transpose

_FUSED = []  # [module or None], filled on first use


def _fused_kernels():
    """:mod:`.fused` (numba), or None without numba or with ``WORKBENCH_NO_NUMBA=1``."""
    if not _FUSED:
        mod = None
        if os.environ.get("WORKBENCH_NO_NUMBA", "") in ("", "0"):
            try:
                from . import fused as mod  # noqa: PLC0415
            except Exception:  # numba missing or broken: the numpy code is the same computation
                mod = None
        _FUSED.append(mod)
    return _FUSED[0]


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
        self._fused = _fused_kernels()  # numba kernels (None: the numpy code below)
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
        if getattr(self, "_fused", None) is not None:
            self._plan = self._fused.plan(self.width)

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
        if self._fused is not None:  # one pass per row, the same bits (see :mod:`.fused`)
            if self.K is not None:
                self._fused.dense_gains(self.K, self.cur, idx, out, self._plan)
            else:
                self._fused.ell_gains(self.V, self.R, self.cur, idx, out, self._plan)
            self.evaluations += m
            return out
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
        if self._fused is not None and self._buf.flags.c_contiguous:
            return self._compact_fused(max_width, dense)
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
        self._compacted(V_new, R_new, counts)
        return True

    def _compact_fused(self, max_width: int, dense: bool) -> bool:
        """:meth:`compact` in two compiled passes over the kernel (count, then pack in place, row
        by row): the same layout, values and ids as the numpy passes, without their temporaries."""
        n, w = self.n, self.width
        counts = np.empty(n, dtype=np.int64)
        buf, bufi = self._buf, self._buf.view(np.int32)
        if not self._fused.count_live(buf, bufi, n, w, dense, self.cur, self.picked, counts, max_width):
            return False
        m = max(1, int(counts.max()))
        if not dense and m >= w:
            return False
        self._fused.pack_live(buf, bufi, n, w, m, dense, self.cur, self.picked)
        V_new, R_new = self._ell_views(m)
        self._compacted(V_new, R_new, counts)
        return True

    def _compacted(self, V_new, R_new, counts) -> None:
        self.K, self.V, self.R = None, V_new, R_new
        self._wide = np.argsort(counts)[-16:]
        if counts.sum() <= _TRANSPOSE_MAX_ENTRIES:
            self.T = _transpose(self.R, self.n)  # tighter than any earlier one
        self.compactions += 1
        self._representation_changed()


_TRANSPOSE_MAX_ENTRIES = 1 << 19


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
