"""MovieLens item attributes: u.item (ML-100K) and movies.dat (ML-1M)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from recsys.sources import SourceError
from recsys.sources.movielens import load_movielens_items
from tests.conftest import SHARED_DATA

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_u_item_genres_title_year_and_latin1() -> None:
    items = load_movielens_items(FIXTURES / "movielens_u.item")
    assert [i.item_id for i in items] == ["1", "2", "267", "4"]
    toy = items[0]
    assert toy.title == "Toy Story (1995)"
    assert toy.category_paths == (("Animation",), ("Children's",), ("Comedy",))
    assert toy.attributes == {"year": 1995}
    assert items[1].category_paths == (("Action",), ("Adventure",), ("Thriller",))
    assert items[2].attributes == {}  # no date, no year in the title
    assert items[3].title == "Café au lait (1993)" and items[3].attributes == {"year": 1993}


def test_movies_dat_genres_and_year_from_title(tmp_path: Path) -> None:
    gz = tmp_path / "movies.dat.gz"
    gz.write_bytes(gzip.compress((FIXTURES / "movielens_movies.dat").read_bytes()))
    items = load_movielens_items(gz)
    assert [i.item_id for i in items] == ["1", "2", "3"]
    assert items[1].category_paths == (("Adventure",), ("Children's",), ("Fantasy",))
    assert items[2].title == "Café Society (1995)" and items[2].attributes == {"year": 1995}


@pytest.mark.parametrize(("text", "message"), [
    ("1|Title|||url|0|1\n", "line 1: expected 24"),
    ("1::A (1990)::Drama\n1::B (1991)::Comedy\n", "line 2: duplicate item id '1'"),
    ("1|T|||u|" + "|".join(["2"] * 19) + "\n", "genre flags must be 0 or 1"),
    ("::No id (1990)::Drama\n", "item_id"),
])
def test_bad_rows_name_line_and_field(tmp_path: Path, text: str, message: str) -> None:
    name = "movies.dat" if "::" in text else "u.item"
    path = tmp_path / name
    path.write_text(text, encoding="latin-1")
    with pytest.raises(SourceError, match=message):
        load_movielens_items(path)


def test_missing_file_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not found"):
        load_movielens_items(tmp_path / "u.item")


def test_shared_ml100k_and_ml1m_items() -> None:
    ml100k = SHARED_DATA / "movielens-100k" / "u.item.gz"
    ml1m = SHARED_DATA / "movielens-1m" / "movies.dat.gz"
    if not (ml100k.exists() and ml1m.exists()):
        pytest.skip("shared MovieLens item files not present")
    assert len(load_movielens_items(ml100k)) == 1682
    movies = load_movielens_items(ml1m)
    assert len(movies) == 3883 and all("year" in m.attributes for m in movies)
