"""The API key: an empty one is a configuration error, and the API refuses to open its
write endpoints beyond loopback without a key unless told to (api_allow_open_writes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from recsys.errors import ConfigError
from recsys.settings import load_settings
from serving.main import check_write_access, create_app
from shell.localstack import free_port

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_key_is_a_configuration_error(monkeypatch, value):
    monkeypatch.setenv("RECSYS_API_KEY", value)
    with pytest.raises(ConfigError, match="RECSYS_API_KEY: .*empty"):
        load_settings()


@pytest.mark.parametrize(("host", "key", "opt_out", "allowed"), [
    ("127.0.0.1", None, False, True),
    ("::1", None, False, True),
    ("localhost", None, False, True),
    ("0.0.0.0", None, False, False),
    ("::", None, False, False),
    ("10.1.2.3", None, False, False),
    ("api.example.com", None, False, False),
    ("0.0.0.0", "s3cret-key", False, True),
    ("0.0.0.0", None, True, True),
])
def test_open_writes_beyond_loopback_need_an_explicit_opt_out(host, key, opt_out, allowed):
    settings = load_settings(api_key=key, api_allow_open_writes=opt_out, api_host=host)
    if allowed:
        check_write_access(settings, host)
        create_app(settings)
    else:
        with pytest.raises(ConfigError, match="RECSYS_API_ALLOW_OPEN_WRITES"):
            check_write_access(settings, host)
        with pytest.raises(ConfigError):
            create_app(settings)


def _serve(env_extra: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RECSYS_API_")} | {"PYTHONPATH": str(REPO), **env_extra}
    code = "import sys; from shell.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, "serve", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def test_the_serve_command_refuses_before_binding():
    port = str(free_port())
    result = _serve({}, "--host", "0.0.0.0", "--port", port)
    assert result.returncode == 2
    assert "refusing to serve on 0.0.0.0 without an API key" in result.stderr
    result = _serve({"RECSYS_API_KEY": ""}, "--port", port)
    assert result.returncode == 2 and "RECSYS_API_KEY" in result.stderr
