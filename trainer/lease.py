"""One trainer at a time: a lease in Redis with a fencing token.

Two trainers on one deployment would append to the same history and race to move the model
pointer. Before it touches the history or Redis, `recsys train` takes the lease:

    SET {ns}:trainer:lease <token> NX PX <trainer_lease_ttl_s>

and a daemon thread renews it every third of its lifetime (only while the key still holds
this token: a compare-and-set in Lua). A second trainer waits up to `trainer_lease_wait_s`
for it, then exits with `LeaseHeld` (exit code 3) naming the holder. A trainer killed with
SIGKILL holds the lease until it expires (at most the TTL).

Fencing: the token is also checked inside the activation script
(recsys.modelstore.activate_version, `fence=`), atomically with the pointer switch. A trainer
that lost its lease (a long GC pause, a partition; its renewals failed and another trainer
took over) therefore cannot move the pointer afterwards: its activation raises `Fenced`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from recsys.keys import Keys
from trainer.errors import TrainerError

log = logging.getLogger(__name__)

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LeaseHeld(TrainerError):
    """Another trainer holds the lease (and kept it for longer than this one would wait)."""

    exit_code = 3


class LeaseLost(TrainerError):
    """This trainer's lease expired and another trainer took it over."""

    exit_code = 3


class TrainerLease:
    """Context manager: acquire (waiting at most `wait_s`), renew in the background, release."""

    def __init__(self, redis: Any, keys: Keys, ttl_s: float, wait_s: float = 0.0,
                 poll_s: float = 0.5) -> None:
        self.redis = redis
        self.key = keys.trainer_lease
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.wait_s = wait_s
        self.poll_s = poll_s
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def fence(self) -> tuple[str, str]:
        """What activate_version checks: (lease key, this trainer's token)."""
        return self.key, self.token

    def acquire(self) -> TrainerLease:
        deadline = time.monotonic() + self.wait_s
        while not self.redis.set(self.key, self.token, nx=True, px=self.ttl_ms):
            if time.monotonic() >= deadline:
                holder = self.redis.get(self.key)
                holder = holder.decode() if isinstance(holder, bytes) else holder
                raise LeaseHeld(f"another trainer holds the lease {self.key} ({holder}); "
                                f"waited {self.wait_s:g}s (trainer_lease_wait_s)")
            time.sleep(self.poll_s)
        log.info("trainer lease %s taken (token %s, ttl %d ms)", self.key, self.token,
                 self.ttl_ms)
        self._thread = threading.Thread(target=self._renew_loop, name="trainer-lease",
                                        daemon=True)
        self._thread.start()
        return self

    def _renew_loop(self) -> None:
        interval = self.ttl_ms / 3000.0
        while not self._stop.wait(interval):
            try:
                renewed = self.redis.eval(_RENEW, 1, self.key, self.token, self.ttl_ms)
            except Exception as exc:  # noqa: BLE001 - retried at the next tick; fenced if lost
                log.warning("trainer lease renewal failed: %r", exc)
                continue
            if not renewed:
                self.lost.set()
                log.error("trainer lease %s was lost (expired and taken over); this trainer "
                          "can no longer activate versions", self.key)
                return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.redis.eval(_RELEASE, 1, self.key, self.token)
        except Exception as exc:  # noqa: BLE001 - it expires by itself
            log.warning("could not release the trainer lease (it expires in %d ms): %r",
                        self.ttl_ms, exc)

    def __enter__(self) -> TrainerLease:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
