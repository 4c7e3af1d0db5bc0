"""A model switch removes the replaced version's `recsys_api_model_version_info` series, in
single-process mode and in multiprocess mode (where a label set cannot be removed from the
files: retired versions are dropped at exposure)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client import generate_latest

from serving.telemetry import ApiMetrics

REPO = Path(__file__).resolve().parents[2]
SCRIPT = """
from prometheus_client import generate_latest
from serving.telemetry import ApiMetrics
m = ApiMetrics()
for n in range(1, 6):
    m.set_model(f"v{n}", 10, 0.0, f"v{n - 1}" if n > 1 else None)
print(generate_latest(m.exposed).decode())
"""


def _versions(text: str) -> list[str]:
    return [line for line in text.splitlines()
            if line.startswith("recsys_api_model_version_info{")]


def test_single_process_keeps_only_the_served_version():
    metrics = ApiMetrics()
    for n in range(1, 6):
        metrics.set_model(f"v{n}", 10, 0.0, f"v{n - 1}" if n > 1 else None)
    assert _versions(generate_latest(metrics.exposed).decode()) == [
        'recsys_api_model_version_info{version="v5"} 1.0']


def test_multiprocess_exposure_drops_retired_versions(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=REPO, text=True,
                         capture_output=True, timeout=60, check=True).stdout
    assert _versions(out) == ['recsys_api_model_version_info{version="v5"} 1.0']
