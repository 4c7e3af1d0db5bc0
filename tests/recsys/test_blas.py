"""recsys.blas: the one place that sets BLAS threads, for this process and its children."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from recsys.errors import ConfigError
from recsys.settings import load_settings

REPO = Path(__file__).resolve().parents[2]

CHILD = """
import os, subprocess, sys
import numpy  # BLAS loaded first, with its default threads: the limit must still apply
from threadpoolctl import threadpool_info
from recsys.blas import set_blas_threads
from recsys.settings import load_settings
set_blas_threads(load_settings().blas_threads)
blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
grandchild = subprocess.run([sys.executable, "-c",
                             "import os; print(os.environ['OPENBLAS_NUM_THREADS'])"],
                            capture_output=True, text=True, check=True).stdout.strip()
print(blas, grandchild)
"""


@pytest.mark.parametrize("threads", ["1", "2"])
def test_the_setting_limits_a_loaded_blas_and_reaches_child_processes(threads):
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    env.update(RECSYS_BLAS_THREADS=threads, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                         text=True, check=True, timeout=60).stdout.split()
    assert out[-1] == threads  # what a started role inherits
    blas = eval(" ".join(out[:-1]))  # noqa: S307 - our own child's list of ints
    assert blas and all(n == int(threads) for n in blas)


def test_a_bad_value_is_a_config_error_naming_the_variable():
    with pytest.raises(ConfigError, match="RECSYS_BLAS_THREADS"):
        load_settings(blas_threads=0)
    assert load_settings().blas_threads == 1
