"""Experiment variants that change the model: another version, a model kind, a hybrid weight.
Through the real app and a real Redis; the expected lists come from the core's maths."""

from __future__ import annotations

import time

import numpy as np
import pytest

from recsys.content import content_profiles, hybrid_user_vectors, stacked_items
from recsys.experiments import Experiment
from recsys.foldin import fold_in, gram
from recsys.modelstore import stage_model_version
from tests.serving.conftest import fit_model, manifest, running_app, with_overrides
from tests.serving.test_content_serving import _publish_with_content, _published_content
from trainer.publish import collect_orphans, new_version_id

pytestmark = [pytest.mark.anyio, pytest.mark.integration]
KEY = {"X-API-Key": "s3cret"}


def _users_in(config: dict, users: list[str], variant: str, name: str = "exp") -> list[str]:
    experiment = Experiment.model_validate({"name": name, **config})
    return [u for u in users if experiment.assign(u).name == variant]


async def test_a_user_in_a_version_variant_gets_that_versions_fold_in(
        settings, published, redis_client, keys) -> None:
    # another version, staged beside the served one (fitted on another seed)
    items, _users, other_factors, _uf, _seen, _cat = fit_model(seed=11)
    other = new_version_id(time.time() - 3600)
    stage_model_version(redis_client, keys, other, items, other_factors,
                        manifest(other, len(items), other_factors.shape[1]))
    config = {"variants": [{"name": "ctl", "kind": "model", "share": 0.5},
                           {"name": "old", "kind": "model_version", "value": other,
                            "share": 0.5}]}
    async with running_app(with_overrides(settings, api_key="s3cret")) as http:
        put = await http.put("/v1/admin/experiments/exp", headers=KEY, json=config)
        assert put.status_code == 200, put.text
        assert put.json()["variants"][1]["version"] == other
        in_variant = _users_in(config, published.user_ids, "old")[:5]
        in_control = _users_in(config, published.user_ids, "ctl")[:2]
        bodies = {u: (await http.get(f"/v1/users/{u}/recommendations?k=5")).json()
                  for u in in_variant + in_control}
    for user in in_control:
        assert bodies[user]["variant"] == "ctl" and bodies[user]["model_version"] == "v1"
    # the variant: the user's seen items (views: c = 1 + alpha) folded in against the other
    # version's factors (recsys.foldin), seen items excluded
    index = {item: n for n, item in enumerate(items)}
    for user in in_variant:
        body = bodies[user]
        assert body["variant"] == "old" and body["model_version"] == other, body
        assert body["source"] == "personalized"
        rows = np.asarray(sorted(index[i] for i in published.seen[user]))
        vector = fold_in(other_factors, gram(other_factors), 0.05, rows,
                         np.full(len(rows), 1.0 + 2.0 * 1.0))
        scores = other_factors @ vector
        scores[rows] = -np.inf
        best = np.argsort(-scores, kind="stable")[:5]
        assert [e["item_id"] for e in body["items"]] == [items[r] for r in best]
        np.testing.assert_allclose([e["score"] for e in body["items"]], scores[best],
                                   rtol=1e-4)
    # the variant's version outlives garbage collection while the experiment names it
    assert collect_orphans(redis_client, keys, {"v1"}, grace_s=0.0) == []
    assert redis_client.exists(keys.model_manifest(other))
    redis_client.hdel(keys.experiments, "exp")
    assert collect_orphans(redis_client, keys, {"v1"}, grace_s=0.0) == [other]


async def test_the_hybrid_weight_variant_scores_with_its_weight(
        fitted, settings, redis_client, keys) -> None:
    items, category_of, seen = _publish_with_content(redis_client, keys, fitted, blend=0.5)
    config = {"variants": [{"name": "ctl", "kind": "model", "share": 0.5},
                           {"name": "w9", "kind": "hybrid_weight", "value": 0.9,
                            "share": 0.5}]}
    _items, users, item_factors, user_factors, _seen, _cat = fitted
    async with running_app(with_overrides(settings, api_key="s3cret")) as http:
        put = await http.put("/v1/admin/experiments/exp", headers=KEY, json=config)
        assert put.status_code == 200, put.text
        chosen = _users_in(config, users, "w9")[:3] + _users_in(config, users, "ctl")[:3]
        bodies = {u: (await http.get(f"/v1/users/{u}/recommendations?k=6")).json()
                  for u in chosen}
    model, embeddings = _published_content["vc1"]
    index = {item: n for n, item in enumerate(items)}
    changed = 0
    for user, body in bodies.items():
        weight = 0.9 if body["variant"] == "w9" else 0.5
        recent = [index[i] for i in seen[user]]  # seeded most recent first
        profile = content_profiles([np.asarray(recent)], embeddings)
        vector = hybrid_user_vectors(user_factors[users.index(user)][None, :], profile, weight,
                                     model.factor_scale)[0]
        scores = (stacked_items(item_factors, embeddings) @ vector).astype(np.float64)
        scores[recent] = -np.inf
        best = np.argsort(-scores, kind="stable")[:6]
        assert body["source"] == "hybrid"
        assert [e["item_id"] for e in body["items"]] == [items[r] for r in best], body
        np.testing.assert_allclose([e["score"] for e in body["items"]], scores[best],
                                   rtol=1e-4)
        if weight == 0.9:
            control = hybrid_user_vectors(user_factors[users.index(user)][None, :], profile,
                                          0.5, model.factor_scale)[0]
            changed += not np.allclose(stacked_items(item_factors, embeddings)[best] @ control,
                                       scores[best], rtol=1e-4)
    assert changed == 3  # the weight moved every variant user's scores


async def test_bad_variant_configs_are_refused_with_the_reason(settings, published) -> None:
    def put(*variants: dict) -> dict:
        return {"variants": [{"name": "ctl", "kind": "model", "share": 0.5},
                             *[{**v, "share": 0.5} for v in variants]]}

    async with running_app(with_overrides(settings, api_key="s3cret")) as http:
        cases = {
            "needs a served version with a content model":
                put({"name": "w", "kind": "hybrid_weight", "value": 0.3}),
            "hybrid_weight needs a weight in [0, 1]":
                put({"name": "w", "kind": "hybrid_weight", "value": 1.5}),
            "no retained model version of kind 'item_item' (retained kinds: als)":
                put({"name": "k", "kind": "model_kind", "value": "item_item"}),
            "model_kind needs the model kind as value": put({"name": "k", "kind": "model_kind"}),
            "unknown model version 'v404'":
                put({"name": "v", "kind": "model_version", "value": "v404"}),
        }
        for message, body in cases.items():
            answer = await http.put("/v1/admin/experiments/bad", headers=KEY, json=body)
            assert answer.status_code == 422 and message in answer.json()["detail"], (
                message, answer.text)
        ok = await http.put("/v1/admin/experiments/kind", headers=KEY,
                            json=put({"name": "k", "kind": "model_kind", "value": "als"}))
        assert ok.status_code == 200 and ok.json()["variants"][1]["version"] == "v1", ok.text
        # the kind's version is the served one: its users get the control's stored vectors
        user = _users_in(put({"name": "k", "kind": "model_kind", "value": "als"}),
                         published.user_ids, "k", name="kind")[0]
        body = (await http.get(f"/v1/users/{user}/recommendations?k=3")).json()
        assert body["variant"] == "k" and body["model_version"] == "v1"
        scores = published.scores(user)
        assert body["items"][0]["score"] == pytest.approx(
            float(np.max(np.delete(scores, [published.item_ids.index(i)
                                            for i in published.seen[user]]))), rel=1e-5)
