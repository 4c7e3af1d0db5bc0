"""Every role against a real 3-master Redis Cluster: the trainer publishes and activates
versions whose user vectors are spread over the masters, a real stream worker process
writes users' vectors and seen items into their buckets, and the API answers a
personalised list from them. Plus the start-up check of the mode, both ways."""

from __future__ import annotations

import asyncio
import time
import uuid

import numpy as np
import pytest
from pydantic import SecretStr

from recsys.errors import ConfigError
from recsys.events import Event
from recsys.modelstore import (
    Fenced,
    activate_version,
    load_model,
    read_current_version,
    rollback_version,
    unpack_vector,
)
from recsys.redis_client import acheck_redis_mode, check_redis_mode, redis_client
from recsys.settings import Settings
from recsys.sources import synthetic
from tests.cluster.conftest import TEST_BUCKETS, nodes_holding
from tests.serving.conftest import fit_model, running_app
from tests.serving.conftest import publish as publish_serving
from tests.stream.conftest import (
    FACTORS,
    WorkerProcess,
    expected_vector,
    produce,
    relative_error,
    wait_until,
)
from tests.stream.conftest import publish as publish_stream
from tests.trainer.conftest import FAST, START_MS
from trainer.lease import TrainerLease
from trainer.pipeline import Trainer, history_store
from trainer.publish import collect_orphans, redis_versions
from trainer.telemetry import TrainerMetrics

pytestmark = pytest.mark.integration


def test_trainer_publishes_activates_collects_and_rolls_back_on_the_cluster(
        cluster_settings, cluster_client, cluster_keys):
    keys = cluster_keys
    run_settings = cluster_settings.model_copy(update={"trainer_gate_tolerance": 0.99,
                                                       "trainer_keep_versions": 2})
    with TrainerLease(cluster_client, keys, ttl_s=60) as lease:  # fenced activations
        trainer = Trainer(run_settings, redis=cluster_client, metrics=TrainerMetrics(),
                          store=history_store(run_settings), params=FAST, lease=lease)
        trainer.store.append(synthetic.generate(15_000, seed=3, start_ms=START_MS, days=20))
        versions = [trainer.run_once().version for _ in range(3)]
        token = lease.token
    # a trainer whose lease was taken over cannot move the pointer (one script, one slot)
    cluster_client.set(keys.trainer_lease, "another-trainer")
    with pytest.raises(Fenced):
        activate_version(cluster_client, keys, versions[1], fence=(keys.trainer_lease, token))

    assert read_current_version(cluster_client, keys) == versions[2]
    model = load_model(cluster_client, keys)
    assert model.version == versions[2] and model.manifest["user_buckets"] == TEST_BUCKETS
    buckets = keys.user_vector_hashes(versions[2])
    sizes = [cluster_client.hlen(key) for key in buckets]
    assert sum(sizes) == model.manifest["n_users"] > 0
    filled = [key for key, n in zip(buckets, sizes, strict=True) if n]
    assert len(nodes_holding(cluster_client, filled)) == 3  # spread over every master
    # keep 2: the oldest version is gone from every slot, its buckets included
    assert cluster_client.exists(*keys.model_keys(versions[0])) == 0
    # the pointer, the rollback list and the lease move together in one slot
    assert rollback_version(cluster_client, keys) == (versions[1], versions[2])
    assert load_model(cluster_client, keys).version == versions[1]
    # orphan collection SCANs every master for version keys, buckets included
    assert redis_versions(cluster_client, keys) == {versions[1], versions[2]}
    assert set(collect_orphans(cluster_client, keys, {versions[1]}, grace_s=0)) == {versions[2]}
    assert redis_versions(cluster_client, keys) == {versions[1]}
    assert not any(cluster_client.exists(k) for k in keys.user_vector_hashes(versions[2]))


def test_a_stream_worker_writes_vectors_and_seen_items_into_the_users_buckets(
        cluster_settings, cluster_client, cluster_keys, clustered, tmp_path):
    keys = cluster_keys
    publish_stream(cluster_client, keys, "v1", clustered)
    worker = WorkerProcess(cluster_settings, tmp_path, "cluster-worker")
    try:
        worker.wait_assigned()
        users = {f"c{n}-{uuid.uuid4().hex[:6]}": clustered.items_of(n)[:4] for n in range(4)}
        events = [Event.create(user, item, "view") for user, items in users.items()
                  for item in items]
        produce(cluster_settings, events)

        def landed() -> bool:
            return all(cluster_client.hexists(keys.user_vector_hash("v1", user), user)
                       and cluster_client.zcard(keys.seen(user)) == len(items)
                       for user, items in users.items())

        wait_until(landed, 30, message=f"no vectors in the cluster:\n{worker.log_tail()}")
    finally:
        worker.stop()
    for user, items in users.items():
        raw = cluster_client.hget(keys.user_vector_hash("v1", user), user)
        mine = [e for e in events if e.user_id == user]
        want = expected_vector(mine, clustered, cluster_settings.event_weights)
        assert relative_error(unpack_vector(raw, FACTORS), want) < 1e-4
        assert {m.decode() for m in cluster_client.zrange(keys.seen(user), 0, -1)} == set(items)
    assert cluster_client.zcard(keys.popularity("1h")) > 0  # the window's script ran too


@pytest.mark.anyio
async def test_the_api_answers_from_the_cluster_and_rolls_back_there(
        cluster_settings, cluster_client, cluster_keys):
    items, users, item_factors, user_factors, seen, _ = fit_model()
    for version in ("v1", "v2"):
        publish_serving(cluster_client, cluster_keys, version, items, item_factors, users,
                        user_factors)
    now_ms = int(time.time() * 1000)
    for user in users[:4]:
        cluster_client.zadd(cluster_keys.seen(user), {i: now_ms for i in seen[user]})
    admin = {"X-API-Key": "cluster-test-key"}
    settings = cluster_settings.model_copy(update={"api_key": SecretStr(admin["X-API-Key"])})
    async with running_app(settings) as http:
        for user in users[:4]:
            r = await http.get(f"/v1/users/{user}/recommendations", params={"k": 5})
            assert r.status_code == 200
            body = r.json()
            assert body["source"] == "personalized" and body["model_version"] == "v2"
            got = [i["item_id"] for i in body["items"]]
            scores = item_factors @ user_factors[users.index(user)]
            allowed = [i for i in np.argsort(-scores) if items[i] not in seen[user]]
            assert got == [items[i] for i in allowed[:5]]
        # manifests of several versions: several slots, read by the admin route
        models = (await http.get("/v1/admin/models", headers=admin)).json()
        assert [v["version"] for v in models["versions"]] == ["v2", "v1"]
        r = await http.post("/v1/admin/models/rollback", headers=admin)
        assert r.status_code == 200, r.text
        # erasure finds the user's vectors of every version in their bucket
        gone = users[0]
        assert (await http.delete(f"/v1/users/{gone}", headers=admin)).status_code == 202
    assert read_current_version(cluster_client, cluster_keys) == "v1"
    assert not any(cluster_client.hexists(cluster_keys.user_vector_hash(v, gone), gone)
                   for v in ("v1", "v2"))
    assert not cluster_client.exists(cluster_keys.seen(gone))
    assert cluster_client.hexists(cluster_keys.user_vector_hash("v1", users[1]), users[1])


def _one_node(settings: Settings, url: str) -> Settings:
    return Settings.model_validate({**settings.model_dump(), "redis_url": url,
                                    "redis_cluster": False})


def test_a_cluster_given_to_one_node_code_is_refused_at_start_up_naming_the_setting(
        cluster_settings, redis_cluster_url):
    one_node = _one_node(cluster_settings, redis_cluster_url)
    client = redis_client(one_node)
    try:
        with pytest.raises(ConfigError, match="RECSYS_REDIS_CLUSTER"):
            check_redis_mode(client, one_node)
    finally:
        client.close()


def test_one_node_redis_given_to_cluster_code_is_refused_at_start_up(settings, redis_url):
    clustered = Settings.model_validate({**settings.model_dump(), "redis_cluster": True})
    with pytest.raises(ConfigError, match="RECSYS_REDIS_CLUSTER is true"):
        redis_client(clustered)


@pytest.mark.anyio
async def test_the_api_refuses_to_start_on_a_mode_mismatch(cluster_settings,
                                                           redis_cluster_url):
    from recsys.redis_client import async_redis_client

    one_node = _one_node(cluster_settings, redis_cluster_url)
    client = async_redis_client(one_node)
    try:
        with pytest.raises(ConfigError, match="cluster mode"):
            await acheck_redis_mode(client, one_node)
    finally:
        await client.aclose()
    with pytest.raises(ConfigError):
        async with running_app(one_node):
            pass


@pytest.mark.anyio
async def test_the_api_degrades_when_no_cluster_node_answers(cluster_settings):
    from shell.localstack import free_port

    down = Settings.model_validate({**cluster_settings.model_dump(),
                                    "redis_url": f"redis://127.0.0.1:{free_port()}/0",
                                    "api_redis_timeout_s": 0.2})
    async with running_app(down) as http:
        r = await http.get("/v1/users/u1/recommendations", params={"k": 3})
    assert r.status_code == 200
    assert r.json()["source"] == "fallback:redis_unavailable"


@pytest.mark.anyio
async def test_concurrent_first_commands_on_a_fresh_cluster_client_all_succeed(
        cluster_settings, cluster_keys):
    """redis-py 8.1's asyncio cluster client failed about one fresh client in two here when
    50 commands were its first (AttributeError inside the connection); the API's first
    requests after a start are exactly that."""
    from recsys.redis_client import async_redis_client
    from serving.recommender import USER_STATE_LUA

    for _ in range(4):
        client = async_redis_client(cluster_settings)
        script = client.register_script(USER_STATE_LUA)
        users = [f"u{n}" for n in range(50)]
        try:
            answers = await asyncio.gather(*(
                script(keys=[cluster_keys.user_vector_hash("v", u), cluster_keys.seen(u),
                             cluster_keys.hidden(u)], args=[u, 5]) for u in users))
            assert all(a[0] is None for a in answers)
        finally:
            await client.aclose()
