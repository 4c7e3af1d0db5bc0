"""The trainer builds the approximate-search layout of a large catalogue and publishes it
with the version (same staging, same atomic switch)."""

from __future__ import annotations

import orjson
import pytest

from recsys.ann import ANN_FORMAT, unpack_layout
from recsys.keys import Keys
from recsys.modelstore import load_model

from .conftest import FAST

pytestmark = pytest.mark.integration


def test_a_catalogue_above_the_threshold_is_published_with_its_index(
        make_trainer, small_frame, redis_client, settings):
    keys = Keys(settings.redis_namespace)
    trainer = make_trainer(params=FAST, ann_min_items=10, ann_lists=8)
    trainer.store.append(small_frame)
    result = trainer.run_once()
    assert result.published
    model = load_model(redis_client, keys)
    assert model.version == result.version and model.manifest["ann_format"] == ANN_FORMAT
    layout = unpack_layout(redis_client.get(keys.model_ann(model.version)),
                           len(model.item_ids), model.factors)
    assert layout.n_lists == 8
    assert keys.model_ann(model.version) in keys.model_keys(model.version)


def test_below_the_threshold_no_index_is_published(make_trainer, small_frame, redis_client,
                                                   settings):
    keys = Keys(settings.redis_namespace)
    trainer = make_trainer(params=FAST, ann_min_items=10_000_000)
    trainer.store.append(small_frame)
    version = trainer.run_once().version
    assert redis_client.get(keys.model_ann(version)) is None
    assert "ann_format" not in orjson.loads(redis_client.get(keys.model_manifest(version)))
