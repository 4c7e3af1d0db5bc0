"""MovieLens ratings: ML-100K `u.data` (tab-separated) and ML-1M/10M `ratings.dat` (`::`);
movie attributes: `u.item` and `movies.dat` (`load_movielens_items`).

Each rating becomes a `rating` event with value 1-5; timestamps are unix seconds in the files
and milliseconds in frames. Gzip-compressed files are read transparently.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pandas as pd

from recsys.item_attributes import ItemAttributes
from recsys.sources import SourceError, make_frame


def load_movielens(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    name = path.name.removesuffix(".gz")
    try:
        if name.endswith(".dat"):
            raw = pd.read_csv(path, sep="::", engine="python", header=None,
                              names=["user", "item", "rating", "ts"], encoding="latin-1")
        else:
            raw = pd.read_csv(path, sep="\t", header=None, names=["user", "item", "rating", "ts"])
        return make_frame(
            user_id=raw["user"], item_id=raw["item"], event_type="rating",
            timestamp=raw["ts"].astype("int64") * 1000, value=raw["rating"],
            event_id=("ml-" + raw["user"].astype(str) + "-" + raw["item"].astype(str)),
        )
    except FileNotFoundError:
        raise SourceError(f"MovieLens file not found: {path}") from None
    except (ValueError, TypeError, pd.errors.ParserError) as exc:
        # A missing column or a non-numeric timestamp lands here.
        raise SourceError(f"{path}: not a MovieLens ratings file "
                          f"(user item rating timestamp): {exc}") from None


# --- item attributes -------------------------------------------------------------------------
# ML-100K u.item: the 19 genre flags, in the order of u.genre
ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical",
                 "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")
_TITLE_YEAR = re.compile(r"\((\d{4})\)\s*$")


def load_movielens_items(path: str | Path) -> list[ItemAttributes]:
    """Item attributes of MovieLens movies: ML-100K `u.item` (pipe-separated: id, title,
    release date, video date, IMDb URL, 19 genre flags) or ML-1M/10M `movies.dat`
    (`id::title::genre|genre`). Genres become one-level category paths, the release year
    (from the date, else from the title's "(1995)") `attributes["year"]`. Latin-1, .gz ok."""
    path = Path(path)
    name = path.name.removesuffix(".gz")
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="latin-1") as handle:
            lines = [line.rstrip("\r\n") for line in handle]
    except FileNotFoundError:
        raise SourceError(f"MovieLens item file not found: {path}") from None
    except OSError as exc:
        raise SourceError(f"{path}: cannot read: {exc}") from None
    parse = _movies_dat_row if name.endswith(".dat") else _u_item_row
    items: list[ItemAttributes] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = parse(line).validate()
        except (ValueError, IndexError) as exc:  # InvalidItemAttributes is a ValueError
            raise SourceError(f"{path} line {number}: {exc}") from None
        if item.item_id in seen:
            raise SourceError(f"{path} line {number}: duplicate item id {item.item_id!r}")
        seen.add(item.item_id)
        items.append(item)
    return items


def _year(date: str, title: str) -> int | None:
    date = date.strip()
    if len(date) >= 4 and date[-4:].isdigit():
        return int(date[-4:])
    match = _TITLE_YEAR.search(title)
    return int(match.group(1)) if match else None


def _movie(item_id: str, title: str, genres: list[str], year: int | None) -> ItemAttributes:
    return ItemAttributes(item_id=item_id.strip(), title=title.strip() or None,
                          category_paths=tuple((g,) for g in genres),
                          attributes={"year": year} if year is not None else {})


def _u_item_row(line: str) -> ItemAttributes:
    fields = line.split("|")
    if len(fields) != 5 + len(ML100K_GENRES):
        raise ValueError(f"expected {5 + len(ML100K_GENRES)} '|'-separated fields "
                         f"(id|title|date|video date|url|19 genre flags), got {len(fields)}")
    flags = fields[5:]
    if any(flag not in ("0", "1") for flag in flags):
        raise ValueError("genre flags must be 0 or 1")
    genres = [g for g, flag in zip(ML100K_GENRES, flags, strict=True) if flag == "1"]
    return _movie(fields[0], fields[1], genres, _year(fields[2], fields[1]))


def _movies_dat_row(line: str) -> ItemAttributes:
    fields = line.split("::")
    if len(fields) != 3:
        raise ValueError(f"expected id::title::genres, got {len(fields)} field(s)")
    genres = [g for g in fields[2].split("|") if g and g != "(no genres listed)"]
    return _movie(fields[0], fields[1], genres, _year("", fields[1]))
