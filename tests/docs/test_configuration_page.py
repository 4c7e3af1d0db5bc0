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
        assert f"| `{name}` |" in text
    assert "`KAFKA_BOOTSTRAP_SERVERS` (or `RECSYS_KAFKA_BOOTSTRAP_SERVERS`)" in text
    assert "`REDIS_URL` (or `RECSYS_REDIS_URL`)" in text
    assert "`RECSYS_ALS_FACTORS`" in text


def test_row_shows_type_default_and_bounds() -> None:
    rows = {line.split(" | ")[0]: line for line in render_markdown().splitlines()}
    assert rows["| `topic_partitions`"] == (
        "| `topic_partitions` | `RECSYS_TOPIC_PARTITIONS` | int | `4` | >= 1, <= 1024 | "
        "Partitions when the project creates the interactions topic. |"
    )
    assert "| float, optional | unset | > 0.0 |" in rows["| `trainer_time_decay_days`"]
    assert "| secret string, optional | unset |" in rows["| `api_key`"]
    assert "| one of `1h`, `24h`, `7d` |" in rows["| `api_fallback_window`"]


def test_cells_never_split_the_table() -> None:
    class Piped(Settings):
        piped: str = Field(default="a", pattern=r"^[a|b]+$", description="x | y")

    row = next(line for line in render_markdown(Piped).splitlines() if "`piped`" in line)
    # Six cells: seven unescaped pipes.
    assert len(re.findall(r"(?<!\\)\|", row)) == 7


def test_a_new_field_changes_the_page() -> None:
    class Extended(Settings):
        extra_knob: int = Field(default=7, ge=0, description="A knob added later.")

    text = render_markdown(Extended)
    assert text != render_markdown()
    assert "| `extra_knob` | `RECSYS_EXTRA_KNOB` | int | `7` | >= 0 | A knob added later. |" in text
