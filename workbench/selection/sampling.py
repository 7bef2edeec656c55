"""The draws the selection methods share: deterministic top-k, importance sampling, Boltzmann
(Gumbel top-k) sampling, and INGENIOUS' Taylor softmax.

Each method module imports what it draws with from here; MATES' own Gumbel top-k over standardised
influence scores (with its error type) lives in :mod:`workbench.selection.mates`.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Rows of the ``k`` largest scores, largest first (ties: the earlier row first)."""
    return torch.sort(scores, descending=True, stable=True).indices[:k]


def bottom_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Rows of the ``k`` smallest scores, smallest first (ties: the earlier row first)."""
    return torch.sort(scores, descending=False, stable=True).indices[:k]


def importance_sample(scores: torch.Tensor, k: int, generator: torch.Generator | None = None):
    """``k`` rows drawn with replacement with ``p_i = s_i / sum(s)``, and weights ``1 / (n p_i)``.

    With ``n = len(scores)``: ``E[mean_j w_j L_j] = sum_i p_i L_i / (n p_i) = mean_i L_i`` for any
    per-row losses ``L``, so training on the weighted draws is unbiased. All-zero scores fall back to
    uniform probabilities. Returns ``(rows [k], weights [k], p [n])``.
    """
    s = scores.double().clamp_min(0)
    p = s / s.sum() if s.sum() > 0 else torch.full_like(s, 1.0 / len(s))
    rows = torch.multinomial(p.cpu(), k, replacement=True, generator=generator).to(scores.device)
    weights = 1.0 / (len(s) * p[rows])
    return rows, weights.float(), p


def boltzmann_sample(scores: torch.Tensor, k: int, temperature: float, generator: torch.Generator | None = None):
    """``k`` distinct rows drawn with ``p ∝ exp(score / temperature)`` one after another (Gumbel top-k:
    perturbing ``score / T`` with independent Gumbel noise and keeping the top k is exactly that)."""
    if not temperature > 0:
        raise ConfigError(f"temperature must be positive, got {temperature}")
    u = torch.rand(scores.shape, generator=generator, dtype=torch.float64).clamp_(1e-12, 1 - 1e-12)
    gumbel = -torch.log(-torch.log(u))
    return top_k(scores.double().cpu() / temperature + gumbel, k).to(scores.device)


def taylor_softmax(x: np.ndarray) -> np.ndarray:
    """Second-order Taylor softmax: ``(1 + x + x²/2) / Σ(1 + x + x²/2)`` (every term > 0)."""
    x = np.asarray(x, dtype=np.float64)
    w = 1.0 + x + 0.5 * x * x
    return w / w.sum()
