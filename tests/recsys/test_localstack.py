import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest
import redis
from confluent_kafka.admin import AdminClient

from shell.localstack import LocalStack

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_start_answers_and_stop_leaves_nothing_behind():
    with LocalStack() as stack:
        pids = [p.pid for p in stack.processes]
        assert redis.Redis.from_url(stack.redis_url).ping()
        assert AdminClient({"bootstrap.servers": stack.bootstrap_servers}).list_topics(timeout=5)
    assert not any(_alive(pid) for pid in pids)


def test_exception_inside_the_block_still_stops_everything():
    pids = []
    with pytest.raises(RuntimeError), LocalStack() as stack:
        pids = [p.pid for p in stack.processes]
        raise RuntimeError("a failing test")
    assert pids and not any(_alive(pid) for pid in pids)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_parent_killed_or_interrupted_leaves_no_orphans(sig):
    # The child restores Python's Ctrl-C handler: a test run started in the background by a
    # shell without job control inherits SIGINT ignored, and Python keeps that disposition.
    script = textwrap.dedent("""
        import signal, sys, time
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from shell.localstack import LocalStack
        stack = LocalStack().start()
        print(" ".join(str(p.pid) for p in stack.processes), flush=True)
        try:
            time.sleep(60)
        finally:
            stack.stop()
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              env={**os.environ})
    pids = [int(p) for p in parent.stdout.readline().split()]
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    parent.send_signal(sig)
    # stop() gives each of the two processes 5 s for SIGTERM and 5 s after SIGKILL.
    parent.wait(25)
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids)


def test_a_local_redis_cluster_has_three_masters_with_every_slot_and_stops_cleanly():
    from redis.cluster import RedisCluster

    with LocalStack(with_broker=False, redis_cluster=True) as stack:
        pids = [p.pid for p in stack.processes]
        assert len(pids) == 3 and stack.env()["RECSYS_REDIS_CLUSTER"] == "true"
        client = RedisCluster.from_url(stack.redis_url)
        try:
            assert len(client.get_primaries()) == 3
            info = redis.Redis.from_url(stack.redis_url).cluster("info")
            assert info["cluster_state"] == "ok" and int(info["cluster_slots_ok"]) == 16384
            client.set("{a}x", "1")
            assert client.get("{a}x") == b"1"
        finally:
            client.close()
    assert not any(_alive(pid) for pid in pids)
