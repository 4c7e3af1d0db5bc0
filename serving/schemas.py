"""Request and response schemas of the public API (not the storage shapes in Redis).

Handlers on the hot path return pre-built JSON (see `serving.responses`); these models then
document the shape in OpenAPI and validate request bodies.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from recsys.events import MAX_ID_LENGTH, RATING_MAX, RATING_MIN, EventType
from recsys.item_attributes import InvalidItemAttributes, ItemAttributes
from recsys.rules import PLACEMENT_NAME_PATTERN, Rules

# The schema's own bound on lists (no setting can allow more); routes apply the settings.
from recsys.settings import MAX_ANONYMOUS_ITEMS_LIMIT

# No control characters, at least one visible character: the same rule as recsys.events ids.
ID_PATTERN = r"^[^\x00-\x1F\x7F]*[^\x00-\x20\x7F][^\x00-\x1F\x7F]*$"
TEXT_PATTERN = r"^[^\x00-\x1F\x7F]*$"

Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
AttributeValue = str | bool | int | FiniteFloat


class ErrorOut(BaseModel):
    detail: Any = Field(description="What was wrong, in words (or a list of field errors).")


# The 503 of every route that takes `placement` (serving.deps).
PLACEMENT_UNAVAILABLE: dict[str, Any] = {
    "model": ErrorOut, "description": "a placement this process has not cached cannot be "
    "looked up (Redis unavailable)"}


# --- catalog -----------------------------------------------------------------------------
class CatalogItemIn(BaseModel):
    """An item as the shop describes it. Bounds are recsys.item_attributes' (checked by
    `ItemAttributes.validate`: a 422 names the field)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=512, pattern=TEXT_PATTERN,
                             description="The title.")
    image_url: str | None = Field(default=None, max_length=2048, pattern=TEXT_PATTERN)
    category: Id | None = Field(default=None, description="The item's category: alone, a "
                                "one-level path; with `category_paths`, it must be the leaf "
                                "of the first path.")
    category_paths: list[list[str]] | None = Field(
        default=None, description="Every category the item is in, each a path from the root "
        "to the leaf (e.g. [[\"home\", \"kitchen\", \"pans\"]]); the first is its primary "
        "category.")
    brand: str | None = None
    price: float | None = Field(default=None, ge=0.0, le=1e12, allow_inf_nan=False)
    description: str | None = Field(default=None, description="Free text.")
    tags: list[str] = Field(default_factory=list)
    available: bool = True
    attributes: dict[Annotated[str, Field(max_length=128)], AttributeValue] = Field(
        default_factory=dict, max_length=64, description="Free attributes (colour, size...)."
    )

    def to_attributes(self, item_id: str) -> ItemAttributes:
        """The validated ItemAttributes; InvalidItemAttributes names the field."""
        paths = tuple(tuple(path) for path in self.category_paths or ())
        if self.category is not None:
            if not paths:
                paths = ((self.category,),)
            elif paths[0] and paths[0][-1] != self.category:
                raise InvalidItemAttributes(item_id, "category", "must be the leaf of the "
                                            f"first category path ({paths[0][-1]!r})")
        return ItemAttributes(
            item_id, category_paths=paths, brand=self.brand, price=self.price,
            title=self.name, description=self.description, tags=tuple(self.tags),
            attributes=dict(self.attributes), available=self.available,
            image_url=self.image_url).validate()


# One bulk write at most: a shop syncing a larger catalog sends several batches.
MAX_CATALOG_BATCH = 1000


class CatalogEntryIn(CatalogItemIn):
    """One item of a bulk catalog write: the per-item body plus its id."""

    item_id: Id


class CatalogItemOut(BaseModel):
    item_id: str
    name: str | None = None
    image_url: str | None = None
    category: str | None = None
    category_paths: list[list[str]] = Field(default_factory=list)
    brand: str | None = None
    price: float | None = None
    description: str | None = None
    tags: list[str] = Field(default_factory=list)
    available: bool = True
    attributes: dict[str, Any] = Field(default_factory=dict)


class CatalogBatchOut(BaseModel):
    stored: int = Field(description="How many items were written (all of them, or none).")
    items: list[CatalogItemOut] = Field(description="The stored items, in request order.")


# --- recommendations ---------------------------------------------------------------------
class BecauseItem(BaseModel):
    item_id: str = Field(description="An item of the user's history.")
    contribution: float = Field(description="Its share of the score, c_j y_i^T A^-1 y_j.")


class RecommendedItem(BaseModel):
    item_id: str
    score: float = Field(description="Model score, similarity or popularity (by source).")
    fresh: bool | None = Field(
        default=None, description="true when the item's vector was learned by the stream from "
        "its first interactions (the version in service does not have it yet); absent "
        "otherwise.")
    name: str | None = None
    image_url: str | None = None
    category: str | None = None
    brand: str | None = None
    price: float | None = None
    available: bool | None = None
    attributes: dict[str, Any] | None = None
    pinned: bool | None = Field(default=None, description="True when a rule's pin put the "
                                "item at its position (absent otherwise).")
    because: list[BecauseItem] | None = Field(
        default=None, description="explain=true: the user's history items that contributed "
        "most to the item's score, largest first ([] when the list is not the ALS model's).")


class RecommendationList(BaseModel):
    recommendation_id: str = Field(
        description="Id of this served list: name it in events (context.recommendation_id) "
        "so they are attributed to it.")
    variant: str | None = Field(
        default=None, description="The experiment variant that served it (none outside an "
        "experiment).")
    items: list[RecommendedItem]
    model_version: str | None = Field(description="Model version that produced the list.")
    source: str = Field(
        description="personalized | similar | popular | anonymous | popularity (the version "
        "is the popularity model) | fallback:<reason>")
    fallback_sources: list[str] = Field(
        default_factory=list,
        description="For fallbacks: which lists filled it (trending:<window>, "
        "popular:alltime, category), in order.")
    placement: str | None = Field(default=None, description="The placement whose rules "
                                  "applied (absent without one).")


class UserRecommendations(RecommendationList):
    user_id: str


class SimilarItems(RecommendationList):
    item_id: str


class PopularItems(RecommendationList):
    window: str


class SessionInteraction(BaseModel):
    model_config = ConfigDict(extra="ignore")

    item_id: Id
    event_type: EventType = EventType.VIEW
    value: float | None = Field(default=None, allow_inf_nan=False,
                                description="Rating 1-5 for rating events.")

    @model_validator(mode="after")
    def _rating_needs_value(self) -> SessionInteraction:
        if self.event_type is EventType.RATING and (
                self.value is None or not RATING_MIN <= self.value <= RATING_MAX):
            raise ValueError("a rating interaction needs a value between 1 and 5")
        return self


class AnonymousRequest(BaseModel):
    items: list[SessionInteraction] = Field(
        min_length=1, max_length=MAX_ANONYMOUS_ITEMS_LIMIT,
        description="The visitor's interactions, oldest first (at most api_max_anonymous_items).")
    rules: Rules | None = Field(default=None, description="Business rules of this request "
                                "(as in POST /v1/users/{user_id}/recommendations).")


class RecommendRequest(BaseModel):
    """The personalised list's parameters, and per-request business rules."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(default=10, ge=1, description="How many items: 1..api_max_k (setting).")
    offset: int = Field(default=0, ge=0, description="Skip this many (paging); at most "
                        "api_max_offset (setting).")
    exclude_seen: bool = True
    placement: str | None = Field(default=None, pattern=PLACEMENT_NAME_PATTERN,
                                  description="Apply this stored placement's rules first.")
    explain: bool = Field(default=False, description="Add `because` to each item.")
    rules: Rules | None = Field(default=None, description="Boosts, pins, max_per and "
                                "diversity of this request.")


# --- events ------------------------------------------------------------------------------
class EventError(BaseModel):
    index: int
    reason: str
    field: str | None
    message: str


class EventsAccepted(BaseModel):
    accepted: int
    rejected: int
    event_ids: list[str]
    errors: list[EventError]


# --- classic API -------------------------------------------------------------------------
class Feedback(BaseModel):
    model_config = ConfigDict(extra="ignore")

    user_id: Id | int
    product_id: Id | int
    rating: float = Field(ge=RATING_MIN, le=RATING_MAX, allow_inf_nan=False)
    idempotency_key: Id | None = Field(
        default=None, description="Same key (per user) on a retry -> same event id, so the "
        "rating counts once. The Idempotency-Key header does the same.")


class FeedbackAccepted(BaseModel):
    status: str
    event_id: str


class ClassicRecommendation(BaseModel):
    product_id: str
    score: float
    name: str | None = Field(default=None, description="The catalogue's name of the product "
                             "(null when the catalogue does not have it).")
    image_url: str | None = Field(default=None, description="The catalogue's image.")


class ClassicRecommendations(BaseModel):
    user_id: str
    recommendation_id: str
    variant: str | None = None
    recommendations: list[ClassicRecommendation]
    model_version: str | None
    source: str


# --- health ------------------------------------------------------------------------------
class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str = Field(description="ready | degraded (answers come from fallbacks)")
    degraded: list[str] = Field(
        default_factory=list,
        description="Why: redis_unavailable, no_model, event_ingest_unavailable, kafka_stalled.")
    redis: bool
    model_version: str | None
    items: int
