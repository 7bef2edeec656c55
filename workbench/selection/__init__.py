"""Selection primitives: which data to train on.

``facility_location`` (the fast engine), the INGENIOUS sampler, RHO-LOSS batch filters and the MATES
prober / influence model live in their own modules; the names below are the public API.
"""
from .facility_location import Selection, SelectionError, evaluate_objective, facility_location, similarity_kernel
from .ingenious import IngeniousSampler, sample_partition, taylor_softmax

__all__ = ["IngeniousSampler", "Selection", "SelectionError", "evaluate_objective", "facility_location",
           "sample_partition", "similarity_kernel", "taylor_softmax"]
