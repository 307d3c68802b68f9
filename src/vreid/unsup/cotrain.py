"""Co-training by permuting pseudo-labels: backbone b learns from the labels of backbone pi(b), pi a derangement."""
from __future__ import annotations

import numpy as np


def random_derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A permutation of 0..n-1 with no fixed point, uniform over all derangements (rejection sampling: about
    e = 2.72 draws on average). n = 1 has none; it returns [0] (a single backbone learns from itself)."""
    if n < 1:
        raise ValueError(f"need at least one backbone, got {n}")
    if n == 1:
        return np.zeros(1, np.int64)
    while True:
        perm = rng.permutation(n)
        if not (perm == np.arange(n)).any():
            return perm.astype(np.int64)
