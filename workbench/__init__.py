"""workbench: an experiment workbench for efficient language-model pretraining.

The facade::

    import workbench as wb
    c = wb.corpus("pydocs:numpy,pandas")           # Corpus (id, text, domain)
    m = wb.model("bert-tiny", vocab_size=8192)      # HF model preset
    res = wb.train(m, task, sampler=..., batch_filter=..., budget=..., schedule=..., run=...)
    wb.runs.table("runs/")                          # DataFrame of every run's summary

Selection (``wb.selection``), growth (``wb.growth``) and budget training (``wb.train``) are the three
families of primitives; ``notebooks/`` reproduces one paper each.
"""
from . import runs
from .data.batching import CLMTask, MLMTask
from .data.corpus import Corpus, corpus
from .data.tokenizer import train_tokenizer
from .errors import (CheckpointError, ConfigError, CorpusError, ModelError, RunError, WorkbenchError)
from .models import flops_per_token, model
from .data.prepare import prepare
from .runs import Run
from .training import Budget, Schedule, evaluate, train

__version__ = "0.1.0"

__all__ = ["Budget", "CLMTask", "CheckpointError", "ConfigError", "Corpus", "CorpusError", "MLMTask",
           "ModelError", "Run", "RunError", "Schedule", "WorkbenchError", "corpus", "evaluate", "flops_per_token",
           "model", "prepare", "runs", "train", "train_tokenizer"]


def __getattr__(name):  # lazy subpackages: selection and growth pull in faiss / submodlib
    if name in ("selection", "growth", "viz"):
        import importlib
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(name)
