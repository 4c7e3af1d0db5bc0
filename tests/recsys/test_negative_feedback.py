"""Negative feedback (dislike, hide, low ratings): one rule in trainer, stream and serving,
and implicit's own reading of a negative confidence (preference 0, confidence |c|)."""

import numpy as np
import pandas as pd
import pytest
from implicit.cpu.als import AlternatingLeastSquares
from scipy.sparse import csr_matrix

from recsys.confidence import confidence, event_weight, event_weights_array
from recsys.events import EventType
from recsys.foldin import fold_in, fold_in_batch, gram
from recsys.matrix import confidence_matrix, event_weights_of, index_events
from recsys.settings import DEFAULT_EVENT_WEIGHTS, load_settings
from recsys.userstate import Limits, UserState, fold_in_inputs

W = DEFAULT_EVENT_WEIGHTS


def test_negative_events_and_low_ratings_weigh_negatively():
    assert event_weight("dislike", None, W) == -W["dislike"]
    assert event_weight("hide", None, W) == -W["hide"]
    assert event_weight("view", None, W) == W["view"]
    # Ratings up to the threshold: the lower, the more negative.
    one, two = (event_weight("rating", r, W, 2.0) for r in (1.0, 2.0))
    assert one < two < 0
    assert event_weight("rating", 3.0, W, 2.0) == pytest.approx(W["rating"] * 3 / 5)
    # Unset: every rating is a positive, as before.
    assert event_weight("rating", 1.0, W, None) == pytest.approx(W["rating"] / 5)


def test_the_vectorised_rules_equal_the_scalar_rule():
    types = ["view", "dislike", "rating", "rating", "hide", "rating", "transaction", "rating"]
    values = np.array([np.nan, np.nan, 1.0, 2.0, np.nan, 4.0, 3.0, 2.5])
    for threshold in (None, 2.0, 2.5):
        scalar = [event_weight(t, None if np.isnan(v) else v, W, threshold)
                  for t, v in zip(types, values, strict=True)]
        np.testing.assert_allclose(event_weights_array(np.array(types), values, W, threshold),
                                   scalar)
        np.testing.assert_allclose(
            event_weights_of(pd.Series(types, dtype="category"), values, W, threshold), scalar)


def test_confidence_sign_follows_the_weight():
    np.testing.assert_allclose(confidence(np.array([2.0, -2.0]), 3.0), [7.0, -7.0])


@pytest.fixture(scope="module")
def fitted_with_negatives():
    rng = np.random.default_rng(4)
    dense = rng.integers(-2, 4, size=(120, 50)) * (rng.random((120, 50)) < 0.15)
    conf = csr_matrix(np.asarray(confidence(dense.astype(np.float64), 2.0) * (dense != 0),
                                 dtype=np.float32))
    conf.eliminate_zeros()
    model = AlternatingLeastSquares(factors=8, regularization=0.1, iterations=4,
                                    use_cg=False, alpha=1.0, random_state=2)
    model.fit(conf, show_progress=False)
    return model, conf


def test_fold_in_with_negative_confidences_matches_implicit(fitted_with_negatives):
    model, conf = fitted_with_negatives
    assert (conf.data < 0).any()
    yty = gram(model.item_factors)
    for user in range(0, 120, 5):
        row = conf[user]
        ours = fold_in(model.item_factors, yty, model.regularization, row.indices, row.data)
        theirs = model.recalculate_user(user, row)
        err = np.linalg.norm(ours - theirs) / max(np.linalg.norm(theirs), 1e-12)
        assert err < 1e-4, user


@pytest.mark.parametrize("length", [3, 12, 40])  # Woodbury and normal-equation paths
def test_batch_fold_in_reads_negative_confidences_like_the_single_one(fitted_with_negatives,
                                                                       length):
    model, _ = fitted_with_negatives
    y = model.item_factors
    rng = np.random.default_rng(length)
    histories = []
    for _ in range(6):
        rows = rng.choice(len(y), size=length, replace=False)
        conf = np.asarray(confidence(rng.integers(-3, 4, size=length) + 0.5, 2.0))
        histories.append((rows, conf))
    batch = fold_in_batch(y, gram(y), 0.1, histories)
    for j, (rows, conf) in enumerate(histories):
        single = fold_in(y, gram(y), 0.1, rows, conf)
        np.testing.assert_allclose(batch[j], single, rtol=1e-4, atol=1e-5)


def test_trainer_matrix_and_stream_state_give_the_same_confidences():
    """Same events -> the trainer's confidence row equals the stream's fold-in inputs."""
    events = [("view", "a", None), ("view", "a", None), ("dislike", "a", None),
              ("view", "b", None), ("hide", "b", None), ("addtocart", "c", None),
              ("rating", "d", 1.0), ("rating", "e", 5.0), ("view", "f", None),
              ("dislike", "g", None)]
    settings = load_settings(negative_rating_max=2.0)
    weights, threshold, alpha = settings.event_weights, settings.negative_rating_max, 2.0
    frame = pd.DataFrame({
        "user_id": ["u"] * len(events), "item_id": [i for _, i, _ in events],
        "event_type": pd.Series([t for t, _, _ in events], dtype="category"),
        "value": [np.nan if v is None else v for _, _, v in events],
        "timestamp": np.arange(len(events), dtype=np.int64) + 1_700_000_000_000})
    indexed = index_events(frame, weights, negative_rating_max=threshold)
    matrix = confidence_matrix(indexed, alpha)
    trainer = {str(indexed.item_ids[c]): float(v)
               for c, v in zip(matrix[0].indices, matrix[0].data, strict=True)}

    state = UserState()
    for n, (etype, item, value) in enumerate(events):
        state.apply(f"e{n}", item, event_weight(etype, value, weights, threshold),
                    1_700_000_000_000 + n, 0, n, Limits())
    index = {str(item): n for n, item in enumerate(indexed.item_ids)}
    _, [(rows, conf)] = fold_in_inputs([("u", state)], index, alpha)
    stream = {str(indexed.item_ids[r]): float(c) for r, c in zip(rows, conf, strict=True)}
    assert stream == pytest.approx(trainer)
    assert trainer["a"] < 0 and trainer["g"] < 0 and trainer["d"] < 0 and trainer["c"] > 1
    assert EventType.DISLIKE in {t for t, _, _ in events}


def test_a_dislike_lowers_the_items_score_against_a_view(fitted_with_negatives):
    model, _ = fitted_with_negatives
    y, yty = model.item_factors, gram(model.item_factors)
    base_rows = np.array([1, 2, 3])
    base_conf = np.asarray(confidence(np.array([1.0, 1.0, 4.0]), 2.0))
    target = 7
    scores = {}
    for name, etype in (("view", "view"), ("dislike", "dislike")):
        w = event_weight(etype, None, W)
        x = fold_in(y, yty, 0.1, np.append(base_rows, target),
                    np.append(base_conf, confidence(w, 2.0)))
        scores[name] = float(y[target] @ x)
    without = float(y[target] @ fold_in(y, yty, 0.1, base_rows, base_conf))
    assert scores["dislike"] < without < scores["view"]


def test_negative_ratings_can_be_switched_off_from_the_environment(monkeypatch):
    assert load_settings().negative_rating_max is None  # the default
    monkeypatch.setenv("RECSYS_NEGATIVE_RATING_MAX", "2")
    assert load_settings().negative_rating_max == 2.0
    monkeypatch.setenv("RECSYS_NEGATIVE_RATING_MAX", "off")
    assert load_settings().negative_rating_max is None
    monkeypatch.setenv("RECSYS_NEGATIVE_RATING_MAX", "1.5")
    assert load_settings().negative_rating_max == 1.5
    monkeypatch.setenv("RECSYS_NEGATIVE_RATING_MAX", "6")
    with pytest.raises(Exception, match="NEGATIVE_RATING_MAX"):
        load_settings()
