"""Run directories: everything one experiment produced, in one folder.

::

    RUN/
      config.json        all parameters, package versions, corpus hash (written once, atomically)
      metrics.jsonl      one JSON record per line, append-only (step, tokens, loss, lr, elapsed_s, ...)
      checkpoints/       step-<N>/ {model.safetensors, optimizer.pt, state.json}; LATEST names the newest
      scores/            per-example arrays (.npz) the views read: selections, losses, influence
      summary.json       the headline numbers; ``"complete": true`` only once the run has finished
      model.safetensors  final weights

Every file is written to a temporary name, flushed and renamed, so a crash never leaves half a file
(a torn last line of ``metrics.jsonl`` is cut off on resume). ``wb.runs.table(root)`` collects the
summaries of all runs below ``root`` into a DataFrame.
"""
from __future__ import annotations

import json
import os
import platform
import re
import time
from importlib import metadata as md
from pathlib import Path
from typing import Any

import numpy as np

from .errors import RunError

TRACKED_PACKAGES = ("torch", "transformers", "datasets", "tokenizers", "numpy", "faiss-cpu", "submodlib-py",
                    "deepspeed", "papermill", "plotly", "pandas", "scikit-learn", "scipy")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in TRACKED_PACKAGES:
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            pass
    return out


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync and rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _jsonable(o: Any):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "__dataclass_fields__"):
        import dataclasses
        return dataclasses.asdict(o)
    return str(o)


def dumps(obj: Any) -> str:
    return json.dumps(obj, default=_jsonable, indent=2, sort_keys=False)


def safe_child(root: str | Path, name: str) -> Path:
    """``root/name`` for a run name that cannot escape ``root`` (no absolute paths, no ``..``)."""
    if not name or not re.fullmatch(r"[A-Za-z0-9_.\-/]+", name) or name.startswith("/") or \
            any(part in ("..", ".", "") for part in name.split("/")):
        raise RunError(f"run name {name!r} is not allowed (letters, digits, '_', '-', '.', '/' "
                       f"without '..' or a leading '/')")
    root = Path(root).resolve()
    p = (root / name).resolve()
    if root not in p.parents and p != root:
        raise RunError(f"run name {name!r} escapes {root}")
    return p


class Run:
    """A run directory. ``Run(path, config)`` creates it (refusing an existing run unless
    ``resume=True``); ``Run.open(path)`` opens an existing one for resuming or reading."""

    def __init__(self, path: str | Path, config: dict | None = None, resume: bool = False,
                 overwrite: bool = False):
        self.path = Path(path)
        self.resumed = False
        if (self.path / "config.json").exists():
            if resume:
                self.resumed = True
            elif overwrite:
                for sub in ("metrics.jsonl", "summary.json", "model.safetensors"):
                    (self.path / sub).unlink(missing_ok=True)
                import shutil
                shutil.rmtree(self.path / "checkpoints", ignore_errors=True)
            else:
                raise RunError(f"run directory {self.path} already holds a run; pass --resume to continue it "
                               f"or choose another --out")
        elif resume:
            raise RunError(f"nothing to resume: {self.path} holds no run (no config.json)")
        self._made_dir = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            for sub in ("checkpoints", "scores"):
                (self.path / sub).mkdir(exist_ok=True)
            probe = self.path / f".write-test{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise RunError(f"cannot write to run directory {self.path}: {e.strerror}") from None
        if self.resumed:
            try:
                self.config = json.loads((self.path / "config.json").read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise RunError(f"run directory {self.path} has a corrupted config.json ({type(e).__name__})") from None
            if not isinstance(self.config, dict) or not isinstance(self.config.get("params", {}), dict):
                raise RunError(f"run directory {self.path} has a corrupted config.json (not a mapping of parameters)")
        else:
            self.config = {"params": dict(config or {}), "versions": versions(),
                           "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            atomic_write(self.path / "config.json", dumps(self.config))

    @classmethod
    def open(cls, path: str | Path) -> "Run":
        return cls(path, resume=True)

    def discard(self) -> None:
        """Undo the creation of a new run that failed before it started (bad corpus, bad model): remove
        its config.json and the empty folders ``Run()`` made, so the same ``--out`` can be used again."""
        if self.resumed:
            return
        (self.path / "config.json").unlink(missing_ok=True)
        for sub in ("checkpoints", "scores") + (("",) if self._made_dir else ()):
            try:
                (self.path / sub).rmdir()   # only when empty
            except OSError:
                pass

    # ------------------------------------------------------------------ config / metrics / summary
    def update_config(self, **items) -> None:
        self.config.update(items)
        atomic_write(self.path / "config.json", dumps(self.config))

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def log(self, record: dict) -> None:
        """Append one record to ``metrics.jsonl`` (one write of one line, flushed)."""
        line = json.dumps(record, default=_jsonable) + "\n"
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()

    def metrics(self) -> list[dict]:
        if not self.metrics_path.exists():
            return []
        out = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a torn last line
        return out

    def metrics_frame(self):
        import pandas as pd
        return pd.DataFrame(self.metrics())

    def truncate_metrics(self, keep) -> None:
        """Keep only the (complete) records for which ``keep(record)`` is true; used on resume so a
        resumed run repeats no record and loses none."""
        kept = [r for r in self.metrics() if keep(r)]
        atomic_write(self.metrics_path, "".join(json.dumps(r, default=_jsonable) + "\n" for r in kept))

    def write_summary(self, summary: dict, complete: bool = False) -> None:
        s = dict(summary)
        s["complete"] = bool(complete)
        s.setdefault("run", str(self.path))
        atomic_write(self.path / "summary.json", dumps(s))

    def summary(self) -> dict:
        p = self.path / "summary.json"
        if not p.exists():
            return {}
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RunError(f"{p} is corrupted ({type(e).__name__})") from None

    @property
    def complete(self) -> bool:
        return bool(self.summary().get("complete"))

    # ------------------------------------------------------------------ scores
    def save_scores(self, name: str, **arrays) -> Path:
        """Save per-example arrays under ``scores/<name>.npz`` (loadable without pickle)."""
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
            raise RunError(f"scores name {name!r} is not allowed")
        p = self.path / "scores" / f"{name}.npz"
        tmp = p.with_name(f".{p.stem}.tmp{os.getpid()}.npz")
        clean = {}
        for k, v in arrays.items():
            a = np.asarray(v)
            if a.dtype == object:
                a = a.astype(str)
            clean[k] = a
        np.savez(tmp, **clean)
        os.replace(tmp, p)
        return p

    def load_scores(self, name: str) -> dict[str, np.ndarray]:
        with np.load(self.path / "scores" / f"{name}.npz", allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def score_names(self) -> list[str]:
        return sorted(p.stem for p in (self.path / "scores").glob("*.npz"))


def table(root: str | Path = "runs") -> "pd.DataFrame":
    """One row per ``summary.json`` found below ``root`` (nested dicts flattened with dots)."""
    import pandas as pd
    rows = []
    for p in sorted(Path(root).rglob("summary.json")):
        try:
            s = json.loads(p.read_text())
        except (json.JSONDecodeError, OSError):
            continue
        s = {"run_dir": str(p.parent), **s}
        rows.append(s)
    if not rows:
        return pd.DataFrame(columns=["run_dir"])
    return pd.json_normalize(rows)
