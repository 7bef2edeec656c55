"""Run directories: everything one experiment produced, in one folder.

::

    RUN/
      config.json        all parameters, package versions, corpus hash (written once, atomically)
      metrics.jsonl      one JSON record per line, append-only (step, tokens, loss, lr, elapsed_s, ...)
      checkpoints/       step-<N>/ {model.safetensors, optimizer.pt, state.json}; LATEST names the newest
      scores/            per-example arrays (.npz) the views read: selections, losses, influence
      summary.json       the headline numbers; ``"complete": true`` only once the run has finished
                         (``wb.train`` writes one when the run has none; a recipe may replace it)
      model.safetensors  final weights
      hf/                the final model (and tokenizer) as a Hugging Face directory (``save_pretrained``)
      hf_config.json     the model's Hugging Face config, tokenizer/ the task's tokenizer (written at the
                         start: ``python -m workbench export RUN DIR`` makes ``hf/`` of any checkpoint)

Every file is written to a temporary name, flushed and renamed, so a crash never leaves half a file
(a torn last line of ``metrics.jsonl`` is cut off on resume). ``wb.runs.table(root)`` collects the
summaries of all runs below ``root`` into a DataFrame.

A run directory has one writer. A :class:`Run` opened for writing (new, ``resume=True`` or
``overwrite=True``) holds an exclusive advisory lock (``flock``) on ``RUN/.lock`` until
:meth:`Run.close` (or ``with Run(...) as run:``, :meth:`Run.discard`, or the object being
garbage-collected); the file names the holder's process id and host. Another process that opens the
run for writing gets a :class:`~workbench.errors.RunError` naming that process. The OS drops the lock
when its process dies, so a killed run is resumable at once (no stale lock to clean up). Run objects
of one process on the same directory share its lock. Readers take no lock: ``Run.open(path)``, the
views and ``runs.table`` read a run that another process is writing.
"""
from __future__ import annotations

import fcntl
import json
import os
import platform
import re
import socket
import threading
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


LOCK_NAME = ".lock"


class _Lock:
    """The exclusive ``flock`` of one run directory held by this process, shared by its Run objects."""

    def __init__(self, key, fd: int, path: Path):
        self.key, self.fd, self.path, self.users = key, fd, path, 1


_HELD: dict = {}                   # (st_dev, st_ino) of a run directory -> its _Lock held by this process
_HELD_GUARD = threading.Lock()


def _forget_locks_after_fork() -> None:
    """In a forked child: close the inherited lock descriptors (without unlocking: the parent still holds
    the lock through its own), so a child that outlives its parent does not keep the run locked."""
    global _HELD_GUARD
    _HELD_GUARD = threading.Lock()
    for h in _HELD.values():
        if h.fd >= 0:
            try:
                os.close(h.fd)
            except OSError:
                pass
            h.fd = -1
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_locks_after_fork)


def _holder(lock_path: Path) -> dict | None:
    """The ``{"pid": ..., "host": ...}`` the lock's holder wrote, or None if unreadable / not yet written."""
    try:
        info = json.loads(lock_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and "pid" in info else None


def _acquire(run_dir: Path) -> _Lock:
    """Lock ``run_dir`` for writing (shared with this process's other Run objects on it), or RunError."""
    lock_path = run_dir / LOCK_NAME
    try:
        st = os.stat(run_dir)
    except OSError as e:
        raise RunError(f"cannot write to run directory {run_dir}: {e.strerror}") from None
    key = (st.st_dev, st.st_ino)
    with _HELD_GUARD:
        h = _HELD.get(key)
        if h is not None and h.fd >= 0:
            try:                                   # still the lock file of this directory?
                same = os.path.samestat(os.fstat(h.fd), os.stat(lock_path))
            except OSError:
                same = False
            if same:
                h.users += 1
                return h
        deadline = time.monotonic() + 1.0
        while True:
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            except OSError as e:
                raise RunError(f"cannot write to run directory {run_dir}: {e.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if not isinstance(e, BlockingIOError):
                    raise RunError(f"cannot lock run directory {run_dir}: {e.strerror}") from None
                info = _holder(lock_path)
                if info is None and time.monotonic() < deadline:
                    time.sleep(0.05)               # the holder is between locking and writing its pid
                    continue
                who = (f"process {info.get('pid')} (host {info.get('host', '?')})" if info is not None
                       else "another process")
                raise RunError(f"run {run_dir} is in use by {who}; wait for it to finish or stop it") from None
            try:                                   # a lock on a file that discard() unlinked meanwhile: retry
                same = os.path.samestat(os.fstat(fd), os.stat(lock_path))
            except OSError:
                same = False
            if not same:
                os.close(fd)
                continue
            break
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n"
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, info.encode("utf-8"), 0)
        except OSError as e:
            os.close(fd)
            raise RunError(f"cannot write to run directory {run_dir}: {e.strerror}") from None
        h = _Lock(key, fd, lock_path)
        _HELD[key] = h
        return h


def _release(h: _Lock, unlink: bool = False) -> bool:
    """Drop one user of ``h``; the last one closes it (which releases the flock). With ``unlink``, the last
    user also removes the lock file (before unlocking). True when this call released the lock."""
    with _HELD_GUARD:
        if h.users <= 0:
            return False
        h.users -= 1
        if h.users > 0:
            return False
        if _HELD.get(h.key) is h:
            del _HELD[h.key]
        if h.fd < 0:                               # closed in a forked child
            return True
        try:
            if unlink:
                h.path.unlink(missing_ok=True)
            else:
                os.ftruncate(h.fd, 0)              # no stale pid left in the file
        except OSError:
            pass
        finally:
            os.close(h.fd)
            h.fd = -1
        return True


class Run:
    """A run directory. ``Run(path, config)`` creates it (refusing an existing run unless
    ``resume=True`` or ``overwrite=True``) and ``Run(path, resume=True)`` continues one: both write and
    hold the directory's lock until :meth:`close` (also as ``with Run(...) as run:``). ``Run.open(path)``
    opens an existing run for reading, without the lock (``Run.open(path, write=True)`` is
    ``Run(path, resume=True)``)."""

    def __init__(self, path: str | Path, config: dict | None = None, resume: bool = False,
                 overwrite: bool = False, read_only: bool = False):
        self.path = Path(path)
        self.resumed = False
        self.read_only = bool(read_only)
        self._lock: _Lock | None = None
        self._made_dir = False
        has_run = (self.path / "config.json").exists()
        if has_run and not (resume or overwrite or read_only):
            raise RunError(f"run directory {self.path} already holds a run; pass --resume to continue it "
                           f"or choose another --out")
        if not has_run and (resume or read_only):
            raise RunError(f"nothing to resume: {self.path} holds no run (no config.json)")
        if read_only:                              # a reader: no lock, no folders made, nothing written
            self.resumed = True
            self.config = self._read_config()
            return
        self._made_dir = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunError(f"cannot write to run directory {self.path}: {e.strerror}") from None
        self._lock = _acquire(self.path)           # before anything in the directory changes
        try:
            self._setup(config, resume, overwrite)
        except BaseException:
            self.close()
            raise

    def _setup(self, config, resume: bool, overwrite: bool) -> None:
        if (self.path / "config.json").exists():   # checked again under the lock
            if resume:
                self.resumed = True
            elif overwrite:
                for sub in ("metrics.jsonl", "summary.json", "model.safetensors", "hf_config.json"):
                    (self.path / sub).unlink(missing_ok=True)
                import shutil
                for sub in ("checkpoints", "hf", "tokenizer"):
                    shutil.rmtree(self.path / sub, ignore_errors=True)
            else:
                raise RunError(f"run directory {self.path} already holds a run; pass --resume to continue it "
                               f"or choose another --out")
        elif resume:
            raise RunError(f"nothing to resume: {self.path} holds no run (no config.json)")
        try:
            for sub in ("checkpoints", "scores"):
                (self.path / sub).mkdir(exist_ok=True)
            probe = self.path / f".write-test{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise RunError(f"cannot write to run directory {self.path}: {e.strerror}") from None
        if self.resumed:
            self.config = self._read_config()
        else:
            self.config = {"params": dict(config or {}), "versions": versions(),
                           "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            atomic_write(self.path / "config.json", dumps(self.config))

    def _read_config(self) -> dict:
        try:
            config = json.loads((self.path / "config.json").read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RunError(f"run directory {self.path} has a corrupted config.json ({type(e).__name__})") from None
        except OSError as e:
            raise RunError(f"cannot read {self.path / 'config.json'}: {e.strerror}") from None
        if not isinstance(config, dict) or not isinstance(config.get("params", {}), dict):
            raise RunError(f"run directory {self.path} has a corrupted config.json (not a mapping of parameters)")
        return config

    @classmethod
    def open(cls, path: str | Path, write: bool = False) -> "Run":
        """An existing run: for reading (no lock; another process may be writing it), or with
        ``write=True`` for continuing it (``Run(path, resume=True)``, which takes the lock)."""
        return cls(path, resume=True) if write else cls(path, read_only=True)

    # ------------------------------------------------------------------ the writer's lock
    @property
    def writable(self) -> bool:
        """True while this object holds the run's lock (opened for writing and not closed)."""
        return self._lock is not None

    def _check_writable(self) -> None:
        if self.read_only:
            raise RunError(f"run {self.path} was opened for reading; open it with Run(path, resume=True) to write")
        if self._lock is None:
            raise RunError(f"run {self.path} was closed; open it again with Run(path, resume=True) to write")

    def close(self) -> None:
        """Release the run's lock (another process may then resume it); this object can no longer write.
        Reading still works. Idempotent."""
        h, self._lock = getattr(self, "_lock", None), None
        if h is not None:
            _release(h)

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:       # at interpreter exit modules may be gone; the OS releases the lock anyway
            pass

    def __getstate__(self):     # a copy (pickle, copy.copy) does not share or hold the lock
        state = dict(self.__dict__)
        state["_lock"] = None
        return state

    def __repr__(self) -> str:
        mode = "read" if self.read_only else ("write" if self._lock is not None else "closed")
        return f"Run({str(self.path)!r}, {mode})"

    def discard(self) -> None:
        """Undo the creation of a new run that failed before it started (bad corpus, bad model): remove
        its config.json and the empty folders ``Run()`` made, so the same ``--out`` can be used again.
        Releases the lock (a resumed run is left as it was)."""
        h, self._lock = self._lock, None
        if h is None:
            return
        if self.resumed:
            _release(h)
            return
        (self.path / "config.json").unlink(missing_ok=True)
        # the lock file goes too (so the folder can), unless another Run object of this process still holds it
        _release(h, unlink=True)
        for sub in ("checkpoints", "scores") + (("",) if self._made_dir else ()):
            try:
                (self.path / sub).rmdir()   # only when empty
            except OSError:
                pass

    # ------------------------------------------------------------------ config / metrics / summary
    def update_config(self, **items) -> None:
        self._check_writable()
        self.config.update(items)
        atomic_write(self.path / "config.json", dumps(self.config))

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def log(self, record: dict) -> None:
        """Append one record to ``metrics.jsonl`` (one write of one line, flushed)."""
        self._check_writable()
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
        self._check_writable()
        kept = [r for r in self.metrics() if keep(r)]
        atomic_write(self.metrics_path, "".join(json.dumps(r, default=_jsonable) + "\n" for r in kept))

    def write_summary(self, summary: dict, complete: bool = False) -> None:
        self._check_writable()
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
        self._check_writable()
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
