"""Business rules over a ranked list: boosts and burials by attribute, a cap per attribute
value, an MMR diversity re-rank and pinned positions. Pure: no I/O, no framework.

A rule set is applied to a pool of candidates (the model's ranking, deeper than the page) in
this order:

1. **Boosts.** Every boost whose condition an item matches multiplies its score's strength by
   the boost's weight w (w > 1 boosts, w < 1 buries; several matching boosts multiply):

       s' = s * w   when s >= 0,      s' = s / w   when s < 0

   so that a larger weight always raises an item, whatever the sign of its score (ALS scores
   can be negative). The pool is re-sorted by s' (ties keep the model's order).
2. **Diversity.** Greedy selection of the list, position by position:
   - with `max_per`, an item whose group (its value of `max_per_field`) already has
     `max_per` items in the list is skipped (items without a value are never capped);
   - with `diversity` = lambda > 0, the next item maximises Maximal Marginal Relevance

         MMR(i) = (1 - lambda) rel(i) - lambda max_{j in list} sim(i, j)

     rel = s' scaled to [0, 1] over the pool, sim = cosine of the items' factors (0 for an
     item without factors). lambda = 0 keeps the boosted order.
3. **Pins.** Each pinned item is put at its position (1 = first) and removed from wherever
   else it was; the other items keep their order around it.

Conditions read an item's attributes through `values_of`, the one function that knows the
shape of a catalogue item (the decoded catalogue dict: category / category_paths, brand,
tags, price, attributes, and `added_ms`, the server's record of when the item first entered
the catalogue).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from recsys.errors import RecsysError
from recsys.events import MAX_ID_LENGTH

# Bounds on one rule set (no setting can allow more: they bound the work per request).
MAX_BOOSTS = 32
MAX_PINS = 100
MAX_NEW_DAYS = 3650.0
DAY_MS = 86_400_000
# Fields every catalogue item has a meaning for; anything else is `attributes.<name>`.
BUILTIN_FIELDS = ("brand", "category", "tag", "price", "new")
GROUP_FIELDS = ("brand", "category", "tag")
ATTRIBUTE_PREFIX = "attributes."
PLACEMENT_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
FIELD_PATTERN = r"^(brand|category|tag|price|new|attributes\.[^\x00-\x1F\x7F]{1,128})$"

Value = str | bool | int | Annotated[float, Field(allow_inf_nan=False)]
Number = Annotated[float, Field(allow_inf_nan=False)]


class RulesError(RecsysError, ValueError):
    """A rule set that cannot be applied; `param` names the offending parameter."""

    def __init__(self, param: str, reason: str) -> None:
        super().__init__(f"{param}: {reason}")
        self.param = param
        self.reason = reason


class Boost(BaseModel):
    """Multiply the score of the items matching one condition by `weight`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = Field(pattern=FIELD_PATTERN, description=(
        "What to match: brand, category (the item's category or any prefix of its category "
        "paths, `a/b`), tag, price, new (entered the catalogue within `days`), or "
        "attributes.<name>."))
    value: Value | None = Field(default=None, description=(
        "Equality: brand, category, tag, attributes.<name>."))
    min: Number | None = Field(default=None, description="Numeric lower bound (inclusive): "
                               "price, attributes.<name>.")
    max: Number | None = Field(default=None, description="Numeric upper bound (inclusive): "
                               "price, attributes.<name>.")
    days: Number | None = Field(default=None, gt=0, le=MAX_NEW_DAYS, description=(
        "new: the item entered the catalogue at most this many days ago (server time)."))
    weight: Number = Field(gt=0, description=(
        "Multiplicative weight: > 1 boosts, < 1 buries; within [1/api_rules_max_weight, "
        "api_rules_max_weight] (setting)."))

    @model_validator(mode="after")
    def _condition_fits_field(self) -> Boost:
        numeric = self.min is not None or self.max is not None
        if self.field == "new":
            if self.days is None or self.value is not None or numeric:
                raise ValueError("field 'new' takes `days` only")
        elif self.days is not None:
            raise ValueError(f"`days` is for field 'new', not {self.field!r}")
        elif self.field == "price":
            if not numeric or self.value is not None:
                raise ValueError("field 'price' takes `min` and/or `max`")
        elif self.field in GROUP_FIELDS:
            if not isinstance(self.value, str) or numeric:
                raise ValueError(f"field {self.field!r} takes a text `value`")
            if not 0 < len(self.value) <= MAX_ID_LENGTH:
                raise ValueError(f"`value` must be 1-{MAX_ID_LENGTH} characters")
        elif (self.value is None) == (not numeric):
            raise ValueError(f"field {self.field!r} takes either `value` or `min`/`max`")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) is greater than max ({self.max:g})")
        return self

    def condition(self) -> tuple[Any, ...]:
        """What the boost matches (two boosts with the same condition conflict)."""
        return (self.field, self.value, self.min, self.max, self.days)


class Pin(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    item_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH,
                         pattern=r"^[^\x00-\x1F\x7F]*[^\x00-\x20\x7F][^\x00-\x1F\x7F]*$")
    position: int = Field(ge=1, description="1 = first; at most k.")


class Rules(BaseModel):
    """Boosts, pins and diversity of one request or one placement."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    boosts: list[Boost] = Field(default_factory=list, max_length=MAX_BOOSTS)
    pins: list[Pin] = Field(default_factory=list, max_length=MAX_PINS)
    max_per: int | None = Field(default=None, ge=1, description=(
        "At most this many items per value of `max_per_field` in a list."))
    max_per_field: str = Field(default="category", pattern=FIELD_PATTERN, description=(
        "The attribute `max_per` groups by: brand, category (the primary one), tag (the "
        "first one) or attributes.<name>."))
    diversity: float | None = Field(default=None, ge=0.0, le=1.0, allow_inf_nan=False,
                                    description=("MMR trade-off in [0, 1]: 0 keeps the "
                                                 "ranking, 1 picks the least similar item."))

    @model_validator(mode="after")
    def _no_conflicts(self) -> Rules:
        seen: dict[tuple[Any, ...], int] = {}
        for n, boost in enumerate(self.boosts):
            first = seen.setdefault(boost.condition(), n)
            if first != n:
                raise ValueError(f"boosts[{n}] has the same condition as boosts[{first}] "
                                 "(conflicting weights for one condition)")
        items: dict[str, int] = {}
        positions: dict[int, int] = {}
        for n, pin in enumerate(self.pins):
            if items.setdefault(pin.item_id, n) != n:
                raise ValueError(f"pins[{n}]: item {pin.item_id!r} is pinned twice")
            if positions.setdefault(pin.position, n) != n:
                raise ValueError(f"pins[{n}]: position {pin.position} is pinned twice")
        if self.max_per_field in ("price", "new"):
            raise ValueError("max_per_field must be brand, category, tag or attributes.<name>")
        return self

    @property
    def empty(self) -> bool:
        return not (self.boosts or self.pins or self.max_per or self.diversity)

    def over(self, base: Rules | None) -> Rules:
        """These (request) rules on top of `base` (a placement's): a boost replaces the
        base's boost of the same condition, a pin the base's pin of the same item or
        position; max_per and diversity replace the base's when given."""
        if base is None or base.empty:
            return self
        mine = {b.condition() for b in self.boosts}
        items = {p.item_id for p in self.pins}
        positions = {p.position for p in self.pins}
        return Rules(
            boosts=[b for b in base.boosts if b.condition() not in mine] + self.boosts,
            pins=[p for p in base.pins if p.item_id not in items
                  and p.position not in positions] + self.pins,
            max_per=self.max_per if self.max_per is not None else base.max_per,
            max_per_field=(self.max_per_field if "max_per_field" in self.model_fields_set
                           else base.max_per_field),
            diversity=self.diversity if self.diversity is not None else base.diversity)


def check_rules(rules: Rules, *, max_weight: float, max_position: int,
                known_attributes: Iterable[str], param: str = "rules") -> None:
    """The bounds that depend on settings and on the catalogue: weights within
    [1/max_weight, max_weight], pins at positions 1..max_position, attributes the catalogue
    knows. Raises RulesError naming the parameter (`param.` prefixes it, when given)."""
    known = set(known_attributes)
    param = f"{param}." if param else ""
    for n, boost in enumerate(rules.boosts):
        if not 1.0 / max_weight <= boost.weight <= max_weight:
            raise RulesError(f"{param}boosts[{n}].weight",
                             f"{boost.weight:g} is outside [{1.0 / max_weight:g}, "
                             f"{max_weight:g}] (setting api_rules_max_weight)")
        _check_field(boost.field, known, f"{param}boosts[{n}].field")
    for n, pin in enumerate(rules.pins):
        if pin.position > max_position:
            raise RulesError(f"{param}pins[{n}].position",
                             f"position {pin.position} is beyond k ({max_position})")
    if rules.max_per is not None:
        _check_field(rules.max_per_field, known, f"{param}max_per_field")


def _check_field(field: str, known: set[str], param: str) -> None:
    if field.startswith(ATTRIBUTE_PREFIX) and field[len(ATTRIBUTE_PREFIX):] not in known:
        raise RulesError(param, f"unknown attribute {field[len(ATTRIBUTE_PREFIX):]!r}: no "
                         "catalogue item has it")


# --- matching -------------------------------------------------------------------------------
def values_of(item: Mapping[str, Any] | None, field: str) -> list[Any]:
    """An item's values of `field`, the first being its primary one ([] when it has none).

    The one place that reads a catalogue item's shape: today's decoded catalogue dict
    (category, attributes with brand/tags inside) and the ItemAttributes fields
    (category_paths, brand, tags), whichever the item has."""
    if not item:
        return []
    attributes = item.get("attributes") or {}
    if field == "category":
        # The primary category first (the leaf, or the primary path), then every prefix.
        paths = item.get("category_paths") or ()
        out = [item["category"]] if item.get("category") else []
        out += ["/".join(path) for path in paths[:1]]
        out += ["/".join(path[:depth + 1]) for path in paths for depth in range(len(path))]
        return list(dict.fromkeys(out))
    if field == "brand":
        brand = item.get("brand") or attributes.get("brand")
        return [brand] if brand is not None else []
    if field == "tag":
        tags = item.get("tags") or attributes.get("tags") or ()
        return [tags] if isinstance(tags, str) else list(tags)
    if field == "price":
        return [item["price"]] if item.get("price") is not None else []
    if field == "new":
        return [item["added_ms"]] if item.get("added_ms") is not None else []
    if field.startswith(ATTRIBUTE_PREFIX):
        value = attributes.get(field[len(ATTRIBUTE_PREFIX):])
        return [value] if value is not None else []
    return []


class _Flag:
    """A boolean attribute value in a view: `True in (1,)` holds in Python, and a rule for
    `1` must not match an item whose attribute is `true`."""

    __slots__ = ("value",)

    def __init__(self, value: bool) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"_Flag({self.value})"


_TRUE, _FALSE = _Flag(True), _Flag(False)
# A view's key for a field's numeric values (no field name contains it: FIELD_PATTERN).
NUMBERS = "\x00numbers"
View = Mapping[str, tuple[Any, ...]]


def _key(value: Any) -> Any:
    return (_TRUE if value else _FALSE) if isinstance(value, bool) else value


def view_of(item: Mapping[str, Any] | None) -> View:
    """Every field a rule can name -> the item's values of it (`values_of`), booleans
    marked: built once per item (the catalogue caches it), so that matching a pool is a
    dictionary look-up per item and boost."""
    if not item:
        return {}
    fields = [*BUILTIN_FIELDS, *(ATTRIBUTE_PREFIX + name
                                 for name in (item.get("attributes") or {}))]
    view = {}
    for field in fields:
        values = values_of(item, field)
        if values:
            view[field] = tuple(_key(v) for v in values if isinstance(v, Hashable))
            numbers = tuple(float(v) for v in values if isinstance(v, int | float)
                            and not isinstance(v, bool) and math.isfinite(v))
            if numbers:
                view[field + NUMBERS] = numbers
    return view


def matches(boost: Boost, view: View | None, now_ms: int) -> bool:
    values = (view or {}).get(boost.field, ())
    if boost.field == "new":
        assert boost.days is not None
        return bool(values) and now_ms - values[0] <= boost.days * DAY_MS
    if boost.value is not None:
        return _key(boost.value) in values
    low = -math.inf if boost.min is None else boost.min
    high = math.inf if boost.max is None else boost.max
    return any(low <= v <= high for v in (view or {}).get(boost.field + NUMBERS, ()))


# --- columns: what the rules read of each item, as arrays --------------------------------------
# A boost's column is what its condition needs of each item that does not depend on the
# time: whether the item matches (bool), or for `new` the time it entered the catalogue
# (float ms, -inf when unknown). A group column is each item's group of `max_per_field` as a
# small integer (-1: no value, never capped). Columns are per pool here; serving keeps them
# per catalogue row too (serving.catalog), so a request reads them instead of the views.
NO_GROUP = -1


def column_key(boost: Boost) -> tuple[Any, ...]:
    """What a boost's column depends on: its condition, with the value's type (`True` and
    `1` are equal keys in Python, and match different items)."""
    return (boost.field, type(boost.value).__name__, boost.value, boost.min, boost.max)


def boost_column(boost: Boost, views: Sequence[View | None]) -> np.ndarray:
    """The boost's column over `views` (see above)."""
    empty: View = {}
    pool = [view or empty for view in views]
    field = boost.field
    if field == "new":
        firsts = [v[0] if (v := view.get(field)) else -math.inf for view in pool]
        return np.asarray(firsts, dtype=np.float64)
    if boost.value is not None:
        key = _key(boost.value)
        return np.asarray([key in view.get(field, ()) for view in pool], dtype=bool)
    numbers = field + NUMBERS
    return _in_range([view.get(numbers, ()) for view in pool],
                     -math.inf if boost.min is None else boost.min,
                     math.inf if boost.max is None else boost.max)


def boost_hits(boost: Boost, column: np.ndarray, now_ms: int) -> np.ndarray:
    """Which items the boost matches at `now_ms`, from its column (`matches` per item)."""
    if boost.field == "new":
        assert boost.days is not None
        return column >= now_ms - boost.days * DAY_MS
    return column


def group_keys(views: Sequence[View | None], field: str) -> list[Any]:
    """Each item's group of `field` (its primary value; None: none, never capped)."""
    empty: View = {}
    return [(view or empty).get(field, (None,))[0] for view in views]


def group_codes(keys: Sequence[Any], codes: dict[Any, int] | None = None) -> np.ndarray:
    """Each group key as a small integer (NO_GROUP for None), numbered in `codes` (a fresh
    numbering when None; pass one to keep codes stable across calls)."""
    index: dict[Any, int] = {} if codes is None else codes
    return np.asarray([NO_GROUP if key is None else index.setdefault(key, len(index))
                       for key in keys], dtype=np.intp)


@dataclass(frozen=True)
class Columns:
    """A pool's columns for one rule set: one per boost (in `rules.boosts` order) and the
    group codes of `max_per_field` (None without `max_per`)."""

    boosts: list[np.ndarray]
    groups: np.ndarray | None


def columns_of(rules: Rules, views: Sequence[View | None]) -> Columns:
    groups = (group_codes(group_keys(views, rules.max_per_field))
              if rules.max_per is not None else None)
    return Columns([boost_column(boost, views) for boost in rules.boosts], groups)


def boost_weights(rules: Rules, views: Sequence[View | None], now_ms: int,
                  columns: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """The product of the matching boosts' weights, per item (1 where none matches):
    `matches` for every item, with each boost's condition looked at once (`columns`, when
    the caller has them, else built from `views`), compared as arrays."""
    if columns is None:
        columns = [boost_column(boost, views) for boost in rules.boosts]
    weights = np.ones(len(columns[0]) if len(columns) else len(views), dtype=np.float64)
    for boost, column in zip(rules.boosts, columns, strict=True):
        weights[boost_hits(boost, column, now_ms)] *= boost.weight
    return weights


def _in_range(numbers: list[tuple[float, ...]], low: float, high: float) -> np.ndarray:
    """Whether any of each item's numbers lies in [low, high]."""
    if max(map(len, numbers), default=0) <= 1:
        firsts = np.asarray([values[0] if values else math.nan for values in numbers],
                            dtype=np.float64)
        return (firsts >= low) & (firsts <= high)  # NaN (no value) is neither
    return np.asarray([any(low <= v <= high for v in values) for values in numbers],
                      dtype=bool)


def boosted(scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """s * w for s >= 0, s / w for s < 0 (see the module notes)."""
    scores = np.asarray(scores, dtype=np.float64)
    return np.where(scores >= 0, scores * weights, scores / weights)


# --- selection --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Ranked:
    """A re-ranked list: item ids, their scores after boosts (a pinned item keeps its own
    score), and which positions are pinned."""

    ids: list[str]
    scores: list[float]
    pinned: list[bool]


def mmr_order(relevance: np.ndarray, vectors: np.ndarray | None, diversity: float,
              groups: Sequence[Any] | None, max_per: int | None, depth: int) -> list[int]:
    """Positions of the pool chosen greedily (see the module notes), at most `depth`.

    `relevance` is in pool order (the boosted order); `vectors` the items' factors, rows of
    zeros for items without any; `groups` each item's group (None: never capped)."""
    codes = group_codes(groups) if max_per is not None and groups is not None else None
    return select(relevance, vectors, diversity, codes, max_per, depth)


def select(relevance: np.ndarray, vectors: np.ndarray | None, diversity: float,
           codes: np.ndarray | None, max_per: int | None, depth: int) -> list[int]:
    """`mmr_order` with the groups as integer codes (`group_codes`; None: no cap)."""
    n = len(relevance)
    if n == 0 or depth <= 0:
        return []
    capped = max_per is not None and codes is not None
    if not diversity or vectors is None:
        if not capped:
            return list(range(min(depth, n)))
        assert codes is not None and max_per is not None
        counts: dict[int, int] = {}
        chosen = []
        for i, code in enumerate(codes.tolist()):
            if code == NO_GROUP or counts.get(code, 0) < max_per:
                chosen.append(i)
                if code != NO_GROUP:
                    counts[code] = counts.get(code, 0) + 1
                if len(chosen) == depth:
                    break
        return chosen
    low, high = float(relevance.min()), float(relevance.max())
    rel = (relevance - low) / (high - low) if high > low else np.ones(n)
    norms = np.linalg.norm(vectors, axis=1)
    unit = vectors / np.where(norms > 0, norms, 1.0)[:, None]
    scaled = diversity * unit
    # value(i) = base(i) - max(0, lambda max_j sim(i, j)) = min(base(i), min_j (base(i) -
    # lambda sim(i, j))) with base = (1 - lambda) rel (exactly: rounding a subtraction is
    # monotonic), so one minimum a position keeps it, and -inf marks the chosen and the
    # capped. The pool's size bounds the work, not the catalogue's.
    base = (1.0 - diversity) * rel
    value = base.copy()
    if not capped:
        codes = None
    group_of = None if codes is None else codes.tolist()
    counts_by_code: dict[int, int] = {}  # codes may be sparse (serving numbers a catalogue)
    candidate, similarity = np.empty(n), np.empty(n)
    chosen: list[int] = []
    argmax, dot, subtract, minimum = value.argmax, scaled.dot, np.subtract, np.minimum
    infinity = -np.inf
    while len(chosen) < depth:
        best = int(argmax())                     # the first of ties: pool order
        if value[best] == infinity:
            break
        chosen.append(best)
        value[best] = infinity
        # One row of the pool's cosines per chosen item (a matrix-vector product: a P x P
        # product would do the work of every position, chosen or not).
        subtract(base, dot(unit[best], out=similarity), out=candidate)
        minimum(value, candidate, out=value)
        if group_of is not None and (code := group_of[best]) >= 0:
            assert max_per is not None
            counts_by_code[code] = count = counts_by_code.get(code, 0) + 1
            if count >= max_per:
                value[codes == code] = infinity
    return chosen


def apply_rules(rules: Rules, ids: Sequence[str], scores: Sequence[float],
                items: Sequence[View | None], vectors: np.ndarray | None,
                now_ms: int, depth: int, pinnable: Mapping[str, float] | None = None
                ) -> Ranked:
    """The first `depth` positions of the pool (`ids`, best first, with their `scores`,
    catalogue views `items` (`view_of`) and factor `vectors`) under `rules`.

    `pinnable` maps each pinned item that may be shown (available, not hidden from this
    user) to its score; pins of other items are dropped."""
    return apply_columns(rules, ids, scores, columns_of(rules, items), vectors, now_ms, depth,
                         pinnable)


def apply_columns(rules: Rules, ids: Sequence[str], scores: Sequence[float] | np.ndarray,
                  columns: Columns, vectors: np.ndarray | None, now_ms: int, depth: int,
                  pinnable: Mapping[str, float] | None = None) -> Ranked:
    """`apply_rules` with the pool's columns (`columns_of`, or serving's cached ones)
    instead of its views."""
    pins = [p for p in rules.pins if pinnable is None or p.item_id in pinnable]
    values = np.asarray(scores, dtype=np.float64)
    boost_columns, codes = columns.boosts, columns.groups
    pool_scores: dict[str, float] = {}
    if pins:
        pool_scores = dict(zip(ids, values.tolist(), strict=True))
        pinned_ids = {p.item_id for p in pins} & pool_scores.keys()
        if pinned_ids:  # out of the pool: they go where they are pinned
            keep = [i for i, item_id in enumerate(ids) if item_id not in pinned_ids]
            ids = [ids[i] for i in keep]
            values = values[keep]
            boost_columns = [column[keep] for column in boost_columns]
            codes = None if codes is None else codes[keep]
            if vectors is not None:
                vectors = vectors[keep]
    order = None
    if rules.boosts:
        values = boosted(values, boost_weights(rules, (), now_ms, boost_columns))
        order = np.argsort(-values, kind="stable")
        values = values[order]
        if codes is not None:
            codes = codes[order]
        if vectors is not None:
            vectors = vectors[order]
    chosen = select(values, vectors, rules.diversity or 0.0, codes, rules.max_per, depth)
    positions = chosen if order is None else order[chosen].tolist()
    out_ids = [ids[i] for i in positions]
    out_scores = values[chosen].tolist()
    flags = [False] * len(out_ids)
    for pin in sorted(pins, key=lambda p: p.position):
        at = min(pin.position - 1, len(out_ids))
        score = pool_scores.get(pin.item_id, (pinnable or {}).get(pin.item_id, 0.0))
        out_ids.insert(at, pin.item_id)
        out_scores.insert(at, float(score))
        flags.insert(at, True)
    return Ranked(out_ids[:depth], out_scores[:depth], flags[:depth])
