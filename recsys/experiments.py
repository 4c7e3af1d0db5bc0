"""A/B experiments: configuration, sticky assignment, and the statistics of a report.

An experiment splits traffic between variants by share. Assignment is a hash of the
experiment's name and the user id (an anonymous visitor's session id), so a visitor keeps
their variant across requests and replicas, and two experiments split independently.

A variant serves one of:
- `model`: the model version in service (the control);
- `popularity`: the trending/popular list, never the model;
- `model_version`: a named version staged in Redis (serving holds its factors beside the
  served version's and folds each user's recent items in against them per request);
- `model_kind`: the newest retained version (current or rollback list) whose winner kind is
  the value, resolved once when the experiment is saved (`Variant.version`);
- `hybrid_weight`: the served version's hybrid score with blend weight w = value instead of
  the version's trained weight (only for a served version with a content model).

The versions an experiment names (`pinned_versions`) are kept by the trainer's garbage
collection until the experiment is deleted.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from recsys.errors import RecsysError

NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
_NAME_RE = re.compile(NAME_PATTERN)
SHARE_TOLERANCE = 1e-6
VariantKind = Literal["model", "popularity", "model_version", "model_kind", "hybrid_weight"]
VERSION_KINDS = frozenset({"model_version", "model_kind"})
# Fewest impressions per variant before a report draws a conclusion.
MIN_IMPRESSIONS = 100
Z_95 = 1.959963984540054


class ExperimentError(RecsysError):
    """An experiment configuration that cannot be served."""


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=NAME_PATTERN, description="Variant name (in reports).")]
    kind: VariantKind = Field(description="What this variant serves.")
    share: float = Field(gt=0.0, le=1.0, allow_inf_nan=False,
                         description="Share of traffic, (0, 1]; all shares sum to 1.")
    value: str | float | None = Field(
        default=None, description="The model version (model_version), kind (model_kind) or "
        "weight in [0, 1] (hybrid_weight); none for model and popularity.")
    version: str | None = Field(
        default=None, description="The model version this variant serves (model_version: "
        "the value; model_kind: resolved when the experiment is saved). Set by the server.")

    @model_validator(mode="after")
    def _value_fits_kind(self) -> Variant:
        if self.kind in ("model", "popularity", "hybrid_weight") and self.version is not None:
            raise ValueError(f"variant {self.name}: a '{self.kind}' variant names no version")
        if self.kind in ("model", "popularity") and self.value is not None:
            raise ValueError(f"variant {self.name}: a '{self.kind}' variant takes no value")
        if self.kind in VERSION_KINDS and not isinstance(self.value, str):
            what = "version id" if self.kind == "model_version" else "model kind"
            raise ValueError(f"variant {self.name}: {self.kind} needs the {what} as value")
        if self.kind == "hybrid_weight" and not (isinstance(self.value, float)
                                                 and 0.0 <= self.value <= 1.0):
            raise ValueError(f"variant {self.name}: hybrid_weight needs a weight in [0, 1] "
                             f"as value; got {self.value!r}")
        return self

    @field_validator("value", mode="before")
    @classmethod
    def _weight_as_number(cls, value: object, info: ValidationInfo) -> object:
        # the CLI's NAME=hybrid_weight:0.3:SHARE gives the weight as text
        if info.data.get("kind") != "hybrid_weight":
            return value
        if isinstance(value, bool):
            raise ValueError("hybrid_weight needs a number, not a boolean")
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                return value
            return number if math.isfinite(number) else value
        return value

    @property
    def blend(self) -> float | None:
        """The hybrid weight this variant imposes (None: the version's own)."""
        return float(self.value) if self.kind == "hybrid_weight" else None  # type: ignore[arg-type]


class Experiment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    variants: list[Variant] = Field(min_length=2, max_length=16)
    active: bool = Field(default=True, description="Only an active experiment assigns.")
    created_at: int | None = Field(default=None, description="Epoch ms (set by the server).")

    @field_validator("variants")
    @classmethod
    def _shares_and_names(cls, variants: list[Variant]) -> list[Variant]:
        names = [v.name for v in variants]
        if len(set(names)) != len(names):
            raise ValueError("variant names must be unique")
        total = math.fsum(v.share for v in variants)
        if abs(total - 1.0) > SHARE_TOLERANCE:
            raise ValueError(f"variant shares must sum to 1; they sum to {total:g}")
        return variants

    def assign(self, subject: str) -> Variant:
        """The subject's variant: a hash of (experiment, subject) mapped onto the shares."""
        point = bucket_point(self.name, subject)
        cumulative = 0.0
        for variant in self.variants:
            cumulative += variant.share
            if point < cumulative:
                return variant
        return self.variants[-1]  # rounding: the point fell beyond the last sum


def bucket_point(experiment: str, subject: str) -> float:
    """A uniform point in [0, 1) fixed by (experiment, subject)."""
    digest = hashlib.blake2b(f"{experiment}\x1f{subject}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def manifests_needed(experiment: Experiment, current: str | None, previous: Sequence[str]
                     ) -> list[str]:
    """The versions whose manifests `resolve_versions` needs: the retained ones (current,
    rollback list) and the experiment's model_version values."""
    named = [str(v.value) for v in experiment.variants if v.kind == "model_version"]
    return list(dict.fromkeys([*([current] if current else []), *previous, *named]))


def serves_hybrid(manifest: Mapping[str, Any]) -> bool:
    """A version the API scores with the hybrid blend: a factor model with a fitted content
    model (serving/served_model.py derives its hybrid items under the same condition)."""
    return (manifest.get("model_kind", "als") == "als" and int(manifest.get("factors", 0)) > 0
            and bool((manifest.get("content") or {}).get("fitted")))


def resolve_versions(experiment: Experiment, manifests: Mapping[str, Mapping[str, Any]],
                     current: str | None, previous: Sequence[str]) -> Experiment:
    """The experiment with each variant's `version` set, or ExperimentError naming the
    variant that cannot be served.

    `manifests`: version -> manifest of every version staged in Redis among the current one,
    the rollback list (`previous`, newest first) and the model_version values."""
    variants = []
    retained = [v for v in [current, *previous] if v is not None and v in manifests]
    for variant in experiment.variants:
        version = None
        if variant.kind == "model_version":
            if variant.value not in manifests:
                raise ExperimentError(f"variant {variant.name}: unknown model version "
                                      f"'{variant.value}' (not staged in Redis)")
            version = str(variant.value)
        elif variant.kind == "model_kind":
            kinds = {v: str(manifests[v].get("model_kind", "als")) for v in retained}
            version = next((v for v in retained if kinds[v] == variant.value), None)
            if version is None:
                raise ExperimentError(
                    f"variant {variant.name}: no retained model version of kind "
                    f"'{variant.value}' (retained kinds: "
                    f"{', '.join(sorted(set(kinds.values()))) or 'none'})")
        elif variant.kind == "hybrid_weight" and not (
                current in manifests and serves_hybrid(manifests[current])):
            raise ExperimentError(f"variant {variant.name}: hybrid_weight needs a served "
                                  "version with a content model; the one in service has none")
        variants.append(variant.model_copy(update={"version": version}))
    return experiment.model_copy(update={"variants": variants})


def pinned_versions(configs: Iterable[bytes | str]) -> set[str]:
    """The model versions the stored experiments (raw JSON configs) serve: garbage collection
    keeps them. An unreadable config pins nothing (and is logged by the API)."""
    pinned = set()
    for raw in configs:
        try:
            experiment = Experiment.model_validate_json(raw)
        except ValueError:
            continue
        pinned.update(v.version for v in experiment.variants if v.version)
    return pinned


# --- statistics -----------------------------------------------------------------------------
def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a proportion (good at small n and at rates near 0):
    (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportion_z(s1: int, n1: int, s2: int, n2: int) -> tuple[float, float]:
    """Pooled two-proportion z-test: (z, two-sided p-value). (0, 1) when undefined."""
    if n1 <= 0 or n2 <= 0:
        return 0.0, 1.0
    pooled = (s1 + s2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 0.0, 1.0
    z = (s1 / n1 - s2 / n2) / se
    return z, math.erfc(abs(z) / math.sqrt(2))


def report(name: str, counts: dict[str, dict[str, int]],
           min_impressions: int = MIN_IMPRESSIONS) -> dict[str, object]:
    """Per-variant CTR and conversion with 95 % Wilson intervals; the first variant is the
    control and each other one is z-tested against it. `counts`: variant -> {impressions,
    click, addtocart, purchase}."""
    variants = []
    for variant, c in counts.items():
        n, clicks = c.get("impressions", 0), c.get("click", 0)
        purchases = c.get("purchase", 0)
        variants.append({
            "name": variant, "impressions": n, "clicks": clicks,
            "addtocarts": c.get("addtocart", 0), "purchases": purchases,
            "ctr": clicks / n if n else 0.0, "ctr_ci95": wilson_interval(clicks, n),
            "conversion": purchases / n if n else 0.0,
            "conversion_ci95": wilson_interval(purchases, n)})
    enough = bool(variants) and all(v["impressions"] >= min_impressions for v in variants)
    out: dict[str, object] = {"name": name, "variants": variants, "enough_data": enough,
                              "min_impressions": min_impressions, "p_value": None, "z": None}
    if len(variants) >= 2:
        control, comparisons = variants[0], []
        for other in variants[1:]:
            z, p = two_proportion_z(int(other["clicks"]), int(other["impressions"]),
                                    int(control["clicks"]), int(control["impressions"]))
            comparisons.append({"variant": other["name"], "against": control["name"],
                                "z": z, "p_value": p})
        out["comparisons"] = comparisons
        out["z"], out["p_value"] = comparisons[0]["z"], comparisons[0]["p_value"]
    return out


def counts_from_hash(raw: dict[bytes, bytes] | dict[str, str]) -> dict[str, dict[str, int]]:
    """The Redis counts hash ("{variant}:{counter}" -> n) as variant -> {counter: n}."""
    out: dict[str, dict[str, int]] = {}
    for field_name, value in raw.items():
        text = field_name.decode() if isinstance(field_name, bytes) else field_name
        variant, _, counter = text.rpartition(":")
        if variant:
            out.setdefault(variant, {})[counter] = int(value)
    return out


def ordered_counts(experiment: Experiment, counts: dict[str, dict[str, int]]
                   ) -> dict[str, dict[str, int]]:
    """Counts in the experiment's variant order (the first is the control), zeros included."""
    return {v.name: counts.get(v.name, {}) for v in experiment.variants}
