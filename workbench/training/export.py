"""A run as a Hugging Face directory: ``RUN/hf/`` at the end of every run, and any checkpoint later.

At the start of a run (rank 0, new runs; a resumed run keeps what it has) the loop writes what a
Hugging Face directory needs besides the weights:

::

    RUN/hf_config.json   the model's config (``architectures`` names its class)
    RUN/tokenizer/       the task's tokenizer (``save_pretrained``), when the task holds one

At the end it writes ``RUN/hf/`` (``save_pretrained`` of the final model, plus the tokenizer), so
``AutoModelForCausalLM.from_pretrained("RUN/hf")`` (or ``AutoModelForMaskedLM``) and
``AutoTokenizer.from_pretrained("RUN/hf")`` load it. :func:`export_run` (``python -m workbench export
RUN DIR --checkpoint step-N|latest|final|marker-F``) builds the same directory from any checkpoint.
Every directory is written into a hidden temporary sibling and renamed into place: a killed run or
export never leaves half of one.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import CheckpointError, ModelError, RunError
from ..runs import atomic_write
from .checkpoint import load_weights, write_dir_atomically

__all__ = ["HF_CONFIG", "HF_DIR", "TOKENIZER_DIR", "checkpoint_weights", "export_run", "is_hf_model",
           "save_hf", "save_run_start"]

HF_DIR = "hf"
HF_CONFIG = "hf_config.json"
TOKENIZER_DIR = "tokenizer"


def _unwrap(model):
    return getattr(model, "_orig_mod", model)       # torch.compile's wrapper


def is_hf_model(model) -> bool:
    """A Hugging Face model (``save_pretrained`` and a config); plain ``nn.Module`` s are not exported."""
    return hasattr(model, "save_pretrained") and hasattr(getattr(model, "config", None), "to_json_string")


def _config_json(model) -> str:
    import copy
    model = _unwrap(model)
    cfg = copy.deepcopy(model.config)
    cfg.architectures = [type(model).__name__]
    return cfg.to_json_string(use_diff=False)


def _saveable_tokenizer(tokenizer) -> bool:
    return tokenizer is not None and hasattr(tokenizer, "save_pretrained")


def save_run_start(run_path: str | Path, model, tokenizer=None) -> None:
    """Write ``RUN/hf_config.json`` and ``RUN/tokenizer/`` unless the run has them (a resumed run)."""
    run_path = Path(run_path)
    if not is_hf_model(model):
        return
    if not (run_path / HF_CONFIG).exists():
        atomic_write(run_path / HF_CONFIG, _config_json(model))
    if _saveable_tokenizer(tokenizer) and not (run_path / TOKENIZER_DIR).exists():
        write_dir_atomically(run_path / TOKENIZER_DIR, lambda d: tokenizer.save_pretrained(str(d)))


def save_hf(out: str | Path, model, state_dict=None, tokenizer=None) -> Path | None:
    """``save_pretrained`` of ``model`` (with ``state_dict`` when given: a backend's snapshot of the
    weights) and ``tokenizer`` into the directory ``out``, atomically. None for a non-HF model."""
    model = _unwrap(model)
    if not is_hf_model(model):
        return None

    def write(d: Path) -> None:
        model.save_pretrained(str(d), state_dict=state_dict)
        if _saveable_tokenizer(tokenizer):
            tokenizer.save_pretrained(str(d))
        elif isinstance(tokenizer, (str, Path)):       # a saved tokenizer directory: its files
            for f in Path(tokenizer).iterdir():
                if f.is_file():
                    shutil.copy2(f, d / f.name)

    return write_dir_atomically(Path(out), write)


def _checkpoints(run: Path) -> list[str]:
    names = []
    for sub in ("checkpoints", "markers"):
        root = run / sub
        if root.is_dir():
            names += sorted(p.name for p in root.iterdir()
                            if p.is_dir() and not p.name.startswith(".") and (p / "model.safetensors").exists())
    return names


def checkpoint_weights(run: str | Path, checkpoint: str | None = None) -> Path:
    """The ``model.safetensors`` of ``checkpoint`` in run directory ``run``: ``final`` (``RUN/model.safetensors``),
    ``latest``, ``step-N`` (``N`` with or without leading zeros) or a marker (``marker-0.5``).
    ``None``: the final weights when the run has them, else the latest checkpoint."""
    run = Path(run)
    final = run / "model.safetensors"
    names = _checkpoints(run)
    if checkpoint is None:
        if final.exists():
            return final
        if not (run / "checkpoints" / "LATEST").exists():
            hint = f"; choose --checkpoint among: {', '.join(names)}" if names else ""
            raise CheckpointError(f"run {run} has no weights to export (no model.safetensors and no checkpoint){hint}")
        checkpoint = "latest"
    has_latest = (run / "checkpoints" / "LATEST").exists()
    have = ", ".join(["final"] * final.exists() + ["latest"] * has_latest + names) or "none"
    if checkpoint == "final":
        if not final.exists():
            raise CheckpointError(f"run {run} has no final weights (model.safetensors): it did not finish; "
                                  f"choose --checkpoint among: {have}")
        return final
    if checkpoint == "latest":
        latest = run / "checkpoints" / "LATEST"
        if not latest.exists():
            raise CheckpointError(f"run {run} has no checkpoint (no checkpoints/LATEST); choose among: {have}")
        d = run / "checkpoints" / latest.read_text().strip()
    else:
        name = checkpoint
        head, _, num = checkpoint.partition("-")
        if head == "step" and num.isdigit():
            name = f"step-{int(num):08d}"
        d = run / ("markers" if head == "marker" else "checkpoints") / name
        if name.startswith(".") or "/" in name or not (d / "model.safetensors").exists():
            raise CheckpointError(f"run {run} has no checkpoint {checkpoint!r}; choose among: {have}")
    if not (d / "model.safetensors").exists():
        raise CheckpointError(f"checkpoint {d} is missing its weights (model.safetensors)")
    return d / "model.safetensors"


def _model_from_config(run: Path):
    p = run / HF_CONFIG
    if not p.exists():
        raise RunError(f"run {run} has no {HF_CONFIG}: its model is not a Hugging Face model, or the run was "
                       f"made before exports existed")
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
        arch = (d.get("architectures") or [None])[0]
    except (OSError, ValueError, AttributeError, TypeError) as e:
        raise RunError(f"{p} is corrupted ({type(e).__name__})") from None
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    if d.get("model_type") == "crammed_bert":          # ours: registers itself with the Auto classes
        from ..models import crammed
        return crammed.CrammedBertForMaskedLM(crammed.CrammedBertConfig.from_dict(d))
    cls = getattr(transformers, arch, None) if isinstance(arch, str) else None
    if cls is None:
        raise ModelError(f"{p} names model class {arch!r}, which this transformers version does not have")
    try:
        config = CONFIG_MAPPING[d["model_type"]].from_dict(d)
    except (ValueError, KeyError, TypeError) as e:
        raise ModelError(f"{p} is not a valid Hugging Face config ({str(e).splitlines()[0][:120]})") from None
    return cls(config)


def export_run(run: str | Path, out: str | Path, checkpoint: str | None = None) -> Path:
    """Write checkpoint ``checkpoint`` of run directory ``run`` (see :func:`checkpoint_weights`) as a
    Hugging Face directory ``out`` (model, config and the run's tokenizer). ``out`` must not exist or
    be empty. Reads the run without its lock (a run in progress can be exported)."""
    run, out = Path(run), Path(out)
    if not run.is_dir():
        raise RunError(f"run directory {run} does not exist")
    if not (run / "config.json").exists():
        raise RunError(f"{run} holds no run (no config.json)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunError(f"output directory {out} already exists and is not empty; choose another")
    weights = checkpoint_weights(run, checkpoint)
    model = _model_from_config(run)
    load_weights(weights, model)
    tok = run / TOKENIZER_DIR
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            out.rmdir()
        return save_hf(out, model, tokenizer=tok if tok.is_dir() else None)
    except OSError as e:
        raise RunError(f"cannot write {out}: {e.strerror or e}") from None
