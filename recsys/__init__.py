"""Shared core of the streaming recommender: settings, event schema, Redis key layout,
fold-in maths, model versions, data sources and the local stack.

The roles live beside it: `stream/` (Faust fold-in workers), `trainer/` (periodic ALS refit),
`serving/` (FastAPI), `evaluation/` (offline metrics and reports).
"""

__version__ = "0.1.0"
