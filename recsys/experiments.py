"""A/B experiments: configuration, sticky assignment, and the statistics of a report.

An experiment splits traffic between variants by share. Assignment is a hash of the
experiment's name and the user id (an anonymous visitor's session id), so a visitor keeps
their variant across requests and replicas, and two experiments split independently.

A variant serves one of:
- `model`: the model version in service (the control);
- `popularity`: the trending/popular list, never the model;
- `model_version`: a named version, only while it is the one in service (serving keeps one
  version's factors in memory: a second one in parallel is not supported yet);
- `hybrid_weight`, `model_kind`: accepted by the schema for the selection and hybrid issues,
  refused until serving can serve them (a config must never say what is not served).
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from recsys.errors import RecsysError

NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
_NAME_RE = re.compile(NAME_PATTERN)
SHARE_TOLERANCE = 1e-6
VariantKind = Literal["model", "popularity", "model_version", "model_kind", "hybrid_weight"]
SERVED_KINDS = frozenset({"model", "popularity", "model_version"})
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
        "weight (hybrid_weight); none for model and popularity.")

    @model_validator(mode="after")
    def _value_fits_kind(self) -> Variant:
        if self.kind in ("model", "popularity") and self.value is not None:
            raise ValueError(f"variant {self.name}: a '{self.kind}' variant takes no value")
        if self.kind == "model_version" and not isinstance(self.value, str):
            raise ValueError(f"variant {self.name}: model_version needs the version id as value")
        if self.kind not in SERVED_KINDS:
            raise ValueError(f"variant {self.name}: kind '{self.kind}' cannot be served yet "
                             f"(served: {', '.join(sorted(SERVED_KINDS))})")
        return self


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


def check_versions(experiment: Experiment, known_versions: set[str]) -> None:
    """Refuse model_version variants that name a version that cannot be served
    (`known_versions`: serving passes the version in service)."""
    for variant in experiment.variants:
        if variant.kind == "model_version" and variant.value not in known_versions:
            raise ExperimentError(f"variant {variant.name}: unknown model version "
                                  f"'{variant.value}'")


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
