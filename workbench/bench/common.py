"""What every benchmark shares: the machine's load, and the rule for printing a headline ratio.

A headline ratio (workbench against its strongest peer) is only printed when both sides were
measured in this process, interleaved (alternating, repetition by repetition), so a change in the
machine's load hits both. :func:`headline` returns the sentence, or says why there is none.
"""
from __future__ import annotations

import os
import time


def load_avg() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def cpu_count() -> int:
    """Cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # not Linux
        return os.cpu_count() or 1


def headline(what: str, ratio: float | None, peer: str, interleaved: bool, higher_is_better: bool = True) -> str:
    """One line: ``what: workbench is Rx <peer> (load avg L)``, or why no ratio is printed."""
    la = load_avg()
    if not interleaved:
        return f"{what}: no headline ratio (the sides were not measured interleaved in one process; load avg {la})"
    if ratio is None or ratio != ratio:
        return f"{what}: no headline ratio ({peer} was not measured; load avg {la})"
    word = "faster than" if (ratio >= 1) == higher_is_better else "slower than"
    return f"{what}: workbench {ratio:.2f}x {peer} ({word}; >1 means the workbench is faster; load avg {la})"


class CpuTimer:
    """Wall and process-CPU seconds of a block: ``with CpuTimer() as t: ...; t.wall, t.cpu``."""

    def __enter__(self):
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self._w
        self.cpu = time.process_time() - self._c
        return False
