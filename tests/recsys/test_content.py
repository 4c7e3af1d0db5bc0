"""The content model (recsys.content, recsys.content_fit): features, maps, hybrid score."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.content import (
    ContentError,
    ContentModel,
    FeatureSpace,
    content_profiles,
    fit_feature_space,
    hybrid_user_vectors,
    knn_map,
    normalise_rows,
    ridge_map,
    stacked_items,
)
from recsys.content_fit import ContentConfig, best_blend, fit_content, holdout_of_items
from recsys.item_attributes import ItemAttributes


def _item(i: int, **kw) -> ItemAttributes:
    return ItemAttributes(item_id=f"i{i}", **kw)


def test_ridge_map_recovers_factors_that_are_linear_in_the_features() -> None:
    rng = np.random.default_rng(0)
    features = sp.random(400, 30, density=0.3, random_state=1, format="csr", dtype=np.float64)
    true_map = rng.standard_normal((30, 8))
    factors = features @ true_map
    weights = ridge_map(features, factors, lam=1e-6)
    assert np.allclose(weights, true_map, atol=1e-3)
    new = sp.random(20, 30, density=0.3, random_state=2, format="csr")
    assert np.allclose(new @ weights, new @ true_map, atol=1e-3)


def test_ridge_map_iterative_path_matches_the_closed_form(monkeypatch) -> None:
    import recsys.content as content

    features = sp.random(300, 50, density=0.2, random_state=3, format="csr")
    factors = np.random.default_rng(1).standard_normal((300, 4))
    dense = ridge_map(features, factors, lam=0.5)
    monkeypatch.setattr(content, "_DENSE_SOLVE_MAX", 10)
    assert np.allclose(ridge_map(features, factors, lam=0.5), dense, atol=1e-4)
    with pytest.raises(ContentError, match="lam"):
        ridge_map(features, factors, lam=0.0)
    with pytest.raises(ContentError, match="factor rows"):
        ridge_map(features, factors[:10], lam=1.0)


def test_features_cover_ancestors_brand_price_text_attributes_and_normalise() -> None:
    items = [_item(0, category_paths=(("shoes", "running"),), brand="Acme", price=10.0,
                   title="Fast red runner", attributes={"colour": "red", "year": 2001}),
             _item(1, category_paths=(("shoes", "walking"),), brand="acme", price=90.0,
                   title="Slow red walker", attributes={"colour": "red", "year": 1990}),
             _item(2, category_paths=(("shoes",),), brand="Other", price=50.0,
                   title="runner", attributes={"colour": "blue", "year": 2000})]
    space = fit_feature_space(items, bands=2)
    names = set(space.names)
    # "shoes" is on every item; the leaves, each on one item, are dropped (min_df 2)
    assert {"c:shoes", "b:acme", "a:colour=red", "t:red", "t:runner"} <= names
    assert "c:shoes/running" not in names and "b:other" not in names
    assert any(n.startswith("p:") for n in names) and any(n.startswith("n:year:") for n in names)
    rows = space.transform(items + [None])
    norms = np.sqrt(np.asarray(rows.multiply(rows).sum(axis=1)).ravel())
    assert np.allclose(norms[:3], 1.0, atol=1e-6) and norms[3] == 0.0
    # a new item's unknown words are ignored; its known features still count
    new = space.transform([_item(9, title="unheard-of red words", brand="ACME")])
    assert set(np.asarray(space.names)[new.indices]) == {"t:red", "b:acme"}
    again = FeatureSpace.from_json(space.to_json())
    assert (again.transform(items) != space.transform(items)).nnz == 0


def test_no_shared_feature_is_an_error_naming_why() -> None:
    with pytest.raises(ContentError, match="nothing to relate"):
        fit_feature_space([_item(0, title="alpha"), _item(1, title="beta")])


def test_knn_map_takes_the_factors_of_the_nearest_warm_items() -> None:
    warm = normalise_rows(np.eye(3, dtype=np.float32))
    factors = np.array([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]], np.float32)
    cold = normalise_rows(np.array([[1.0, 0.1, 0.0], [0.0, 0.0, 0.0]], np.float32))
    mapped = knn_map(cold, warm, factors, neighbours=1)
    assert np.allclose(mapped[0], [1.0, 0.0]) and np.allclose(mapped[1], 0.0)


def test_hybrid_score_is_one_dot_product_of_the_stacked_vectors() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((3, 4)), rng.standard_normal((6, 4))
    e = normalise_rows(rng.standard_normal((6, 5)))
    p = content_profiles([np.array([0, 1]), np.array([2]), np.array([], int)], e)
    w, m = 0.3, 2.0
    got = hybrid_user_vectors(x, p, w, m) @ stacked_items(y, e).T
    collab = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ y.T / m
    assert np.allclose(got, (1 - w) * collab + w * p @ e.T, atol=1e-5)
    assert np.allclose(p[2], 0.0)  # an empty history has no content profile
    with pytest.raises(ContentError, match="blend"):
        hybrid_user_vectors(x, p, 1.5, m)


def _genre_world(n_users: int = 200, n_items: int = 120, n_genres: int = 6, seed: int = 0):
    """Each user likes one genre; items carry their genre as category. Factors that know
    genres (one-hot) plus noise; interactions: 8 items of the user's genre."""
    rng = np.random.default_rng(seed)
    genre = np.arange(n_items) % n_genres
    items = [_item(i, category_paths=((f"g{genre[i]}",),), title=f"film {i}")
             for i in range(n_items)]
    taste = rng.integers(n_genres, size=n_users)
    rows, cols = [], []
    for u in range(n_users):
        chosen = rng.choice(np.flatnonzero(genre == taste[u]), 8, replace=False)
        rows += [u] * 8
        cols += chosen.tolist()
    conf = sp.csr_matrix((np.full(len(rows), 5.0, np.float32), (rows, cols)),
                         shape=(n_users, n_items))
    factors = np.eye(n_genres, dtype=np.float32)[genre] + 0.05 * rng.standard_normal(
        (n_items, n_genres)).astype(np.float32)
    return items, conf, factors, genre


def test_fit_content_maps_cold_items_next_to_their_genre_and_round_trips() -> None:
    items, conf, factors, genre = _genre_world()
    warm = np.ones(len(items), dtype=bool)
    model, embeddings = fit_content(items, factors, warm, conf,
                                    ContentConfig(regularization=1.0, embedding_dims=8))
    assert model.map_kind in ("ridge", "knn")
    assert model.record["pseudo_cold_users"] > 0 and model.record["trials"]
    new = [_item(1000, category_paths=(("g2",),))]
    mapped = model.map_factors(new, embeddings, factors)
    assert int(np.argmax(mapped[0])) == 2
    meta, arrays = model.to_payload()
    again = ContentModel.from_payload(meta, arrays)
    assert np.allclose(again.map_factors(new, embeddings, factors), mapped)
    assert np.allclose(again.embeddings(new), model.embeddings(new))
    with pytest.raises(ContentError, match="projection"):
        ContentModel.from_payload(meta, {**arrays, "projection": arrays["projection"][:2]})


def test_factorless_version_gets_a_content_only_model() -> None:
    items, conf, _factors, _genre = _genre_world()
    model, embeddings = fit_content(items, None, np.ones(len(items), bool), conf)
    assert model.map_kind == "none" and embeddings.shape[0] == len(items)
    with pytest.raises(ContentError, match="maps no factors"):
        model.map_factors(items[:1])


def test_blend_weight_is_zero_when_content_is_noise_and_positive_when_it_is_the_signal(
) -> None:
    items, conf, factors, genre = _genre_world()
    hidden = np.zeros(len(items), bool)
    hidden[::5] = True
    holdout = holdout_of_items(conf, hidden)
    n_users = holdout.n_users
    rng = np.random.default_rng(3)
    random_users = rng.standard_normal((n_users, factors.shape[1])).astype(np.float32)
    genre_embeddings = normalise_rows(np.eye(6, dtype=np.float32)[genre])
    noise_embeddings = normalise_rows(rng.standard_normal((len(items), 6)).astype(np.float32))
    profiles_of = lambda e: content_profiles((s for s, _ in holdout.histories()), e)  # noqa: E731
    # collaborative part useless, content = the genre: content must be blended in
    w, scores = best_blend(random_users, profiles_of(genre_embeddings), factors,
                           genre_embeddings, 1.0, holdout, 10)
    assert w > 0 and scores[f"{w:g}"] > scores["0"]
    # collaborative part exact (users' own genre), content noise: w = 0
    true_users = np.eye(6, dtype=np.float32)[[genre[s[0]] for s, _ in holdout.histories()]]
    w, scores = best_blend(true_users, profiles_of(noise_embeddings), factors,
                           noise_embeddings, 1.0, holdout, 10)
    assert w == 0.0
