"""Offline evaluation: time-based holdout (split), ranking (top-k with exclusions), ranking
metrics at k (metrics) and the popularity baseline (baselines). Pure numpy/pandas, no I/O."""

# The models `recsys evaluate --models` compares (row names: popularity, item-kNN, ALS, neural,
# selected: what `recsys train` would serve).
MODELS = ("popularity", "knn", "als", "neural", "selected")
DEFAULT_MODELS = ("popularity", "knn", "als", "selected")
