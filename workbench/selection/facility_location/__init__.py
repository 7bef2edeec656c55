"""Fast facility-location subset selection (the selection engine of INGENIOUS).

What facility location is
-------------------------
Given ``n`` points and a similarity ``sim(i, j)``, the facility-location value of a subset ``S``
is::

    f(S) = sum over every point i of  max(0, max_{j in S} sim(i, j))

Each point ``i`` of the *ground set* is "served" by its most similar selected point (its
facility); ``f`` adds up how well everything is served.  A subset with a high value is
*representative*: every region of the data has a selected point nearby.  INGENIOUS uses it to
pick a small, representative part of a pretraining corpus (on sentence embeddings).

``f`` is monotone and submodular (adding a point never hurts, and helps less the more is already
selected), so the greedy algorithm -- repeatedly add the point with the largest *marginal gain*
``gain(j) = f(S + j) - f(S) = sum_i max(0, sim(i, j) - cur[i])`` where ``cur[i]`` is how well
``i`` is served now -- is within ``1 - 1/e`` of the best subset of that size.

The ``max(0, ...)`` matches submodlib: its memoised "similarity to the nearest selected point"
starts at 0, so negative similarities never count.  Constant data (all rows identical) is valid:
the first pick serves everything (gain ``n``) and every later gain is 0 (picks in index order).
All-zero data gives the identity kernel (every gain is 1).

Modules
-------
``base``
    :class:`Selection`, :class:`SelectionError`, the option names and the input checks.
``kernels``
    Similarity kernels: the dense matrix and the symmetric k-NN kernel (faiss or torch), and
    :func:`similarity_kernel`.
``engines``
    Coverage state and exact gain evaluation over the kernel (numpy or torch), with compaction.
``greedy``
    The optimizers: naive, lazy and stochastic greedy.
``reference``
    The submodlib adapter behind ``backend="submodlib"`` (the reference implementation).
``select``
    :func:`facility_location` (the entry point) and :func:`evaluate_objective`.
"""

from .base import Selection, SelectionError
from .kernels import similarity_kernel
from .select import evaluate_objective, facility_location

__all__ = [
    "SelectionError",
    "Selection",
    "facility_location",
    "similarity_kernel",
    "evaluate_objective",
]
