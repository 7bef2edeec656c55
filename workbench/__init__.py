"""workbench: an experiment workbench for efficient language-model pretraining.

The facade::

    import workbench as wb
    c = wb.corpus("pydocs:numpy,pandas")           # Corpus (id, text, domain)
    m = wb.model("bert-tiny", vocab_size=8192)      # HF model preset
    res = wb.train(m, task, sampler=..., batch_filter=..., budget=..., schedule=..., run=...)
    wb.runs.table("runs/")                          # DataFrame of every run's summary

Selection (``wb.selection``), growth (``wb.growth``) and budget training (``wb.train``) are the three
families of primitives; ``notebooks/`` reproduces one paper each.

Every name is loaded on first use (PEP 562 ``__getattr__``): ``import workbench`` costs a few
milliseconds, so ``python -m workbench --help`` and one-line errors answer at once; ``wb.train``
imports torch the first time it is touched.
"""
from __future__ import annotations

import importlib

from .errors import CheckpointError, ConfigError, CorpusError, ModelError, RunError, WorkbenchError

__version__ = "0.1.0"

#: facade name -> the module that defines it (loaded on first access)
_LAZY = {
    "CLMTask": ".data.batching", "MLMTask": ".data.batching",
    "Corpus": ".data.corpus", "corpus": ".data.corpus",
    "train_tokenizer": ".data.tokenizer",
    "flops_per_token": ".models", "model": ".models",
    "prepare": ".data.prepare",
    "Run": ".runs",
    "Budget": ".training", "Schedule": ".training", "evaluate": ".training", "train": ".training",
}
_SUBPACKAGES = ("runs", "selection", "growth", "viz", "data", "models", "training", "recipes", "reproduce")

__all__ = ["Budget", "CLMTask", "CheckpointError", "ConfigError", "Corpus", "CorpusError", "MLMTask",
           "ModelError", "Run", "RunError", "Schedule", "WorkbenchError", "corpus", "evaluate", "flops_per_token",
           "model", "prepare", "runs", "train", "train_tokenizer"]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_SUBPACKAGES))
