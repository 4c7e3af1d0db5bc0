"""The image builds from every package the project ships, with the locked versions."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "infra" / "Dockerfile").read_text(encoding="utf-8")


def test_every_packaged_package_is_copied_into_the_build() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = [p.rstrip("*") for p in include]
    copied = set(re.findall(r"^COPY (\w+) \1$", DOCKERFILE, re.M))
    missing = [p for p in packages if p not in copied]
    assert not missing, f"infra/Dockerfile does not COPY {missing}: the image would lack them"


def test_wheels_are_built_with_the_lock() -> None:
    assert "COPY requirements/lock.txt" in DOCKERFILE
    assert re.search(r"pip wheel .*-c requirements/lock\.txt", DOCKERFILE)
