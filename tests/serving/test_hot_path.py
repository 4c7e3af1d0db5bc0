"""The personalised route's shortcuts give the answers of the plain way: parameters as
FastAPI reads them (or FastAPI's own 422), and the JSON that serialising the entries gives."""

from __future__ import annotations

import math

import orjson
import pytest

import serving.routes.recommendations as recommendations
from recsys.item_attributes import ItemAttributes
from recsys.item_filter import ItemFilter
from serving.catalog import detail_members
from serving.deps import plain_user_params
from serving.fallback import Result
from serving.responses import OrjsonResponse, render

pytestmark = pytest.mark.anyio

# (path user id, query string): plain ones, and the unusual or invalid ones that must take
# FastAPI's way.
CASES = [
    ("u1", ""), ("u1", "k=5"), ("u1", "k=500"), ("u1", "k=64&exclude_seen=false"),
    ("u1", "exclude_seen=1"), ("u1", "exclude_seen=0"), ("u1", "category=cat0&k=3"),
    ("u%C3%A9%2C%22x", "category=a%20b"), ("u1", "category=a+b"),
    ("u1", "k=05"), ("u1", "k=+5"), ("u1", "k=%205"), ("u1", "k=5.0"), ("u1", "k=0"),
    ("u1", "k=501"), ("u1", "k=99999999999"), ("u1", "k=%D9%A1"), ("u1", "k="),
    ("u1", "k=1&k=2"), ("u1", "exclude_seen=False"), ("u1", "exclude_seen=no"),
    ("u1", "exclude_seen=perhaps"), ("u1", "category="), ("u1", "category=%0A"),
    ("u1", "category=a%0A"), ("u1", "category=%20"), ("u1", "category=" + "c" * 129),
    ("u1", "other=1"), ("u1", "k"), ("%20", ""), ("%01u", ""), ("u%0A", ""),
    ("u" * 128, ""), ("u" * 129, ""),
    ("u1", "brand=x&brand=y&price_min=1&price_max=5.5&tag=t&attr=colour:red"),
    ("u1", "category_path=a/b&category=c&available=false"), ("u1", "price_min=5&price_max=1"),
    ("u1", "price_min=abc"), ("u1", "price_min=1&price_min=2"), ("u1", "attr=nocolon"),
    ("u1", "category_path=a//b"), ("u1", "available=maybe"), ("u1", "price_max=inf"),
]


class Echo:
    """Stands in for the recommender call: answers with the parameters it was given."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, services, user_id, k, exclude_seen, filters, offset=0):
        self.calls += 1
        return OrjsonResponse({"user_id": user_id, "k": k, "exclude_seen": exclude_seen,
                               "filters": filters.key if filters else None, "offset": offset})


@pytest.mark.integration
async def test_shortcut_reads_parameters_as_fastapi_does(client, monkeypatch):
    echo = Echo()
    monkeypatch.setattr(recommendations, "_for_user", echo)
    answers = {}
    for user, query in CASES:
        r = await client.get(f"/v1/users/{user}/recommendations?{query}")
        answers[user, query] = (r.status_code, r.json())
    monkeypatch.setattr(recommendations, "plain_user_params", lambda *_: None)
    for user, query in CASES:
        r = await client.get(f"/v1/users/{user}/recommendations?{query}")
        assert (r.status_code, r.json()) == answers[user, query], (user, query)
    assert echo.calls == 2 * sum(status == 200 for status, _ in answers.values())
    assert answers["u1", "k=0"][0] == answers["u1", "category=%0A"][0] == 422


def test_shortcut_takes_only_plain_requests():
    assert plain_user_params("u1", [], 500) == ("u1", 10, True, None)
    assert plain_user_params("u1", [("k", "64"), ("exclude_seen", "false"),
                                    ("category", "a b")], 500) == (
        "u1", 64, False, ItemFilter(categories=("a b",)))
    # Filters are repeatable and parsed by the core's parser, as FastAPI's path does.
    assert plain_user_params("u1", [("brand", "x"), ("brand", "y"), ("price_max", "5")],
                             500) == ("u1", 10, True,
                                      ItemFilter(brands=("x", "y"), price_max=5.0))
    for user, query in [("u1", [("k", "501")]), ("u1", [("k", "007")]), ("u\n", []),
                        ("u1", [("k", "2"), ("k", "3")]), ("u1", [("x", "1")]),
                        ("u1", [("category", "")]), ("u1", [("price_min", "x")]),
                        ("u1", [("price_min", "5"), ("price_max", "1")])]:
        assert plain_user_params(user, query, 500) is None


class Catalog:
    def __init__(self, details):
        self.details = details

    async def detail_members(self, ids):
        return [detail_members(self.details.get(i)) for i in ids]


class Metrics:
    def count_response(self, endpoint, source):
        pass


async def test_render_is_the_serialised_entries():
    details = {"a,\"b": ItemAttributes("a,\"b", title="Ünïcode, \"quoted\"",
                                       category_paths=(("c",),), price=9.5,
                                       attributes={"k": "v"}),
               "plain": ItemAttributes("plain", available=False)}
    shown = {"a,\"b": {"name": "Ünïcode, \"quoted\"", "category": "c", "price": 9.5,
                       "available": True, "attributes": {"k": "v"}},
             "plain": {"available": False, "attributes": {}}}
    ids = ["a,\"b", "plain", "no details", "é"]
    scores = [0.1234567, -2.5e-08, float("nan"), 1e300]
    for items in ([], list(zip(ids, scores, strict=True))):
        result = Result(items, "fallback:x", None, ["trending:24h"])
        body = (await render(result, Catalog(details), Metrics(), "user", user_id="u")).body
        expected = orjson.dumps({
            "user_id": "u",
            "items": [{"item_id": i, "score": s, **shown.get(i, {})} for i, s in items],
            "model_version": None, "source": "fallback:x", "fallback_sources": ["trending:24h"]})
        assert body == expected
    assert math.isnan(scores[2])  # serialised as null, as before


@pytest.mark.integration
async def test_personalised_survives_a_flushed_script_cache(published, client, redis_client):
    """The one-trip read is a server-side script: after a Redis restart or SCRIPT FLUSH
    (NOSCRIPT) it is loaded again, and the answer is still the model's."""
    first = (await client.get("/v1/users/u1/recommendations", params={"k": 5})).json()
    redis_client.script_flush()
    again = (await client.get("/v1/users/u1/recommendations", params={"k": 5})).json()
    # Each served list has its own recommendation_id; the rest is the same answer.
    assert again.pop("recommendation_id") != first.pop("recommendation_id")
    assert again == first and again["source"] == "personalized"
    stranger = (await client.get("/v1/users/nobody/recommendations")).json()
    assert stranger["source"] == "fallback:unknown_user"
