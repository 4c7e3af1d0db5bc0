"""Serving against a Redis Cluster vs one Redis node: the same personalised phase on both.

    python -m bench.cluster_bench [--quick]

For each backend in turn (one `redis-server`; a local 3-master Redis Cluster started by the
embedded stack), the serving benchmark's 50,000 x 64 catalogue and users are published with
the trainer's functions, one API process (`recsys serve`) is started against it, and
personalised requests (k = 64) run at a fixed 300 req/s (open loop, latency from each
request's scheduled send time) after a warm-up. Printed per backend: p50/p99, the rate
achieved, and the API process's CPU per request. On one machine the three masters share
the cores with the API and the load generator, so the cluster's figures include its own
CPU; what a cluster adds per request is the client's routing (one slot lookup) — the user
read is still one script on one node. The in-process CPU per request (the app without HTTP,
one request at a time: bench.serving_bench._inprocess_cpu) moves least with the machine's
load and is the figure to compare.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import tempfile
from pathlib import Path
from typing import Any

from bench.serving_bench import (
    FACTORS,
    N_ITEMS,
    NAMESPACE,
    RATE,
    K,
    _Api,
    _inprocess_cpu,
    _percentiles,
    _publish,
    _run_load,
    _seed_history,
)

log = logging.getLogger(__name__)


def measure(cluster: bool, quick: bool) -> dict[str, Any]:
    from recsys.keys import Keys
    from recsys.redis_client import redis_client
    from recsys.settings import load_settings
    from shell.localstack import LocalStack, free_port

    duration = 5.0 if quick else 20.0
    n_users = 5_000 if quick else 20_000
    with LocalStack(redis_cluster=cluster) as stack, \
            tempfile.TemporaryDirectory(prefix="cluster-bench-") as logs:
        env = {**stack.env(), "RECSYS_REDIS_NAMESPACE": NAMESPACE, "RECSYS_LOG_LEVEL": "WARNING"}
        settings = load_settings(redis_url=stack.redis_url, redis_cluster=cluster,
                                 redis_namespace=NAMESPACE)
        keys = Keys.for_settings(settings)
        client = redis_client(settings)
        users = _publish(client, keys, "v50k", N_ITEMS, n_users, seed=0)
        _seed_history(client, keys, users, N_ITEMS)
        client.close()
        rnd = random.Random(7)
        paths = [f"/v1/users/{rnd.choice(users)}/recommendations?k={K}" for _ in range(5000)]
        api = _Api(env, free_port(), Path(logs))
        try:
            api.wait_ready("v50k")
            _run_load({"host": "127.0.0.1", "port": api.port, "phases": [
                {"name": "warmup", "kind": "closed", "paths": paths, "concurrency": 4,
                 "duration": 2.0}]})
            cpu_before = api.cpu_s()
            load = _run_load({"host": "127.0.0.1", "port": api.port, "phases": [
                {"name": "fixed_warmup", "kind": "fixed", "paths": paths[::-1], "rate": RATE,
                 "duration": 2.0, "expect": b'"source":"personalized"'},
                {"name": "fixed", "kind": "fixed", "paths": paths, "rate": RATE,
                 "duration": duration, "expect": b'"source":"personalized"'}]})
            served = len(load["fixed"]["latencies"]) + len(load["fixed_warmup"]["latencies"])
            cpu_ms = (api.cpu_s() - cpu_before) * 1000 / max(1, served)
        finally:
            api.stop()
        inprocess = _inprocess_cpu(stack.redis_url, stack.bootstrap_servers, users,
                                   1000 if quick else 3000, redis_cluster=cluster)
    fixed = load["fixed"]
    p50, p99 = _percentiles(fixed["latencies"])
    return {"p50_ms": p50, "p99_ms": p99, "achieved_rps": fixed["achieved_rps"],
            "requests": len(fixed["latencies"]), "failed_or_not_personalised": fixed["failures"],
            "api_cpu_ms_per_request": cpu_ms, **inprocess}


def run(quick: bool = False) -> dict[str, Any]:
    result: dict[str, Any] = {"n_items": N_ITEMS, "factors": FACTORS, "k": K, "rate": RATE,
                              "load_avg_1m_before": os.getloadavg()[0]}
    result["one_node"] = measure(cluster=False, quick=quick)
    result["cluster_3_masters"] = measure(cluster=True, quick=quick)
    result["load_avg_1m_after"] = os.getloadavg()[0]
    return result


def main(argv: list[str] | None = None) -> int:
    from recsys.blas import set_blas_threads
    from recsys.settings import get_settings

    set_blas_threads(get_settings().blas_threads)  # this process and the roles it starts
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter phases, fewer users")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    result = run(quick=args.quick)
    print(json.dumps(result, indent=2))
    for name in ("one_node", "cluster_3_masters"):
        r = result[name]
        print(f"{name}: personalised k={K} over {N_ITEMS:,} items at {RATE:.0f} req/s: "
              f"p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
              f"{r['achieved_rps']:.0f} req/s achieved, API CPU "
              f"{r['api_cpu_ms_per_request']:.2f} ms/request (in-process, no HTTP: app "
              f"{r['inprocess_cpu_ms_asgi_user']:.2f} ms, recommender "
              f"{r['inprocess_cpu_ms_recommender_user']:.2f} ms), "
              f"{r['failed_or_not_personalised']} failed or not personalised")
    print(f"load average {result['load_avg_1m_before']:.1f} -> "
          f"{result['load_avg_1m_after']:.1f} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
