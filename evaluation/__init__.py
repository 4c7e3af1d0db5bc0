"""Offline evaluation: time-based holdout (split), ranking (top-k with exclusions), ranking
metrics at k (metrics) and the popularity baseline (baselines). Pure numpy/pandas, no I/O."""
