// Admin console: nothing is fetched until a key is entered. The key lives in sessionStorage
// (gone when the tab closes) and goes out as the X-API-Key header.
"use strict";

const KEY_STORAGE = "recsys_admin_key";
const UPLOAD_BATCH = 1000;  // the API's MAX_CATALOG_BATCH
const STREAM_REFRESH_MS = 5000;

const $ = (id) => document.getElementById(id);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

class AuthError extends Error {}

async function api(url, options = {}) {
  const key = sessionStorage.getItem(KEY_STORAGE);
  const headers = { ...(options.headers || {}), "X-API-Key": key || "" };
  const response = await fetch(url, { ...options, headers });
  if (response.status === 401 || response.status === 403) {
    const body = await response.json().catch(() => ({}));
    throw new AuthError(body.detail || `HTTP ${response.status}`);
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const detail = body && body.detail ? JSON.stringify(body.detail) : "";
    const error = new Error(`HTTP ${response.status} ${detail}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

function fmt(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(4);
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function table(columns, rows) {
  const head = el("tr", {}, ...columns.map((c) => el("th", { scope: "col", text: c.label })));
  const body = rows.map((row) => el("tr", {}, ...columns.map((c) => {
    const value = c.get(row);
    return el("td", typeof value === "number" ? { class: "num", text: fmt(value) }
      : { text: fmt(value) });
  })));
  return el("table", {}, el("thead", {}, head), el("tbody", {}, ...body));
}

// --- login ------------------------------------------------------------------------------
function showLogin(message = "") {
  $("console").hidden = true;
  $("logout").hidden = true;
  $("login-view").hidden = false;
  $("login-error").textContent = message;
  $("api-key").focus();
}

let streamTimer = null;

async function enter() {
  try {
    await loadModels();
  } catch (error) {
    sessionStorage.removeItem(KEY_STORAGE);
    showLogin(error instanceof AuthError ? error.message : `Cannot reach the API: ${error.message}`);
    return;
  }
  $("login-view").hidden = true;
  $("console").hidden = false;
  $("logout").hidden = false;
  loadStream();
  loadTrending();
  loadExperiments();
  if (!streamTimer) streamTimer = setInterval(loadStream, STREAM_REFRESH_MS);
}

// --- sections ---------------------------------------------------------------------------
// A leaderboard is a list of rows, or an object {candidate: {metric: value}}.
function leaderboardRows(board) {
  if (Array.isArray(board)) return board.filter((row) => row && typeof row === "object");
  if (board && typeof board === "object") {
    return Object.entries(board).map(([candidate, value]) => (
      value && typeof value === "object" ? { candidate, ...value } : { candidate, value }));
  }
  return [];
}

async function loadModels() {
  const data = await api("/v1/admin/models");
  $("served-version").textContent = data.served || "none";
  $("served-detail").textContent = data.current && data.current !== data.served
    ? `(switching to ${data.current})` : "";
  document.body.dataset.servedVersion = data.served || "";
  const metricNames = [...new Set(data.versions.flatMap((v) => Object.keys(v.metrics || {})))];
  const columns = [
    { label: "version", get: (v) => v.version },
    { label: "role", get: (v) => v.role },
    { label: "created", get: (v) => v.created_at },
    ...metricNames.map((m) => ({ label: m, get: (v) => (v.metrics || {})[m] })),
    { label: `popularity ${data.gate_metric}`, get: (v) => (v.baseline_metrics || {})[data.gate_metric] },
    { label: "beats popularity", get: (v) => v.beats_popularity },
    { label: "users", get: (v) => v.n_users },
    { label: "items", get: (v) => v.n_items },
  ];
  const box = $("versions");
  box.replaceChildren(data.versions.length ? table(columns, data.versions)
    : el("p", { text: "No model version has been published yet." }));
  for (const version of data.versions) {
    const rows = leaderboardRows(version.leaderboard);
    if (!rows.length) continue;
    const names = [...new Set(rows.flatMap((row) => Object.keys(row)))];
    box.append(el("details", {}, el("summary", { text: `Candidates' leaderboard of ${version.version}` }),
      table(names.map((n) => ({ label: n, get: (row) => row[n] })), rows)));
  }
  $("rollback").disabled = !data.versions.some((v) => v.role === "previous");
}

async function loadStream() {
  try {
    const data = await api("/v1/admin/stream");
    $("stream-lag").textContent = String(data.lag);
    $("stream-behind").textContent = data.behind_ms === null ? "–" : `${(data.behind_ms / 1000).toFixed(1)} s`;
    $("stream-partitions").replaceChildren(table([
      { label: "partition", get: (p) => p.partition },
      { label: "committed", get: (p) => p.committed },
      { label: "end", get: (p) => p.end },
      { label: "lag", get: (p) => p.lag },
      { label: "last committed record age (s)",
        get: (p) => (p.last_committed_age_ms === null ? null
          : (p.last_committed_age_ms / 1000).toFixed(1)) },
    ], data.partitions));
  } catch (error) {
    if (error instanceof AuthError) { showLogin(error.message); return; }
    $("stream-lag").textContent = "unavailable";
    $("stream-behind").textContent = "–";
  }
}

async function loadTrending() {
  const window_ = $("trending-window").value;
  try {
    const data = await fetch(`/v1/popular?k=10&window=${window_}`).then((r) => r.json());
    $("trending").replaceChildren(table([
      { label: "item", get: (i) => i.item_id },
      { label: "name", get: (i) => i.name },
      { label: "category", get: (i) => i.category },
      { label: "score", get: (i) => i.score },
    ], data.items), el("p", { class: "provenance", text: `source: ${data.source}` }));
  } catch (error) {
    $("trending").textContent = "Trending is unavailable right now.";
  }
}

async function loadExperiments() {
  // Another issue adds experiments; until that route exists this panel says so.
  try {
    const data = await api("/v1/admin/experiments");
    const rows = Array.isArray(data) ? data : (data.variants || data.experiments || []);
    if (rows.length) {
      const names = [...new Set(rows.flatMap((row) => Object.keys(row)))];
      $("experiments").replaceChildren(table(names.map((n) => ({ label: n, get: (r) => r[n] })), rows));
    }
  } catch (error) {
    if (error instanceof AuthError) showLogin(error.message);
  }
}

// --- catalogue upload -------------------------------------------------------------------
function parseCsvLine(line) {
  const out = [];
  let field = "";
  let quoted = false;
  for (let i = 0; i < line.length; i += 1) {
    const ch = line[i];
    if (quoted) {
      if (ch === '"' && line[i + 1] === '"') { field += '"'; i += 1; }
      else if (ch === '"') quoted = false;
      else field += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === ",") { out.push(field); field = ""; }
    else field += ch;
  }
  out.push(field);
  return out;
}

function parseItems(name, text) {
  const trimmed = text.trim();
  if (trimmed.startsWith("[")) return JSON.parse(trimmed);
  if (trimmed.startsWith("{")) {
    return trimmed.split(/\r?\n/).filter((l) => l.trim()).map((l) => JSON.parse(l));
  }
  const lines = trimmed.split(/\r?\n/).filter((l) => l.trim());
  const header = parseCsvLine(lines[0]).map((h) => h.trim());
  if (!header.includes("item_id")) throw new Error(`${name}: the CSV header has no item_id column`);
  return lines.slice(1).map((line) => {
    const cells = parseCsvLine(line);
    const item = {};
    header.forEach((column, i) => {
      const value = cells[i];
      if (value === undefined || value === "") return;
      if (column === "price") item.price = Number(value);
      else if (column === "available") item.available = !/^(false|0|no)$/i.test(value);
      else if (["item_id", "name", "category", "image_url"].includes(column)) item[column] = value;
      else (item.attributes = item.attributes || {})[column] = value;
    });
    return item;
  });
}

async function upload(event) {
  event.preventDefault();
  const file = $("items-file").files[0];
  const status = $("upload-status");
  if (!file) return;
  let items;
  try {
    items = parseItems(file.name, await file.text());
  } catch (error) {
    status.className = "status error";
    status.textContent = `Cannot read ${file.name}: ${error.message}`;
    return;
  }
  let stored = 0;
  for (let start = 0; start < items.length; start += UPLOAD_BATCH) {
    const batch = items.slice(start, start + UPLOAD_BATCH);
    try {
      const result = await api("/v1/items", {
        method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify(batch),
      });
      stored += result.stored;
      status.className = "status";
      status.textContent = `Stored ${stored} of ${items.length} items…`;
    } catch (error) {
      status.className = "status error";
      status.textContent = `Stopped after ${stored} items: items ${start + 1}-${start + batch.length} were refused (${error.message}).`;
      return;
    }
  }
  status.className = "status ok";
  status.textContent = `Stored ${stored} items.`;
}

// --- wiring -----------------------------------------------------------------------------
$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY_STORAGE, $("api-key").value);
  $("api-key").value = "";
  enter();
});
$("logout").addEventListener("click", () => {
  sessionStorage.removeItem(KEY_STORAGE);
  location.reload();
});
$("rollback").addEventListener("click", async () => {
  if (!window.confirm("Make the previous model version current again?")) return;
  const status = $("rollback-status");
  try {
    const result = await api("/v1/admin/models/rollback", { method: "POST" });
    status.className = "status ok";
    status.textContent = `Rolled back from ${result.replaced} to ${result.restored}.`;
  } catch (error) {
    status.className = "status error";
    status.textContent = `Rollback refused: ${error.message}`;
  }
  setTimeout(() => loadModels().catch(() => null), 1000);
});
$("trending-window").addEventListener("change", loadTrending);
$("upload-form").addEventListener("submit", upload);

if (sessionStorage.getItem(KEY_STORAGE)) enter(); else showLogin();
