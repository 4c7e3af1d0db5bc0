"""With the default (tuned) settings, the trainer's ALS beats popularity by a clear margin on
the same time split, on real data (ML-100K) and on the synthetic e-commerce stream."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration

MARGIN = 1.2  # at least 20 % better than popularity on both metrics


def _check(result) -> None:
    cand, pop = result.metrics, result.baseline_metrics
    print({m: (round(cand[m], 4), round(pop[m], 4)) for m in ("ndcg@10", "recall@10")})
    assert result.published and result.decision.beats_popularity
    assert cand["ndcg@10"] >= MARGIN * pop["ndcg@10"]
    assert cand["recall@10"] >= MARGIN * pop["recall@10"]
    assert result.manifest["beats_popularity"] is True


def test_als_beats_popularity_on_ml100k_time_split(make_trainer, ml100k_frame):
    trainer = make_trainer()
    trainer.store.append(ml100k_frame)
    result = trainer.run_once()
    assert result.manifest["holdout"]["users"] >= 80  # ML-100K's time split is small
    _check(result)


def test_als_beats_popularity_on_synthetic_stream(make_trainer, synthetic_frame):
    trainer = make_trainer()
    trainer.store.append(synthetic_frame)
    result = trainer.run_once()
    assert result.manifest["holdout"]["users"] >= 500
    _check(result)
