"""The publishing gate: pure decision logic, no I/O.

    publish  iff  there is no serving model
             or   candidate[m] >= (1 - tolerance) * serving[m]      (same holdout, same users)

m is the gate metric (`settings.trainer_gate_metric`, default ndcg@10). Independently, a
candidate that does not beat the popularity baseline on its holdout is flagged
(`beats_popularity: false` in its manifest, a warning in the log): it may still be served,
because it can be better than the model in service, but serving reads the flag and falls back
to popularity.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class GateDecision:
    publish: bool
    reason: str
    metric: str
    tolerance: float
    candidate: float | None
    serving: float | None
    popularity: float | None
    beats_popularity: bool

    def as_manifest(self) -> dict[str, Any]:
        return asdict(self)


def decide(metric: str, tolerance: float, candidate: Mapping[str, float],
           serving: Mapping[str, float] | None,
           popularity: Mapping[str, float] | None) -> GateDecision:
    cand = candidate.get(metric)
    serv = None if serving is None else serving.get(metric)
    pop = None if popularity is None else popularity.get(metric)
    if cand is None:
        # Nothing to measure with. A first model is still better than none (it is flagged as
        # not beating popularity, so serving keeps answering with popularity); a model in
        # service is never replaced blind.
        if serv is None:
            return GateDecision(True, "empty holdout and no model in service: published "
                                "unevaluated", metric, tolerance, None, None, pop, False)
        return GateDecision(False, f"no {metric} for the candidate (empty holdout)", metric,
                            tolerance, None, serv, pop, False)
    beats = pop is None or cand > pop
    if serv is None:
        return GateDecision(True, "no model in service", metric, tolerance, cand, None, pop,
                            beats)
    threshold = (1.0 - tolerance) * serv
    if cand >= threshold:
        return GateDecision(True, f"{metric} {cand:.4f} >= {threshold:.4f} "
                            f"((1 - {tolerance}) x serving {serv:.4f})", metric, tolerance,
                            cand, serv, pop, beats)
    return GateDecision(False, f"{metric} {cand:.4f} < {threshold:.4f} "
                        f"((1 - {tolerance}) x serving {serv:.4f})", metric, tolerance, cand,
                        serv, pop, beats)
