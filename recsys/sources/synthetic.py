"""A seedable synthetic e-commerce event stream shaped like the Retailrocket log.

    frame = generate(100_000, seed=7)          # an event frame (see recsys.sources)
    items = catalog(seed=7, n_items=4_000)     # item_id, category_id, parent_category_id, ...

What makes it realistic enough to test a recommender on:

* **Category tree** with the shape of Retailrocket's (1,669 categories, 25 roots, depths 0-5
  with 25/174/702/665/90/13 nodes); items sit in leaf categories. Leaves are laid out in
  depth-first order and items grouped by leaf, so every subtree's items form one contiguous
  index range (that makes sampling "an item under category c" a single searchsorted).
* **Long-tailed popularity**: item base popularity is Zipf-like (rank^-ZIPF_EXPONENT), leaf
  sizes are long-tailed too.
* **Users with latent tastes**: each user has 1-3 interests with personal weights. An
  interest is a corner of the tree holding a few dozen items (the highest small subtree
  above an item's leaf, or a block of a big leaf: a product line), picked in proportion to
  popularity. A visit (session) follows one interest; a share of picks (`noise`) is drawn
  from global popularity instead.
* **Sessions**: visits are bursts of events seconds to minutes apart, spread over the whole
  window. Visits per user follow a Zipf law: about half the visitors have one or two events,
  a long tail returns many times (that tail is the learnable signal).
* **Funnel**: every pick is a view; some views are followed by an add-to-cart, some carts by a
  transaction, in Retailrocket's proportions (views 96.7 %, carts 2.5 %, transactions 0.8 %).
  Items inside a user's interests convert more often than noise picks.

A model trained on the past of this stream predicts its future better than popularity does
(tests/recsys/test_synthetic.py proves it). Generation is vectorised: a million events take a
few seconds. Same arguments, same frame.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from recsys.sources import FRAME_COLUMNS

# Retailrocket category tree: nodes per depth, and how many nodes of each depth have children.
TREE_LEVEL_SIZES = (25, 174, 702, 665, 90, 13)
TREE_PARENTS_PER_LEVEL = (24, 124, 177, 33, 4)

# Retailrocket: 2,664,312 views, 69,332 add-to-carts, 22,457 transactions.
CART_PER_VIEW = 69_332 / 2_664_312          # 0.0260
TRANSACTION_PER_CART = 22_457 / 69_332      # 0.324
# Picks inside the user's interests are this many times likelier to be carted than noise.
INTEREST_CART_LIFT = 3.0

ZIPF_EXPONENT = 0.8
NOISE_SHARE = 0.15                # picks that ignore the session's interest
MEAN_SESSION_PICKS = 2.0          # items looked at per visit (geometric, >= 1)
MEAN_GAP_S = 50.0                 # seconds between events of one visit
VISITS_ZIPF = 2.2                 # visits per user ~ Zipf(2.2): 67 % come once, a long tail return
MAX_VISITS = 1_000
MAX_INTERESTS = 3
MS_PER_DAY = 86_400_000
_STAGE_TYPES = np.array(["view", "addtocart", "transaction"], dtype=object)


@dataclass(frozen=True)
class World:
    """The fixed part of a synthetic shop: category tree, catalogue and popularity."""

    category_parent: np.ndarray   # parent index per category, -1 for roots
    category_depth: np.ndarray
    item_leaf: np.ndarray         # category index of each item (a leaf)
    item_popularity: np.ndarray   # base popularity, sums to 1
    item_price: np.ndarray
    cum_popularity: np.ndarray    # cumsum of item_popularity, with a leading 0
    node_range: np.ndarray        # (n_categories, 2): items [lo, hi) under each category
    interest_range: np.ndarray    # (n_items, 2): items [lo, hi) a user drawn to an item explores


def _build_tree(rng: np.random.Generator, n_categories: int) -> tuple[np.ndarray, np.ndarray]:
    scale = n_categories / sum(TREE_LEVEL_SIZES)
    sizes = [max(1, round(s * scale)) for s in TREE_LEVEL_SIZES]
    parent_counts = [max(1, round(p * scale)) for p in TREE_PARENTS_PER_LEVEL]
    parents: list[int] = []
    depths: list[int] = []
    level_start = 0
    for depth, size in enumerate(sizes):
        if depth == 0:
            parents += [-1] * size
        else:
            prev_size = sizes[depth - 1]
            prev_ids = level_start - prev_size + np.arange(prev_size)
            k = min(prev_size, parent_counts[depth - 1], size)
            with_children = rng.choice(prev_ids, size=k, replace=False)
            # Uneven fan-out (a few parents have many children); every chosen parent has one.
            counts = 1 + rng.multinomial(size - k, rng.dirichlet(np.full(k, 0.8)))
            parents += np.repeat(with_children, counts).tolist()
        depths += [depth] * size
        level_start += size
    return np.asarray(parents, dtype=np.int64), np.asarray(depths, dtype=np.int64)


def _dfs_leaves(parent: np.ndarray) -> tuple[list[int], list[list[int]]]:
    children: list[list[int]] = [[] for _ in range(len(parent))]
    for node, par in enumerate(parent):
        if par >= 0:
            children[par].append(node)
    order: list[int] = []
    stack = [n for n in range(len(parent)) if parent[n] < 0][::-1]
    while stack:
        node = stack.pop()
        if children[node]:
            stack.extend(children[node][::-1])
        else:
            order.append(node)
    return order, children


@lru_cache(maxsize=8)
def build_world(seed: int, n_items: int, n_categories: int = sum(TREE_LEVEL_SIZES)) -> World:
    """The shop for (seed, n_items); cached because generate() and catalog() share it."""
    if n_items < 1:
        raise ValueError("n_items must be >= 1")
    rng = np.random.default_rng([seed, 1])
    parent, depth = _build_tree(rng, n_categories)
    leaves, children = _dfs_leaves(parent)
    # Long-tailed leaf sizes; every leaf gets an item while there are enough items.
    leaf_weight = rng.lognormal(0.0, 1.0, size=len(leaves))
    if n_items >= len(leaves):
        per_leaf = 1 + rng.multinomial(n_items - len(leaves), leaf_weight / leaf_weight.sum())
    else:
        per_leaf = rng.multinomial(n_items, leaf_weight / leaf_weight.sum())
    item_leaf = np.repeat(np.asarray(leaves, dtype=np.int64), per_leaf)

    # Zipf popularity, assigned to items in random order (popular items in every corner).
    ranks = rng.permutation(n_items) + 1
    popularity = ranks.astype(np.float64) ** -ZIPF_EXPONENT
    popularity /= popularity.sum()
    cum = np.concatenate([[0.0], np.cumsum(popularity)])

    # Contiguous item range of every category, bottom-up over the tree.
    n_cat = len(parent)
    lo = np.full(n_cat, n_items, dtype=np.int64)
    hi = np.zeros(n_cat, dtype=np.int64)
    leaf_start = np.concatenate([[0], np.cumsum(per_leaf)])
    for pos, leaf in enumerate(leaves):
        lo[leaf], hi[leaf] = leaf_start[pos], leaf_start[pos + 1]
    for node in np.argsort(-depth, kind="stable"):
        par = parent[node]
        if par >= 0 and hi[node] > lo[node]:
            lo[par], hi[par] = min(lo[par], lo[node]), max(hi[par], hi[node])
    node_range = np.stack([lo, hi], axis=1)

    # An interest holds a browsable number of items (a few dozen): narrow enough to be a
    # taste, broad enough to explore. Small leaves climb to the highest ancestor that is still
    # small; a big leaf is cut into aligned blocks of `target` items (a brand, a product line).
    target = max(8, min(40, n_items // 100))
    interest = item_leaf.copy()
    for _ in range(int(depth.max())):
        par = parent[interest]
        size_up = np.where(par >= 0, hi[np.maximum(par, 0)] - lo[np.maximum(par, 0)], 0)
        climb = (par >= 0) & (size_up <= 2 * target)
        interest = np.where(climb, par, interest)
    i_lo, i_hi = lo[interest], hi[interest]
    big = i_hi - i_lo > 2 * target
    block_lo = i_lo + (np.arange(n_items) - i_lo) // target * target
    interest_range = np.stack([np.where(big, block_lo, i_lo),
                               np.where(big, np.minimum(block_lo + target, i_hi), i_hi)], axis=1)

    price = np.round(np.exp(rng.normal(3.3, 1.0, size=n_items)), 2) + 0.99
    return World(parent, depth, item_leaf, popularity, price, cum, node_range, interest_range)


def catalog(seed: int = 42, n_items: int | None = None, n_events: int | None = None
            ) -> pd.DataFrame:
    """Items of the synthetic shop: item_id, category_id, parent_category_id, name, price.

    Matches `generate(n_events, seed=seed, n_items=n_items)` only for the SAME seed and
    n_items: pass the n_items given to generate, or, when generate chose it, its n_events
    (the catalogue is then sized by `default_sizes(n_events)`). parent_category_id is -1
    for an item in a root category that has no children (Retailrocket has one such root)."""
    if n_items is None:
        if n_events is None:
            raise ValueError("give n_items (as passed to generate) or n_events")
        n_items = default_sizes(n_events)[1]
    world = build_world(seed, n_items)
    idx = np.arange(n_items)
    return pd.DataFrame({
        "item_id": _item_ids(idx),
        "category_id": world.item_leaf,
        "parent_category_id": world.category_parent[world.item_leaf],
        "name": [f"product {i} (category {c})" for i, c in zip(idx, world.item_leaf, strict=True)],
        "price": world.item_price,
    })


def category_tree(seed: int = 42, n_items: int = 5_000) -> pd.DataFrame:
    """The category tree in Retailrocket's format: categoryid, parentid (NaN for roots)."""
    world = build_world(seed, n_items)
    parent = world.category_parent.astype(np.float64)
    parent[parent < 0] = np.nan
    return pd.DataFrame({"categoryid": np.arange(len(parent)), "parentid": parent})


def _item_ids(index: np.ndarray) -> np.ndarray:
    return np.char.add("i", index.astype(str)).astype(object)


def _user_ids(index: np.ndarray) -> np.ndarray:
    return np.char.add("u", index.astype(str)).astype(object)


def _mean_visits() -> float:
    k = np.arange(1, MAX_VISITS + 1, dtype=np.float64)
    p = k ** -VISITS_ZIPF
    return float((k * p).sum() / p.sum())


def _events_per_visit(cart_per_view: float = CART_PER_VIEW,
                      transaction_per_cart: float = TRANSACTION_PER_CART) -> float:
    return MEAN_SESSION_PICKS * (1.0 + cart_per_view * (1.0 + transaction_per_cart))


def default_sizes(n_events: int) -> tuple[int, int]:
    """(n_users, n_items) used when not given: as many visitors as the visit distribution
    needs for n_events (most see 1-2 items, a long tail returns), ~25 events per item."""
    n_users = round(n_events / _events_per_visit() / _mean_visits())
    return max(1, n_users), max(50, n_events // 25)


def generate(
    n_events: int,
    seed: int = 42,
    n_users: int | None = None,
    n_items: int | None = None,
    start_ms: int | None = None,
    days: float = 30.0,
    noise: float = NOISE_SHARE,
    cart_per_view: float = CART_PER_VIEW,
    transaction_per_cart: float = TRANSACTION_PER_CART,
) -> pd.DataFrame:
    """An event frame of exactly `n_events` events over `days` days, sorted by time.

    By default the window ends an hour before now (so every timestamp validates as an event);
    `start_ms` pins the window instead (it must still end before now). Same arguments, same
    frame, except that the default window moves with the clock.
    """
    if n_events < 1:
        raise ValueError("n_events must be >= 1")
    if days <= 0:
        raise ValueError("days must be > 0")
    if not 0.0 <= noise <= 1.0:
        raise ValueError("noise must be in [0, 1]")
    default_users, default_items = default_sizes(n_events)
    n_users = default_users if n_users is None else n_users
    n_items = default_items if n_items is None else n_items
    if n_users < 1:
        raise ValueError("n_users must be >= 1")
    now_ms = int(time.time() * 1000)
    span_ms = int(days * MS_PER_DAY)
    if start_ms is None:
        start_ms = now_ms - 3_600_000 - span_ms
    elif start_ms + span_ms > now_ms:
        raise ValueError("start_ms + days must end before now (events must be in the past)")

    world = build_world(seed, n_items)
    rng = np.random.default_rng([seed, 2])
    p_cart = min(1.0, cart_per_view)
    pick_events = 1.0 + p_cart * (1.0 + transaction_per_cart)
    n_picks = int(n_events / pick_events * 1.05) + 16
    n_sessions = int(n_picks / MEAN_SESSION_PICKS) + 1

    # --- users: tastes and activity --------------------------------------------------------
    interests, interest_w = _draw_tastes(rng, world, n_users, n_items)
    visits = np.minimum(rng.zipf(VISITS_ZIPF, size=n_users), MAX_VISITS)

    # --- sessions: who, when, which interest -----------------------------------------------
    sess_user = np.repeat(np.arange(n_users), visits)
    if len(sess_user) >= n_sessions:
        # More visits than needed: a random subset (some of the population never shows up).
        sess_user = rng.permutation(sess_user)[:n_sessions]
    else:
        # Fewer (n_users was given small): the extra visits go to users who return anyway.
        extra = _sample_weighted(rng, visits.astype(np.float64), n_sessions - len(sess_user))
        sess_user = rng.permutation(np.concatenate([sess_user, extra]))
    sess_start = start_ms + rng.integers(0, max(1, span_ms - 3_600_000), size=n_sessions)
    cum_w = np.cumsum(interest_w[sess_user], axis=1)
    choice = (rng.random(n_sessions)[:, None] > cum_w).sum(axis=1)
    sess_range = interests[sess_user, np.minimum(choice, MAX_INTERESTS - 1)]   # (n, 2)
    picks_per_sess = rng.geometric(1.0 / MEAN_SESSION_PICKS, size=n_sessions)

    # --- picks: items inside the interest (or noise), then the funnel ----------------------
    pick_sess = np.repeat(np.arange(n_sessions), picks_per_sess)[:n_picks]
    n_picks = len(pick_sess)
    lo, hi = sess_range[pick_sess, 0], sess_range[pick_sess, 1]
    is_noise = rng.random(n_picks) < noise
    lo = np.where(is_noise, 0, lo)
    hi = np.where(is_noise, n_items, hi)
    item = _sample_items(rng, world.cum_popularity, lo, hi, n_picks)

    # Carts: noise picks convert less; scale so the overall cart rate stays as asked.
    lift = np.where(is_noise, 1.0, INTEREST_CART_LIFT)
    p = p_cart * lift / (noise + (1 - noise) * INTEREST_CART_LIFT)
    carted = rng.random(n_picks) < np.minimum(p, 1.0)
    bought = carted & (rng.random(n_picks) < transaction_per_cart)
    per_pick = 1 + carted.astype(np.int64) + bought.astype(np.int64)

    # --- expand picks to events, cut to exactly n_events ---------------------------------
    ev_pick = np.repeat(np.arange(n_picks), per_pick)
    stage = np.arange(len(ev_pick)) - np.repeat(np.cumsum(per_pick) - per_pick, per_pick)
    if len(ev_pick) < n_events:  # astronomically unlikely with the 5 % margin
        raise RuntimeError("synthetic generator under-produced; raise the pick margin")
    ev_pick, stage = ev_pick[:n_events], stage[:n_events]
    ev_sess = pick_sess[ev_pick]

    # Time: a burst of events per session, seconds to minutes apart.
    gaps = rng.exponential(MEAN_GAP_S * 1000.0, size=n_events).astype(np.int64) + 1_000
    csum = np.cumsum(gaps)
    first = np.r_[True, ev_sess[1:] != ev_sess[:-1]]
    first_idx = np.flatnonzero(first)
    offset = csum - np.repeat(csum[first_idx], np.diff(np.r_[first_idx, n_events]))
    timestamp = np.minimum(sess_start[ev_sess] + offset, start_ms + span_ms - 1)

    # Build the frame directly (already typed and sorted): make_frame's generic conversions
    # would triple the time of a million-event frame. Ids come from small lookup tables.
    order = np.argsort(timestamp, kind="stable")
    users = _user_ids(np.arange(n_users))[sess_user[ev_sess[order]]]
    items = _item_ids(np.arange(n_items))[item[ev_pick[order]]]
    stage = stage[order]
    frame = pd.DataFrame({
        "event_id": [f"syn{seed}-{i}" for i in order.tolist()],
        "user_id": users,
        "item_id": items,
        "event_type": _STAGE_TYPES[stage],
        "value": np.where(stage == 2, 1.0, np.nan),  # quantity bought
        "timestamp": timestamp[order].astype(np.int64),
    })
    return frame[FRAME_COLUMNS]


def _draw_tastes(rng: np.random.Generator, world: World, n_users: int, n_items: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Each user's interests (item index ranges, (n_users, MAX_INTERESTS, 2)) and weights:
    the first draws of `generate`'s generator, shared with `tastes`."""
    n_int = rng.integers(1, MAX_INTERESTS + 1, size=n_users)
    seed_items = _sample_items(rng, world.cum_popularity, 0, n_items, (n_users, MAX_INTERESTS))
    interests = world.interest_range[seed_items]
    interest_w = rng.dirichlet(np.ones(MAX_INTERESTS), size=n_users)
    interest_w[np.arange(MAX_INTERESTS)[None, :] >= n_int[:, None]] = 0.0
    interest_w /= interest_w.sum(axis=1, keepdims=True)
    return interests, interest_w


@dataclass(frozen=True)
class Tastes:
    """The hidden tastes behind a generated frame: what a simulated visitor would click."""

    ranges: np.ndarray    # (n_users, MAX_INTERESTS, 2) item index ranges [lo, hi)
    weights: np.ndarray   # (n_users, MAX_INTERESTS), rows sum to 1
    n_items: int

    def affinity(self, user_id: str, item_id: str) -> float:
        """Share of the user's taste that covers the item (0 when it is outside all of their
        interests, or either id is not of this shop)."""
        user, item = _index_of(user_id, "u"), _index_of(item_id, "i")
        if user is None or item is None or user >= len(self.ranges) or item >= self.n_items:
            return 0.0
        lo, hi = self.ranges[user, :, 0], self.ranges[user, :, 1]
        return float(self.weights[user][(lo <= item) & (item < hi)].sum())


def tastes(n_events: int, seed: int = 42, n_users: int | None = None,
           n_items: int | None = None) -> Tastes:
    """The tastes `generate(n_events, seed, n_users, n_items)` drew its users from."""
    default_users, default_items = default_sizes(n_events)
    n_users = default_users if n_users is None else n_users
    n_items = default_items if n_items is None else n_items
    world = build_world(seed, n_items)
    ranges, weights = _draw_tastes(np.random.default_rng([seed, 2]), world, n_users, n_items)
    return Tastes(ranges, weights, n_items)


def _index_of(identifier: str, prefix: str) -> int | None:
    if not identifier.startswith(prefix) or not identifier[len(prefix):].isdigit():
        return None
    return int(identifier[len(prefix):])


def _sample_weighted(rng: np.random.Generator, weights: np.ndarray, size: int) -> np.ndarray:
    cum = np.cumsum(weights)
    return np.searchsorted(cum, rng.random(size) * cum[-1], side="right").clip(0, len(cum) - 1)


def _sample_items(rng: np.random.Generator, cum: np.ndarray, lo: np.ndarray | int,
                  hi: np.ndarray | int, size: int | tuple[int, ...]) -> np.ndarray:
    """Items in [lo, hi) drawn by popularity: one uniform draw inside the cumulative range."""
    a, b = cum[lo], cum[hi]
    u = a + rng.random(size) * (b - a)
    idx = np.searchsorted(cum, u, side="right") - 1
    return np.clip(idx, lo, np.asarray(hi) - 1)
