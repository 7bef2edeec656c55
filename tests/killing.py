"""Shared by the kill-and-resume tests: read a run's records while it runs, and SIGKILL it on a condition."""
import json
import signal
import time
from pathlib import Path


def records(run: Path) -> list[tuple[int, float]]:
    """``(step, loss)`` of every train record of a run's ``metrics.jsonl``."""
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in recs if "loss" in r]


def count_lines(p: Path) -> int:
    try:
        return p.read_text().count("\n")
    except FileNotFoundError:
        return 0


def kill_when(proc, cond, timeout: float = 240, poll: float = 0.002) -> bool:
    """SIGKILL ``proc`` as soon as ``cond()`` holds; False if it ended (or timed out) first."""
    t0 = time.time()
    while proc.poll() is None and time.time() - t0 < timeout:
        if cond():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(poll)
    proc.wait()
    return False
