"""The Redis key layouts: one-node names stay what they always were, and in the cluster
layout every group of keys that one script or transaction touches hashes to one slot."""

from __future__ import annotations

import numpy as np
import pytest
from redis.crc import key_slot

from recsys.errors import ModelIntegrityError
from recsys.keys import POPULARITY_WINDOWS, Keys
from recsys.modelstore import ModelVersion, check_user_layout

ONE_NODE = Keys("ns")
CLUSTER = Keys("ns", user_buckets=64)
USERS = [f"user-{n}" for n in range(200)] + ["ünïcødé", "with:colon", "{braces}"]


def slot(key: str) -> int:
    return key_slot(key.encode())


def test_the_one_node_layout_keeps_its_names():
    k = ONE_NODE
    assert (k.current_model, k.previous_models, k.trainer_lease) == (
        "ns:model:current", "ns:model:previous", "ns:trainer:lease")
    assert k.user_vector_hash("v1", "alice") == k.user_vectors("v1") == "ns:uvec:v1"
    assert k.user_vector_hashes("v1") == ["ns:uvec:v1"]
    assert (k.seen("alice"), k.hidden("alice")) == ("ns:seen:alice", "ns:hidden:alice")
    assert k.model_manifest("v1") == "ns:model:v1:manifest"
    assert k.popularity_alltime("v1") == "ns:pop:alltime:v1"
    assert k.popularity_ref("1h") == "ns:pop:1h:ref"
    assert (k.item("i1"), k.catalog_generation) == ("ns:item:i1", "ns:catalog:generation")
    assert k.catalog_facets == "ns:catalog:facets"
    assert k.same_slot_groups(["a", "b"]) == [["a", "b"]] and not k.cluster


def test_a_users_vector_seen_and_hidden_keys_share_one_slot_in_the_cluster_layout():
    for user in USERS:
        keys = [CLUSTER.user_vector_hash("v1", user), CLUSTER.user_vector_hash("v2", user),
                CLUSTER.seen(user), CLUSTER.hidden(user)]
        assert len({slot(key) for key in keys}) == 1, keys
    # ... and the users are spread over the buckets, whose tags spread over many slots
    buckets = {CLUSTER.user_bucket(user) for user in USERS}
    assert len(buckets) > 40
    assert len({slot(key) for key in CLUSTER.user_vector_hashes("v1")}) > 60


def test_each_script_and_transaction_group_is_one_slot_in_the_cluster_layout():
    k = CLUSTER
    control = [k.current_model, k.previous_models, k.trainer_lease]  # the activation script
    assert len({slot(key) for key in control}) == 1
    version = [k.model_manifest("v7"), k.model_item_ids("v7"), k.model_item_factors("v7"),
               k.model_tower("v7"), k.model_neighbours("v7"),
               k.model_content("v7")]  # one MGET loads a version
    assert len({slot(key) for key in version}) == 1
    assert slot(k.model_manifest("v7")) != slot(k.model_manifest("v8"))
    for window in POPULARITY_WINDOWS:  # the popularity script
        group = [k.popularity(window), k.popularity_ref(window),
                 k.popularity_batch(window, "b1"), k.popularity_applied(window, "topic")]
        assert len({slot(key) for key in group}) == 1
    catalog = [k.item("i1"), k.item("i2"), k.catalog_category, k.catalog_facets,
               k.catalog_unavailable, k.catalog_generation,
               k.catalog_changes]  # one MULTI per batch of PUTs
    assert len({slot(key) for key in catalog}) == 1


def test_same_slot_groups_put_each_bucket_in_one_group():
    groups = CLUSTER.same_slot_groups(USERS)
    assert sorted(u for g in groups for u in g) == sorted(USERS)
    for group in groups:
        assert len({slot(CLUSTER.seen(user)) for user in group}) == 1


def test_every_version_key_maps_back_to_its_version_in_both_layouts():
    for keys in (ONE_NODE, CLUSTER):
        for key in keys.model_keys("2026-01-01T00-00-00"):
            assert keys.version_of(key) == "2026-01-01T00-00-00", key
        for other in (keys.current_model, keys.previous_models, keys.seen("u"),
                      keys.popularity("1h"), keys.item("i")):
            assert keys.version_of(other) is None, other


def test_the_cluster_layout_has_no_single_user_vector_hash():
    with pytest.raises(ValueError, match="user_vector_hash"):
        CLUSTER.user_vectors("v1")


def test_for_settings_picks_the_layout_from_the_cluster_setting():
    class Fake:
        redis_namespace, redis_user_buckets = "x", 32
        redis_cluster = False

    assert Keys.for_settings(Fake()) == Keys("x")
    Fake.redis_cluster = True
    assert Keys.for_settings(Fake()) == Keys("x", user_buckets=32)


@pytest.mark.parametrize(("written", "reader"), [(0, CLUSTER), (64, ONE_NODE),
                                                  (32, CLUSTER)])
def test_a_version_written_in_another_layout_is_refused(written, reader):
    manifest = {"user_buckets": written} if written else {}
    model = ModelVersion("v1", ["i"], np.zeros((1, 2), np.float32), manifest)
    with pytest.raises(ModelIntegrityError, match="RECSYS_REDIS_CLUSTER"):
        check_user_layout(model, reader)
    same = Keys("ns", user_buckets=written)
    assert check_user_layout(model, same) is model


def test_item_fold_in_keys_share_a_slot_per_script_and_belong_to_their_version() -> None:
    from recsys.keys import Keys

    def tag(key: str) -> str:
        return key[key.index("{") + 1:key.index("}")] if "{" in key else key

    for keys in (Keys("ns"), Keys("ns", user_buckets=8)):
        version_keys = [keys.item_vectors("v1"), keys.item_vectors_seq("v1"),
                        keys.item_vectors_updated("v1")]
        if keys.cluster:
            assert len({tag(k) for k in version_keys}) == 1
            assert tag(keys.item_users("i9")) == tag(keys.item_confidences("i9"))
        for key in [*version_keys, keys.item_vectors_refold("v1"), keys.model_user_gram("v1")]:
            assert keys.version_of(key) == "v1", key
            assert key in keys.model_keys("v1")
