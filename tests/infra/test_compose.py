"""The production compose file validates with a real compose implementation, and every role
it starts runs a command that the `recsys` CLI really has."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from shell.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


def _compose_config() -> dict:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is missing: `make setup` installs Debian's docker-compose")
    result = subprocess.run(
        [binary, "-f", str(COMPOSE), "config"], capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "GRAFANA_ADMIN_PASSWORD": "test-only",
             "RECSYS_API_KEY": "test-only-key"}, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_file_is_valid_and_complete():
    config = _compose_config()
    services = config["services"]
    assert {"kafka", "redis", "stream", "trainer", "api", "prometheus", "grafana"} <= set(services)
    assert "--appendonly" in services["redis"]["command"]
    command = services["redis"]["command"]
    # bounded memory; only keys with a TTL are evictable (never model keys)
    assert command[command.index("--maxmemory") + 1]
    assert command[command.index("--maxmemory-policy") + 1] == "volatile-lru"
    # the worker's health is its processing loop, not the metrics thread
    assert "/healthz" in " ".join(services["stream"]["healthcheck"]["test"])
    for name, service in services.items():
        assert service.get("restart") == "unless-stopped", name
        assert "healthcheck" in service, name
    # Scaling with --scale needs no fixed container name and no host port on the worker.
    assert "container_name" not in services["stream"] and "ports" not in services["stream"]
    assert set(config["volumes"]) >= {"kafka-data", "redis-data", "trainer-data"}


def test_compose_refuses_to_start_grafana_without_a_password():
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True,
        cwd=ROOT, env={**{k: v for k, v in os.environ.items() if k != "GRAFANA_ADMIN_PASSWORD"},
                       "RECSYS_API_KEY": "test-only-key"},
        timeout=60,
    )
    assert result.returncode != 0 and "GRAFANA_ADMIN_PASSWORD" in result.stderr


@pytest.mark.parametrize("value", [None, ""])
def test_compose_refuses_to_start_the_api_without_a_key(value):
    env = {k: v for k, v in os.environ.items() if k != "RECSYS_API_KEY"}
    env["GRAFANA_ADMIN_PASSWORD"] = "test-only"
    if value is not None:
        env["RECSYS_API_KEY"] = value
    result = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "-q"],
                            capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert result.returncode != 0 and "RECSYS_API_KEY" in result.stderr


def test_only_the_api_gets_the_key():
    services = _compose_config()["services"]
    assert services["api"]["environment"]["RECSYS_API_KEY"] == "test-only-key"
    assert "RECSYS_API_KEY" not in services["stream"]["environment"]
    assert "RECSYS_API_KEY" not in services["trainer"]["environment"]
    assert services["api"]["environment"]["REDIS_URL"] == "redis://redis:6379/0"


def test_no_secret_values_in_the_compose_file():
    text = COMPOSE.read_text().lower()
    for word in ("password:", "api_key:", "secret:"):
        for line in text.splitlines():
            if word in line:
                assert "${" in line, f"literal secret in compose file: {line.strip()}"


def test_every_role_command_exists_in_the_cli():
    config = _compose_config()
    parser = build_parser()
    roles = {name: s for name, s in config["services"].items() if "build" in s}
    assert set(roles) == {"stream", "trainer", "api", "attribution"}
    for name, service in roles.items():
        try:
            args = parser.parse_args(service["command"])
        except SystemExit:
            pytest.fail(f"service {name}: `recsys {' '.join(service['command'])}` is not a "
                        "valid command")
        assert callable(args.handler)
