"""The trainer fits and publishes a content model with the version when the catalogue
describes its items (real Redis, real run)."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.content_catalogue import attributes_from_hash
from recsys.keys import Keys
from recsys.modelstore import load_model
from recsys.sources import synthetic
from trainer.publish import CONTENT_FILE, version_dir

from .conftest import FAST

pytestmark = pytest.mark.integration


def _write_catalogue(redis_client, keys: Keys, n_events: int) -> int:
    items = synthetic.catalog(seed=3, n_events=n_events)
    pipe = redis_client.pipeline(transaction=False)
    for row in items.itertuples():
        pipe.hset(keys.item(row.item_id), mapping={
            "name": row.name, "category": str(row.category_id), "price": repr(row.price),
            "available": "1", "attributes": f'{{"parent": "{row.parent_category_id}"}}'})
    pipe.execute()
    return len(items)


def test_version_carries_its_content_model(make_trainer, small_frame, redis_client,
                                           settings) -> None:
    keys = Keys(settings.redis_namespace)
    _write_catalogue(redis_client, keys, 15_000)
    trainer = make_trainer(params=FAST)
    trainer.store.append(small_frame)
    result = trainer.run_once()
    assert result.published
    record = result.manifest["content"]
    assert record["fitted"] and record["described_items"] == result.manifest["n_items"]
    assert 0.0 <= record["blend"] <= 1.0 and record["n_features"] > 10
    model = load_model(redis_client, keys, result.version)
    assert model.content is not None
    assert model.item_embeddings.shape == (len(model.item_ids),
                                           model.content.projection.shape[1])
    if model.uses_factors:
        assert record["map"] in ("ridge", "knn") and "blend_ndcg" in record
        assert record["trials"]  # what the map choice measured is in the manifest
    else:
        assert record["map"] == "none"
    assert (version_dir(settings.model_dir, result.version) / CONTENT_FILE).exists()
    assert keys.model_content(result.version) in keys.model_keys(result.version)


def test_without_a_catalogue_the_version_says_why_it_has_no_content(
        make_trainer, small_frame, redis_client, settings) -> None:
    trainer = make_trainer(params=FAST)
    trainer.store.append(small_frame)
    result = trainer.run_once()
    assert result.published
    assert result.manifest["content"] == {
        "fitted": False, "reason": "no item of the version has attributes in the catalogue"}
    assert load_model(redis_client, Keys(settings.redis_namespace),
                      result.version).content is None


def test_catalogue_hash_decoding_is_tolerant_and_bounded() -> None:
    item = attributes_from_hash("a", {b"name": b"Red shoe", b"category": b"shoes", b"price": b"x",
                                b"attributes": b'{"colour": "red", "n": [1]}'})
    assert item is not None and item.title == "Red shoe" and item.price is None
    assert item.category_paths == (("shoes",),) and dict(item.attributes) == {"colour": "red"}
    assert attributes_from_hash("b", {}) is None
    assert attributes_from_hash("c", {"name": "x" * 10_000}) is None  # over the title bound
    assert np.isfinite(attributes_from_hash("d", {"price": "12.5"}).price)
