"""`recsys items load` against a real Redis: the whole file is validated before anything is
written (a bad row: exit 1, the row named, the catalogue untouched), then written in
batches with one generation step; the API's catalogue reads what it wrote."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.catalog_codec import decode_facets, decode_item
from recsys.keys import Keys
from recsys.settings import get_settings
from shell.cli import main

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
MAPPING = ("item_id=sku,name=title,category=path,brand=maker,price=cost,tags=labels,"
           "description=text,image_url=img,available=stock")


@pytest.fixture
def env(settings, monkeypatch):
    monkeypatch.setenv("RECSYS_REDIS_URL", settings.redis_url)
    monkeypatch.setenv("RECSYS_REDIS_NAMESPACE", settings.redis_namespace)
    get_settings.cache_clear()
    yield settings
    get_settings.cache_clear()


def test_load_writes_every_item_in_batches_with_one_generation_step(env, redis_client):
    keys = Keys(env.redis_namespace)
    redis_client.set(keys.catalog_generation, 7)
    assert main(["items", "load", f"csv:{FIXTURES / 'shop_items.csv'}", "--map", MAPPING,
                 "--batch-size", "2"]) == 0
    assert int(redis_client.get(keys.catalog_generation)) == 8
    pan = decode_item("p1", redis_client.hgetall(keys.item("p1")))
    assert pan.title == "Cast iron pan" and pan.brand == "Acme" and pan.price == 19.5
    assert pan.category_paths == (("home", "kitchen", "pans"), ("sale",))
    assert redis_client.hget(keys.catalog_category, "p1") == b"pans"
    assert redis_client.sismember(keys.catalog_unavailable, "p2")
    facets = decode_facets("p1", redis_client.hget(keys.catalog_facets, "p1"))
    assert facets.tags == ("new", "iron") and facets.attributes["colour"] == "black"
    assert redis_client.hlen(keys.catalog_category) == 3


def test_a_bad_row_writes_nothing_and_names_the_row(env, redis_client, tmp_path, capsys):
    keys = Keys(env.redis_namespace)
    path = tmp_path / "items.csv"
    rows = [f"ok{n},{n}" for n in range(50)] + ["bad,twelve"] + ["ok99,1"]
    path.write_text("sku,cost\n" + "\n".join(rows) + "\n")
    assert main(["items", "load", f"csv:{path}", "--map", "item_id=sku,price=cost",
                 "--batch-size", "10"]) == 1
    assert "row 52, field price: price 'twelve' is not a number" in capsys.readouterr().err
    assert redis_client.hlen(keys.catalog_category) == 0
    assert not redis_client.exists(keys.item("ok0"), keys.catalog_generation)


def test_retailrocket_items_and_a_dry_run(env, redis_client):
    keys = Keys(env.redis_namespace)
    spec = f"retailrocket:{FIXTURES / 'retailrocket_items'}"
    assert main(["items", "load", spec, "--dry-run"]) == 0
    assert redis_client.hlen(keys.catalog_category) == 0
    assert main(["items", "load", spec]) == 0
    assert decode_item("100", redis_client.hgetall(keys.item("100"))).category_paths == (
        ("1", "2", "3"),)
    assert redis_client.sismember(keys.catalog_unavailable, "101")
