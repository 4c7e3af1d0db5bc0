"""`recsys experiment` against the real Redis: create, refuse, report (table, JSON, chart)."""

from __future__ import annotations

import json

import pytest

from recsys.keys import Keys
from recsys.settings import get_settings
from shell.cli import main
from shell.experiment_cli import parse_variant

pytestmark = pytest.mark.integration


@pytest.fixture
def env(settings, monkeypatch):
    monkeypatch.setenv("RECSYS_REDIS_URL", settings.redis_url)
    monkeypatch.setenv("RECSYS_REDIS_NAMESPACE", settings.redis_namespace)
    get_settings.cache_clear()
    yield settings
    get_settings.cache_clear()


def test_parse_variant() -> None:
    assert parse_variant("a=model:0.5") == {"name": "a", "kind": "model", "share": 0.5}
    assert parse_variant("b=model_version:v3:0.5")["value"] == "v3"
    with pytest.raises(ValueError, match="NAME=KIND"):
        parse_variant("nonsense")
    with pytest.raises(ValueError, match="not a number"):
        parse_variant("a=model:half")


def test_create_report_and_refusals(env, redis_client, capsys, tmp_path) -> None:
    keys = Keys(env.redis_namespace)
    assert main(["experiment", "create", "e1", "m=model:0.5", "p=popularity:0.5"]) == 0
    capsys.readouterr()
    assert main(["experiment", "create", "e2", "m=model:0.5", "p=popularity:0.2"]) == 2
    assert "sum to 1" in capsys.readouterr().err
    assert main(["experiment", "create", "e3", "m=model:0.5", "p=popularity:0.5"]) == 2
    assert "'e1' is active" in capsys.readouterr().err
    redis_client.hset(keys.experiment_counts("e1"), mapping={
        "m:impressions": 400, "m:click": 80, "p:impressions": 400, "p:click": 40})
    capsys.readouterr()
    assert main(["experiment", "report", "e1", "--json", "--chart",
                 str(tmp_path / "ctr.png")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [v["name"] for v in report["variants"]] == ["m", "p"]
    assert report["variants"][0]["ctr"] == pytest.approx(0.2)
    assert report["p_value"] < 0.001 and report["enough_data"] is True
    assert (tmp_path / "ctr.png").stat().st_size > 5_000
    assert main(["experiment", "report", "e1", "--min-impressions", "1000"]) == 0
    assert "not enough data yet" in capsys.readouterr().out
