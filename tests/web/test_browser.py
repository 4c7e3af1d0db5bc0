"""The storefront, the API docs and the admin console in a real (headless) Chromium against
the real local stack. The measured first paint and panel refresh times are logged and
written to reports/screenshots/timings.json, not asserted: they are not timing tests."""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.web.conftest import API_KEY, SCREENSHOTS, Shop, screenshot

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.browser]

log = logging.getLogger(__name__)

TARGET = "books"


def panel(page: Any) -> tuple[list[str], str]:
    ids = page.locator("#recommended [data-item-id]").evaluate_all(
        "nodes => nodes.map(n => n.dataset.itemId)")
    return ids, page.locator("#panel").get_attribute("data-source") or ""


def share(shop: Shop, ids: list[str], category: str) -> float:
    return sum(shop.category_of[i] == category for i in ids) / max(len(ids), 1)


def record(timings: dict[str, Any]) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / "timings.json"
    merged = {**(json.loads(path.read_text()) if path.exists() else {}), **timings}
    path.write_text(json.dumps(merged, indent=2))
    log.warning("browser timings: %s", timings)


def test_storefront_panel_follows_three_clicks_in_one_category(page, shop):
    page.goto(f"{shop.base_url}/")
    page.wait_for_selector("body[data-ready=true]")
    page.wait_for_selector("#grid [data-item-id]")
    first_paint = page.evaluate("window.recsysTimings.firstPaintMs")
    ready = page.evaluate("window.recsysTimings.readyMs")
    visitor = page.locator("#visitor").get_attribute("data-user-id")
    assert visitor and visitor.startswith("anon-")
    before_ids, before_source = panel(page)
    assert before_ids and not before_source.startswith("personalized")
    trending = page.locator("#trending [data-item-id]").count()
    assert trending > 0
    screenshot(page, "storefront")

    refresh_ms: list[float | None] = []
    clicked: list[str] = []
    for n in range(3):
        page.goto(f"{shop.base_url}/?category={TARGET}")
        tiles = page.locator("#grid [data-item-id]")
        tiles.first.wait_for()
        assert {shop.category_of[i] for i in tiles.evaluate_all(
            "nodes => nodes.map(n => n.dataset.itemId)")} == {TARGET}
        tile = tiles.nth(n * 5)  # three different products of the category
        clicked.append(tile.get_attribute("data-item-id"))
        tile.locator("a").click()
        page.wait_for_url(f"**/product/{clicked[-1]}")
        page.wait_for_selector("#panel[data-refreshes]", timeout=10_000)
        value = page.locator("#panel").get_attribute("data-refresh-ms")
        refresh_ms.append(float(value) if value is not None else None)
    screenshot(page, "product")

    after_ids, after_source = panel(page)
    assert after_source == "personalized", after_source
    assert not set(after_ids) & set(clicked)  # seen items are left out
    before_share, after_share = share(shop, before_ids, TARGET), share(shop, after_ids, TARGET)
    assert after_share >= 0.75, (Counter(shop.category_of[i] for i in after_ids), after_ids)
    assert after_share > before_share
    similar = page.locator("#similar [data-item-id]").evaluate_all(
        "nodes => nodes.map(n => n.dataset.itemId)")
    assert similar and share(shop, similar, TARGET) >= 0.5
    assert not shop.foreign_requests, shop.foreign_requests
    page.goto(f"{shop.base_url}/")
    page.wait_for_selector("body[data-ready=true]")
    page.wait_for_selector("#panel[data-source=personalized]")
    screenshot(page, "storefront-personalised")
    record({"storefront_first_paint_ms": first_paint, "storefront_ready_ms": ready,
            "panel_refresh_ms": refresh_ms, "panel_share_before": before_share,
            "panel_share_after": after_share})


def test_add_to_cart_and_buy_post_events_and_refresh_the_panel(page, shop):
    item = shop.model.items_of(4)[0]
    page.goto(f"{shop.base_url}/product/{item}")
    page.wait_for_selector("#panel[data-refreshes='1']", timeout=10_000)
    for button in ("#add-to-cart", "#buy"):
        page.locator(button).click()
        expected = "2" if button == "#add-to-cart" else "3"
        page.wait_for_selector(f"#panel[data-refreshes='{expected}']", timeout=10_000)
        assert "error" not in (page.locator("#action-status").get_attribute("class") or "")
    ids, source = panel(page)
    assert source == "personalized" and share(shop, ids, "sports") >= 0.75


def test_unknown_product_gets_a_friendly_404(page, shop):
    response = page.goto(f"{shop.base_url}/product/no-such-product")
    assert response is not None and response.status == 404
    assert "could not find" in page.locator("main").inner_text()
    page.get_by_role("link", name="Back to all products").click()
    page.wait_for_selector("body[data-ready=true]")


def test_docs_render_every_operation_offline(page, shop):
    page.goto(f"{shop.base_url}/docs")
    page.wait_for_selector(".opblock", timeout=20_000)
    rendered = page.locator(".opblock").count()
    paths = page.request.get(f"{shop.base_url}/openapi.json").json()["paths"]
    operations = sum(len(methods) for methods in paths.values())
    assert rendered == operations
    assert page.locator(".opblock-summary-path", has_text="/v1/events").count() >= 1
    screenshot(page, "docs")
    page.goto(f"{shop.base_url}/redoc")
    page.wait_for_selector("[data-section-id]", timeout=20_000)
    assert not shop.foreign_requests, shop.foreign_requests


def test_admin_shows_only_a_prompt_until_logged_in_then_the_served_model(page, shop):
    admin_calls: list[str] = []
    page.on("request", lambda r: admin_calls.append(r.url) if "/v1/admin" in r.url else None)
    page.goto(f"{shop.base_url}/admin")
    page.wait_for_selector("#api-key")
    assert page.locator("#console").is_hidden()
    assert not admin_calls  # nothing is asked for without a key
    page.fill("#api-key", "wrong-key")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_selector("#login-error:not(:empty)")
    assert page.locator("#console").is_hidden()
    page.fill("#api-key", API_KEY)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_selector("#console:not([hidden])")
    assert page.locator("#served-version").inner_text() == "v1"
    assert page.locator("#versions td", has_text="0.4200").count() == 1  # ndcg@10 of v1
    expect(page.locator("#stream-lag")).to_have_text(re.compile(r"^\d+$"))
    page.wait_for_selector("#trending td")
    screenshot(page, "admin")
    # The key lives in this tab's sessionStorage: a new visitor sees the prompt again.
    assert page.evaluate("sessionStorage.getItem('recsys_admin_key')") == API_KEY
    assert not shop.foreign_requests, shop.foreign_requests


def test_admin_catalogue_upload_writes_through_the_bulk_api(page, shop, tmp_path):
    upload = tmp_path / "items.csv"
    upload.write_text('item_id,name,category,price,colour\n'
                      'new-1,"Lamp, brass",garden,19.5,gold\n'
                      'new-2,Kettle,kitchen,25,red\n')
    page.goto(f"{shop.base_url}/admin")
    page.fill("#api-key", API_KEY)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_selector("#console:not([hidden])")
    page.set_input_files("#items-file", str(upload))
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#upload-status")).to_have_text("Stored 2 items.")
    item = page.request.get(f"{shop.base_url}/v1/items/new-1").json()
    assert (item["name"], item["category"], item["price"], item["attributes"]) == (
        "Lamp, brass", "garden", 19.5, {"colour": "gold"})
    bad = tmp_path / "bad.json"
    bad.write_text('[{"item_id": "new-3", "price": -1}]')
    page.set_input_files("#items-file", str(bad))
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#upload-status")).to_contain_text("refused")
    assert page.request.get(f"{shop.base_url}/v1/items/new-3").status == 404


def test_storefront_is_usable_with_the_keyboard_alone(page, shop):
    page.goto(f"{shop.base_url}/")
    page.wait_for_selector("body[data-ready=true]")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.keyboard.press("Enter")
    focused = None
    for _ in range(40):
        page.keyboard.press("Tab")
        focused = page.evaluate(
            "document.activeElement.closest('#grid [data-item-id]')?.dataset.itemId ?? null")
        if focused:
            break
    assert focused, "no product tile in the grid could be reached with Tab"
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/product/{focused}")
    page.wait_for_selector("#product[data-item-id]")
    page.locator("#add-to-cart").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#action-status")).to_have_text("Added to your cart.")
