"""The configuration reference, generated from the `Settings` model.

`docs/configuration.md` is the output of `render_markdown()`: `make docs` writes it and a test
fails when the file differs, so the page cannot drift from the code. Pure: it reads the model's
field metadata (name, alias, type, default, description, numeric bounds, pattern) and returns
text; it touches no file and no environment.
"""

from __future__ import annotations

import json
import re
import types
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import annotated_types
from pydantic import AliasChoices, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from recsys.settings import Settings

# Field-name prefix -> section title, in page order; everything else is shared by the roles.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("", "Shared: connections, topics, storage, model"),
    ("stream_", "Stream worker (`recsys stream`)"),
    ("trainer_", "Trainer (`recsys train`)"),
    ("api_", "Serving API (`recsys serve`)"),
)

HEADER = """\
# Configuration

<!-- Generated from recsys/settings.py by `make docs` (recsys.settings_reference).
     Do not edit by hand: a test fails when this file differs from the generated text. -->

Every role (producer, stream worker, trainer, API) reads one frozen `Settings` object
(`recsys/settings.py`) once at start-up, from the environment or an optional `.env` file in
the working directory, and passes it down. A bad value stops start-up with a message that
names the variable (exit code 2).

- Environment variables are the field names upper-cased with the prefix `RECSYS_`
  (`RECSYS_ALS_FACTORS=64`), except the two connection strings the wider ecosystem already
  names, `KAFKA_BOOTSTRAP_SERVERS` and `REDIS_URL` (their `RECSYS_` forms work too).
- Dict-valued settings take JSON
  (`RECSYS_EVENT_WEIGHTS='{"view": 1, "transaction": 10}'`).
- Unknown `RECSYS_*` variables are ignored.
"""


def env_names(name: str, info: FieldInfo) -> list[str]:
    """Environment variables that set the field, the preferred one first."""
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices]
    if isinstance(alias, str):
        return [alias]
    return [f"RECSYS_{name.upper()}"]


def type_name(annotation: Any) -> str:
    """A reader's name for a field type: `int`, `float, optional`, `JSON object`..."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        inner = " or ".join(type_name(a) for a in args)
        return f"{inner}, optional" if len(args) < len(get_args(annotation)) else inner
    if origin is dict:
        key, value = get_args(annotation)
        return f"JSON object ({type_name(key)} -> {type_name(value)})"
    if annotation is SecretStr:
        return "secret string"
    if annotation is Path:
        return "path"
    return getattr(annotation, "__name__", str(annotation))


def default_text(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value = info.default_factory()
    elif info.default is PydanticUndefined:
        return "(required)"
    else:
        value = info.default
    if value is None:
        return "unset"
    if isinstance(value, dict):
        return "`" + json.dumps(value) + "`"
    return f"`{value}`"


def constraints_text(info: FieldInfo) -> str:
    parts: list[str] = []
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge):
            parts.append(f">= {item.ge}")
        elif isinstance(item, annotated_types.Gt):
            parts.append(f"> {item.gt}")
        elif isinstance(item, annotated_types.Le):
            parts.append(f"<= {item.le}")
        elif isinstance(item, annotated_types.Lt):
            parts.append(f"< {item.lt}")
        elif getattr(item, "pattern", None):
            parts.append(_pattern_text(item.pattern))
    return ", ".join(parts)


def _pattern_text(pattern: str) -> str:
    # `^(1h|24h|7d)$` reads better as a list, and keeps pipes (which the Markdown renderers
    # escape differently inside code) out of the table.
    choices = re.fullmatch(r"\^\(([\w.-]+(?:\|[\w.-]+)+)\)\$", pattern)
    if choices:
        return "one of " + ", ".join(f"`{c}`" for c in choices.group(1).split("|"))
    return f"matches `{pattern}`"


def _cell(text: str) -> str:
    # A pipe would end the table cell; newlines would end the row.
    return " ".join(text.split()).replace("|", "\\|")


def _section_of(name: str) -> str:
    for prefix, _title in SECTIONS[1:]:
        if name.startswith(prefix):
            return prefix
    return ""


def render_markdown(settings_cls: type[Settings] = Settings) -> str:
    """The whole configuration page as Markdown."""
    lines = [HEADER]
    for prefix, title in SECTIONS:
        fields = [(n, f) for n, f in settings_cls.model_fields.items() if _section_of(n) == prefix]
        if not fields:
            continue
        lines += [f"## {title}", ""]
        lines.append("| environment variable / field | type | default | meaning |")
        lines.append("|---|---|---|---|")
        for name, info in fields:
            envs = env_names(name, info)
            # <br> keeps the table at four columns (GitHub and MkDocs both render it).
            variable = "<br>".join(
                [f"`{envs[0]}`", *(f"or `{e}`" for e in envs[1:]), f"field `{name}`"]
            )
            kind = type_name(info.annotation)
            bounds = constraints_text(info)
            row = [
                variable,
                f"{kind}, {bounds}" if bounds else kind,
                default_text(info),
                info.description or "",
            ]
            lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":  # make docs: python -m recsys.settings_reference > FILE
    import sys

    sys.stdout.write(render_markdown())
