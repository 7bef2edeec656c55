"""Growth: start a large transformer from a trained small one.

* :class:`LiGO` / :func:`train_ligo` -- the learned linear growth operator (Wang et al., ICLR 2023):
  width expansions and depth coefficients fitted for ~100 steps on the large model's loss;
  ``variant="authors"`` (default: as VITA-Group/LiGO releases it) or ``"canon"`` (the workbench's original).
* :func:`grow` -- one call for every method (``scratch``, ``stackbert``, ``interpolation``,
  ``net2net`` / ``bert2bert_fpi``, ``bert2bert_aki``, ``ligo``); :func:`stack_depth`, :func:`interpolate_depth`,
  :func:`net2net_width` -- the fixed baselines (layer copies, bert2BERT's FPI and AKI width growth).

The paper's protocol (small model, growth, continued training, FLOPs to the scratch model's loss)
is built on these in ``notebooks/ligo.ipynb``; nothing here depends on it.
"""
from .arch import GrowthError
from .baselines import grow, interpolate_depth, net2net_width, stack_depth
from .ligo import LiGO, train_ligo

__all__ = ["GrowthError", "LiGO", "grow", "interpolate_depth", "net2net_width", "stack_depth", "train_ligo"]
