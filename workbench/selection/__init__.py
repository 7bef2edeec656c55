"""Selection primitives: which data to train on, one module per method object.

* :mod:`~workbench.selection.facility_location` -- the facility-location engine (kernels, engines,
  greedy optimizers, the submodlib reference);
* :mod:`~workbench.selection.ingenious` -- the INGENIOUS sampler (a :class:`~workbench.training.hooks.Sampler`);
* :mod:`~workbench.selection.irreducible` and :mod:`~workbench.selection.rho_loss` -- irreducible
  losses and the RHO-LOSS batch filter (a :class:`~workbench.training.hooks.BatchFilter`) with its baselines;
* :mod:`~workbench.selection.rho_tokens` -- the token-level filter (Rho-1);
* :mod:`~workbench.selection.influence_model` and :mod:`~workbench.selection.mates` -- the MATES
  data-influence model, the oracle probers and the MATES sampler.
"""
from .facility_location import Selection, SelectionError, evaluate_objective, facility_location, similarity_kernel
from .influence_model import InfluenceModel, MatesError
from .ingenious import IngeniousSampler, sample_partition, taylor_softmax
from .irreducible import IrreducibleLosses, holdout_irreducible
from .mates import MatesSampler, batched_probe, gumbel_topk, naive_probe, reference_loss
from .rho_loss import BatchSelector
from .rho_tokens import TokenExcessLoss

__all__ = ["BatchSelector", "InfluenceModel", "IngeniousSampler", "IrreducibleLosses", "MatesError", "MatesSampler",
           "Selection", "SelectionError", "TokenExcessLoss", "batched_probe", "evaluate_objective",
           "facility_location", "gumbel_topk", "holdout_irreducible", "naive_probe", "reference_loss",
           "sample_partition", "similarity_kernel", "taylor_softmax"]
