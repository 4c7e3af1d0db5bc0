"""docs/configuration.md is generated from the Settings model and must not go stale."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field

from recsys.settings import Settings
from recsys.settings_reference import render_markdown

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_configuration_page_is_the_generated_text() -> None:
    assert PAGE.exists(), "docs/configuration.md is missing: run `make docs`"
    assert PAGE.read_text(encoding="utf-8") == render_markdown(), (
        "docs/configuration.md is stale (recsys/settings.py changed): run `make docs` and commit"
    )


def test_every_setting_has_a_description() -> None:
    missing = [name for name, info in Settings.model_fields.items() if not info.description]
    assert not missing, f"Settings fields without a description: {missing}"


def test_every_setting_and_its_env_var_appear_on_the_page() -> None:
    text = render_markdown()
    for name in Settings.model_fields:
        assert f"<br>field `{name}` |" in text
    assert "| `KAFKA_BOOTSTRAP_SERVERS`<br>or `RECSYS_KAFKA_BOOTSTRAP_SERVERS`<br>field " in text
    assert "| `REDIS_URL`<br>or `RECSYS_REDIS_URL`<br>field `redis_url` |" in text
    assert "| `RECSYS_ALS_FACTORS`<br>field `als_factors` |" in text


def _rows() -> dict[str, str]:
    return {line.split("<br>field ")[1].split(" |")[0]: line
            for line in render_markdown().splitlines() if "<br>field `" in line}


def test_row_shows_type_default_and_bounds() -> None:
    rows = _rows()
    assert rows["`topic_partitions`"] == (
        "| `RECSYS_TOPIC_PARTITIONS`<br>field `topic_partitions` | int, >= 1, <= 1024 | `4` | "
        "Partitions when the project creates the interactions topic. |"
    )
    assert "| float, optional, > 0.0 | unset |" in rows["`trainer_time_decay_days`"]
    assert "| secret string, optional | unset |" in rows["`api_key`"]
    assert "| str, one of `1h`, `24h`, `7d` | `24h` |" in rows["`api_fallback_window`"]


def test_cells_never_split_the_table() -> None:
    class Piped(Settings):
        piped: str = Field(default="a", pattern=r"^[a|b]+$", description="x | y")

    row = next(line for line in render_markdown(Piped).splitlines() if "`piped`" in line)
    # Four cells: five unescaped pipes.
    assert len(re.findall(r"(?<!\\)\|", row)) == 5


def test_a_new_field_changes_the_page() -> None:
    class Extended(Settings):
        extra_knob: int = Field(default=7, ge=0, description="A knob added later.")

    text = render_markdown(Extended)
    assert text != render_markdown()
    assert (
        "| `RECSYS_EXTRA_KNOB`<br>field `extra_knob` | int, >= 0 | `7` | A knob added later. |"
    ) in text
