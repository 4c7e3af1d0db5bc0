"""Candidates by name. A candidate module registers itself on import; `load()` imports the
built-in ones, so adding a candidate is a module plus one line in BUILTIN."""

from __future__ import annotations

import importlib

from recsys.candidates.base import CandidateSpec

REGISTRY: dict[str, CandidateSpec] = {}
BUILTIN = ("recsys.candidates.popularity", "recsys.candidates.als_model",
           "recsys.candidates.knn", "recsys.candidates.ease", "recsys.candidates.neural")
_loaded = False


class UnknownCandidate(KeyError):
    pass


def register(spec: CandidateSpec) -> CandidateSpec:
    REGISTRY[spec.name] = spec
    return spec


def load() -> dict[str, CandidateSpec]:
    global _loaded
    if not _loaded:
        for module in BUILTIN:
            importlib.import_module(module)
        _loaded = True
    return REGISTRY


def get(name: str) -> CandidateSpec:
    specs = load()
    if name not in specs:
        raise UnknownCandidate(f"unknown candidate {name!r}; known: {sorted(specs)}")
    return specs[name]


def names() -> list[str]:
    return sorted(load())
