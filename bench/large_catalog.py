"""Synthetic factor catalogues shaped like fitted ALS factors, for approximate-search checks.

Random Gaussian vectors are the worst case of any approximate search (no structure to find)
and unlike what ALS learns: fitted item vectors gather around tastes (topics), and their
norms grow with popularity. Here: T topic directions; an item is its topic's direction
plus noise, scaled by a log-normal popularity factor; a user is one topic's direction
plus noise. Used by the large-catalogue phase of bench/serving_bench.py and by tests.
"""

from __future__ import annotations

import numpy as np


def clustered_factors(n_items: int, n_users: int, factors: int, seed: int = 0,
                      topics: int = 512, noise: float = 0.7
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(item_factors (n_items, factors), user_factors (n_users, factors)), float32."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((topics, factors)).astype(np.float32)
    scale = np.float32(1 / np.sqrt(factors))
    items = np.empty((n_items, factors), dtype=np.float32)
    for start in range(0, n_items, 100_000):  # bounded temporaries at a million items
        stop = min(n_items, start + 100_000)
        block = centres[rng.integers(0, topics, stop - start)]
        block += noise * rng.standard_normal(block.shape, dtype=np.float32)
        block *= rng.lognormal(0.0, 0.3, stop - start).astype(np.float32)[:, None] * scale
        items[start:stop] = block
    users = centres[rng.integers(0, topics, n_users)]
    users = (users + noise * rng.standard_normal(users.shape, dtype=np.float32)) * scale
    return items, users.astype(np.float32)
