"""The API process's heap and Python's cyclic garbage collector.

A served model version and the catalogue are large, long-lived object graphs (id maps,
facet sets, cached views). Left in the collector's oldest generation, every full collection
walks all of them, and a full collection stops the event loop: its pause grows with the
catalogue and lands on whichever requests are waiting (a p99 spike, see docs/benchmarks.md).
After each such load we collect once and freeze what survives (`gc.freeze`), so later
collections walk only what was created since. The next load unfreezes first, so what the
previous version or catalogue left unreachable is still reclaimed.
"""
from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger(__name__)


def settle_after_load(what: str) -> None:
    """Collect everything unreachable, then freeze the survivors (call after a load has
    replaced a model version or the catalogue; one full collection each time)."""
    started = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    log.debug("heap settled after %s: %d objects frozen in %.1f ms", what,
              gc.get_freeze_count(), (time.perf_counter() - started) * 1000)
