// Storefront: plain DOM code over the public JSON API (/v1/...) and the shop's own small API
// (/shop/api/...). Every value from the API goes into the page as text, never as HTML.
"use strict";

const PANEL_K = 8;
const REFRESH_POLL_MS = 150;
const REFRESH_GIVE_UP_MS = 5000;
const PENDING_KEY = "recsys_pending_refresh";

// firstPaintMs: the browser's first contentful paint; readyMs: the grid, the trending strip
// and the panel are on the page (both from navigation start).
const timings = { firstPaintMs: null, readyMs: null, panelRefreshMs: [] };
window.recsysTimings = timings;

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function getJson(url, options) {
  const response = await fetch(url, { credentials: "same-origin", ...options });
  if (!response.ok) {
    const error = new Error(`${url}: HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return response.json();
}

function postJson(url, body, keepalive = false) {
  return getJson(url, {
    method: "POST", keepalive, headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

function imageUrl(item) {
  if (item.image_url && /^(\/|https?:\/\/)/.test(item.image_url)) return item.image_url;
  const category = item.category ? `?category=${encodeURIComponent(item.category)}` : "";
  return `/shop/api/img/${encodeURIComponent(item.item_id)}.svg${category}`;
}

function productUrl(itemId) {
  return `/product/${encodeURIComponent(itemId)}`;
}

function formatPrice(price) {
  return typeof price === "number" ? price.toFixed(2) : "";
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

// A product tile; clicking it records a `click` event and follows the link.
function tile(item) {
  const name = item.name || item.item_id;
  const link = el("a", { href: productUrl(item.item_id) },
    el("img", { src: imageUrl(item), alt: "", width: "160", height: "120", loading: "lazy" }),
    el("p", { class: "name", text: name }),
    el("p", { class: "meta" },
      el("span", { text: item.category || "" }), el("span", { text: formatPrice(item.price) })));
  link.addEventListener("click", () => {
    // The panel is measured from this click to the list changing on the next page.
    sessionStorage.setItem(PENDING_KEY, JSON.stringify({ at: Date.now(), signature: panelSignature }));
    postEvent(item.item_id, "click", true);
  });
  return el("li", { class: "tile", dataset: { itemId: item.item_id,
    category: item.category || "" } }, link);
}

function fillList(list, items, empty) {
  list.replaceChildren(...items.map(tile));
  if (!items.length && empty) list.append(el("li", { class: "status", text: empty }));
}

// --- visitor ------------------------------------------------------------------------------
let visitor = null;

function showVisitor() {
  $("visitor-label").textContent = visitor.anonymous
    ? "Browsing anonymously" : `Logged in as ${visitor.user_id}`;
  $("logout").hidden = visitor.anonymous;
  $("visitor").dataset.userId = visitor.user_id;
}

function visitorFromCookie() {
  const match = document.cookie.match(/(?:^|;\s*)recsys_visitor=([^;]*)/);
  if (!match) return null;
  const userId = decodeURIComponent(match[1].replace(/^"|"$/g, ""));
  return userId ? { user_id: userId, anonymous: userId.startsWith("anon-") } : null;
}

async function initVisitor() {
  // A returning visitor's id is in the cookie; only a new one asks the server for an id.
  visitor = visitorFromCookie() || await getJson("/shop/api/me");
  showVisitor();
  $("visitor").addEventListener("submit", async (event) => {
    event.preventDefault();
    const userId = $("login-id").value.trim();
    if (!userId) { $("login-id").focus(); return; }
    try {
      visitor = await postJson("/shop/api/login", { user_id: userId });
    } catch (error) {
      $("visitor-label").textContent = "That id cannot be used";
      return;
    }
    $("login-id").value = "";
    showVisitor();
    await loadPanel();
  });
  $("logout").addEventListener("click", async () => {
    visitor = await postJson("/shop/api/logout", {});
    showVisitor();
    await loadPanel();
  });
}

function postEvent(itemId, eventType, keepalive = false) {
  return postJson("/shop/api/events", { item_id: itemId, event_type: eventType }, keepalive);
}

// --- recommended-for-you panel ----------------------------------------------------------
let panelSignature = "";

async function loadPanel() {
  const url = `/v1/users/${encodeURIComponent(visitor.user_id)}/recommendations?k=${PANEL_K}`;
  let data;
  try {
    data = await getJson(url);
  } catch (error) {
    $("provenance").textContent = "Recommendations are unavailable right now.";
    return panelSignature;
  }
  const signature = [data.source, data.model_version,
    ...data.items.map((item) => item.item_id)].join("|");
  if (signature !== panelSignature) {
    panelSignature = signature;
    const list = $("recommended");
    fillList(list, data.items, "Nothing to recommend yet.");
    list.classList.remove("flash");
    void list.offsetWidth;  // restart the highlight animation
    list.classList.add("flash");
    $("panel").dataset.source = data.source;
    $("panel").dataset.modelVersion = data.model_version || "";
    $("provenance").textContent =
      `source: ${data.source} · model: ${data.model_version || "none"}`;
  }
  return signature;
}

function recordRefresh(ms) {
  timings.panelRefreshMs.push(ms);
  if (ms !== null) $("panel").dataset.refreshMs = ms.toFixed(0);
  $("panel").dataset.refreshes = String(timings.panelRefreshMs.length);
}

// After an event: poll until the list changes (the stream folded the event in), and record
// how long that took. `since` and `now` are on one clock (performance.now(), or Date.now()
// for a click made on the previous page); `before` is the list the visitor saw then.
async function refreshPanelAfter(since, before = panelSignature, now = () => performance.now()) {
  while (now() - since < REFRESH_GIVE_UP_MS) {
    if (panelSignature !== before) {
      recordRefresh(now() - since);
      return;
    }
    await sleep(REFRESH_POLL_MS);
    await loadPanel();
  }
  recordRefresh(null);
}

// A tile clicked on the previous page: how long until the panel showed the changed list.
async function refreshAfterClick() {
  const pending = JSON.parse(sessionStorage.getItem(PENDING_KEY) || "null");
  sessionStorage.removeItem(PENDING_KEY);
  if (!pending || typeof pending.at !== "number") return false;
  await refreshPanelAfter(pending.at, pending.signature, () => Date.now());
  return true;
}

// --- pages ----------------------------------------------------------------------------
async function initHome() {
  const params = new URLSearchParams(location.search);
  const category = params.get("category");
  const query = category ? `?category=${encodeURIComponent(category)}&limit=60` : "?limit=8";
  const trending = getJson("/v1/popular?k=12&window=24h").catch(() => null);
  let catalog;
  try {
    catalog = await getJson(`/shop/api/catalog${query}`);
  } catch (error) {
    $("grid-status").textContent = "The catalogue is unavailable right now; try again.";
    catalog = { categories: [], items: [] };
  }
  const nav = $("categories");
  nav.replaceChildren(el("li", {}, el("a", category ? { href: "/" }
    : { href: "/", "aria-current": "page" }, "All")),
  ...catalog.categories.map((c) => {
    const props = { href: `/?category=${encodeURIComponent(c.category)}` };
    if (c.category === category) props["aria-current"] = "page";
    return el("li", {}, el("a", props, `${c.category} (${c.count})`));
  }));
  $("grid-title").textContent = category ? `Products in ${category}` : "Products";
  fillList($("grid"), catalog.items, "No products in the catalogue yet.");
  const popular = await trending;
  fillList($("trending"), popular ? popular.items : [], "Nothing is trending yet.");
}

async function initProduct() {
  const itemId = decodeURIComponent(location.pathname.replace(/^\/product\//, ""));
  let item;
  try {
    item = await getJson(`/v1/items/${encodeURIComponent(itemId)}`);
  } catch (error) {
    $("product-name").textContent = error.status === 404
      ? "This product is not in the catalogue." : "This product cannot be shown right now.";
    return;
  }
  document.title = `${item.name || item.item_id} - Demo shop`;
  $("product").dataset.itemId = item.item_id;
  $("product-name").textContent = item.name || item.item_id;
  $("product-price").textContent = formatPrice(item.price);
  $("product-category").textContent = item.category ? `Category: ${item.category}` : "";
  $("product-image").src = imageUrl(item);
  $("product-image").alt = item.name || item.item_id;
  getJson(`/v1/items/${encodeURIComponent(itemId)}/similar?k=8`).then((data) => {
    fillList($("similar"), data.items, "No similar items yet.");
    $("similar-provenance").textContent =
      `source: ${data.source} · model: ${data.model_version || "none"}`;
  }).catch(() => fillList($("similar"), [], "No similar items yet (a new product?)."));
  const act = (button, eventType, done) => button.addEventListener("click", async () => {
    button.disabled = true;
    const since = performance.now();
    try {
      await postEvent(item.item_id, eventType);
      $("action-status").textContent = done;
      $("action-status").className = "status ok";
      await refreshPanelAfter(since);
    } catch (error) {
      $("action-status").textContent = "That did not work; please try again.";
      $("action-status").className = "status error";
    } finally {
      button.disabled = false;
    }
  });
  act($("add-to-cart"), "addtocart", "Added to your cart.");
  act($("buy"), "transaction", "Thank you for your purchase!");
  const since = performance.now();
  const before = panelSignature;
  await postEvent(item.item_id, "view").catch(() => null);
  // Reached by a click on a tile: the click is what changes the list, so measure from it.
  if (!(await refreshAfterClick())) await refreshPanelAfter(since, before);
}

function recordFirstPaint() {
  const paint = performance.getEntriesByName("first-contentful-paint")[0]
    || performance.getEntriesByName("first-paint")[0];
  if (paint) timings.firstPaintMs = paint.startTime;
}

async function main() {
  await initVisitor();
  const page = document.body.dataset.page;
  const panel = loadPanel();
  if (page === "home") await initHome();
  await panel;
  timings.readyMs = performance.now();
  document.body.dataset.ready = "true";
  recordFirstPaint();
  if (page === "product") await initProduct();
}

main();
