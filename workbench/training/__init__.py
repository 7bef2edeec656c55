"""The training loop and its parts: budgets, schedules, samplers, checkpoints."""
from .budget import Budget, EvalCadence
from .loop import TrainResult, evaluate, index_batch, make_optimizer, resolve_device, train
from .hooks import FullSampler, RandomOnlineSampler, RandomSubsetSampler, make_sampler
from .schedules import Schedule

__all__ = ["Budget", "EvalCadence", "FullSampler", "RandomOnlineSampler", "RandomSubsetSampler", "Schedule", "TrainResult", "evaluate", "index_batch",
           "make_optimizer", "make_sampler", "resolve_device", "train"]
