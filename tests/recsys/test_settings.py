import pytest

from recsys.errors import ConfigError
from recsys.settings import DEFAULT_EVENT_WEIGHTS, load_settings


def test_defaults_are_valid():
    settings = load_settings()
    assert settings.event_weights == DEFAULT_EVENT_WEIGHTS
    assert settings.kafka_config()["bootstrap.servers"] == settings.kafka_bootstrap_servers


def test_reads_plain_and_prefixed_environment(monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "a:1, b:2")
    monkeypatch.setenv("RECSYS_ALS_FACTORS", "32")
    monkeypatch.setenv("RECSYS_EVENT_WEIGHTS", '{"transaction": 10}')
    settings = load_settings()
    assert settings.kafka_bootstrap_servers == "a:1,b:2"
    assert settings.als_factors == 32
    assert settings.event_weights["transaction"] == 10 and settings.event_weights["view"] == 1


@pytest.mark.parametrize("var,value", [
    ("KAFKA_BOOTSTRAP_SERVERS", "no-port"),
    ("REDIS_URL", "http://x"),
    ("RECSYS_ALS_FACTORS", "zero"),
    ("RECSYS_ALPHA", "-1"),
    ("RECSYS_EVENT_WEIGHTS", '{"like": 1}'),
    ("RECSYS_TRAINER_GATE_METRIC", "auc"),
    ("RECSYS_INTERACTIONS_TOPIC", "bad topic"),
])
def test_bad_value_names_the_variable(monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert var in str(info.value)
