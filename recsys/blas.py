"""The one place that sets how many threads BLAS (OpenBLAS under numpy, scipy, implicit) runs.

Every process here already has its own parallelism (implicit's fit threads, the trainer's
ranking pool, one stream worker or API process per core), so a threaded BLAS under it
oversubscribes the two cores; the setting `blas_threads` (RECSYS_BLAS_THREADS, default 1)
says how many. `set_blas_threads` is called by every entry point (`recsys` in shell/cli.py,
the benchmarks, the test session) before any work:

* it writes OPENBLAS_NUM_THREADS, which OpenBLAS reads when it is loaded: this process if
  numpy is not imported yet, and every child process (workers, uvicorn, subprocesses),
  which inherit the environment;
* it applies the same limit through threadpoolctl to a BLAS that is already loaded.

recsys.als narrows BLAS to one thread around an ALS fit whatever the setting: implicit's own
threads do that work.
"""

from __future__ import annotations

import os

ENV_VAR = "OPENBLAS_NUM_THREADS"


def set_blas_threads(threads: int) -> None:
    """Limit BLAS to `threads` threads in this process and the processes it starts."""
    from threadpoolctl import threadpool_limits

    if threads < 1:
        raise ValueError(f"BLAS threads must be >= 1, got {threads}")
    os.environ[ENV_VAR] = str(threads)
    threadpool_limits(limits=threads, user_api="blas")  # a no-op when no BLAS is loaded yet
