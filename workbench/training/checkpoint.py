"""Checkpoints: everything that shapes the rest of a run, written atomically.

``checkpoints/step-<N>/`` holds ``model.safetensors`` (weights only, safetensors), ``optimizer.pt``
(tensors and plain values; loaded with ``torch.load(weights_only=True)``), ``state.json`` (step,
tokens, budget elapsed time, sampler / filter / RNG state as plain values) and ``arrays.npz``
(the numpy arrays of that state). A checkpoint is written into a hidden temporary directory and
renamed into place; ``checkpoints/LATEST`` is rewritten atomically last, so a crash mid-write leaves
the previous checkpoint as the latest.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_model, save_model

from ..errors import CheckpointError
from ..runs import atomic_write


def _flatten(state, prefix: str, arrays: dict):
    if isinstance(state, dict):
        return {k: _flatten(v, f"{prefix}{k}.", arrays) for k, v in state.items()}
    if isinstance(state, (np.ndarray, torch.Tensor)):
        key = prefix.rstrip(".")
        arrays[key] = state.detach().cpu().numpy() if isinstance(state, torch.Tensor) else state
        return {"__array__": key, "torch": isinstance(state, torch.Tensor)}
    if isinstance(state, tuple):
        return [_flatten(v, f"{prefix}{i}.", arrays) for i, v in enumerate(state)]
    if isinstance(state, list):
        return [_flatten(v, f"{prefix}{i}.", arrays) for i, v in enumerate(state)]
    if isinstance(state, (np.integer,)):
        return int(state)
    if isinstance(state, (np.floating,)):
        return float(state)
    return state


def _unflatten(state, arrays):
    if isinstance(state, dict):
        if "__array__" in state:
            a = arrays[state["__array__"]]
            return torch.from_numpy(a.copy()) if state.get("torch") else a
        return {k: _unflatten(v, arrays) for k, v in state.items()}
    if isinstance(state, list):
        return [_unflatten(v, arrays) for v in state]
    return state


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {"python": random.getstate(), "numpy": {"key": np_state[1], "pos": int(np_state[2]),
                                                    "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
            "torch": torch.get_rng_state(),
            "cuda": [s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else []}


def set_rng_state(s: dict) -> None:
    py = s["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = s["numpy"]
    np.random.set_state(("MT19937", np.asarray(n["key"], dtype=np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(s["torch"].to(torch.uint8))
    if s.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.to(torch.uint8) for t in s["cuda"]])


def save_checkpoint(ckpt_root: Path, step: int, model, optimizer, state: dict, keep: int = 2,
                    name: str | None = None, update_latest: bool = True) -> Path:
    """Write ``ckpt_root/<name or step-N>`` atomically and point ``LATEST`` at it."""
    ckpt_root = Path(ckpt_root)
    ckpt_root.mkdir(parents=True, exist_ok=True)
    name = name or f"step-{step:08d}"
    final = ckpt_root / name
    tmp = ckpt_root / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_model(model, str(tmp / "model.safetensors"))
    if optimizer is not None:
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    arrays: dict = {}
    flat = _flatten(state, "", arrays)
    np.savez(tmp / "arrays.npz", **arrays)
    (tmp / "state.json").write_text(json.dumps(flat))
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    remove_stale_tmp(ckpt_root)
    if update_latest:
        atomic_write(ckpt_root / "LATEST", name)
        steps = sorted(p for p in ckpt_root.glob("step-*") if p.is_dir())
        for old in steps[:-keep] if keep else []:
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
    return final


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:      # someone else's live process
        return True
    return True


def remove_stale_tmp(ckpt_root: Path) -> list[Path]:
    """Delete the ``.tmp-<name>-<pid>`` folders of checkpoint writes whose process is gone (a run
    killed while writing leaves one); writes in progress (live pids, e.g. other ranks) are kept."""
    removed = []
    for p in Path(ckpt_root).glob(".tmp-*"):
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    p = Path(ckpt_root) / "LATEST"
    if not p.exists():
        return None
    d = Path(ckpt_root) / p.read_text().strip()
    if not d.is_dir():
        raise CheckpointError(f"checkpoint {d} named by LATEST is missing")
    return d


def write_dir_atomically(final: Path, write) -> Path:
    """Replace the directory ``final`` by what ``write(tmp)`` puts in a fresh hidden sibling ``tmp``.

    ``tmp`` is renamed into place once complete: a crash leaves the previous ``final`` (or none), never
    a half-written one. An existing ``final`` is first renamed aside (and removed after); the hidden
    ``.tmp-*-<pid>`` folders of a killed writer are removed by :func:`remove_stale_tmp`."""
    final = Path(final)
    pid = os.getpid()
    tmp = final.parent / f".tmp-{final.name}-{pid}"
    old = final.parent / f".tmp-old-{final.name}-{pid}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    for p in (*final.parent.glob(f".tmp-{final.name}-*"), *final.parent.glob(f".tmp-old-{final.name}-*")):
        other = p.name.rsplit("-", 1)[-1]     # only this name's leftovers of writers that are gone
        if other.isdigit() and not _alive(int(other)):
            shutil.rmtree(p, ignore_errors=True)
    return final


def load_weights(path: Path, model) -> None:
    """Load the ``model.safetensors`` file ``path`` into ``model`` (tied weights may be absent)."""
    path = Path(path)
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except Exception as e:  # a truncated or foreign file
        raise CheckpointError(f"weights {path} are unreadable ({type(e).__name__}: {str(e)[:120]})") from None
    if unexpected or [m for m in missing if not _tied(model, m)]:
        raise CheckpointError(f"weights {path} do not match the model (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")


def load_checkpoint(path: Path, model, optimizer=None) -> dict:
    """Load weights (and optimizer state) into ``model`` / ``optimizer``; return the saved state."""
    path = Path(path)
    try:
        missing, unexpected = load_model(model, str(path / "model.safetensors"), strict=False)
        if unexpected or [m for m in missing if not _tied(model, m)]:
            raise CheckpointError(f"checkpoint {path} does not match the model (missing {missing[:3]}, "
                                  f"unexpected {unexpected[:3]})")
        if optimizer is not None:
            optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu"))
        flat = json.loads((path / "state.json").read_text())
        with np.load(path / "arrays.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except CheckpointError:
        raise
    except Exception as e:  # safetensors / zip / json errors on a corrupted checkpoint
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}: {str(e)[:120]})") from None
    return _unflatten(flat, arrays)


def _tied(model, name: str) -> bool:
    # safetensors' save_model drops tied duplicates (e.g. lm_head.weight tied to the embeddings)
    return name.endswith("decoder.weight") or name.endswith("lm_head.weight") or name.endswith("decoder.bias")
