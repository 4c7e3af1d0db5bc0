"""The content model: item features from attributes, a map from features to the collaborative
item-factor space, content affinity of a user to items, and the hybrid score.

    f_i   = item feature row (sparse): per group, then the whole row L2-normalised
            text   TF-IDF of title + description + tags (sublinear tf, smoothed idf)
            cat    one-hot of every category ancestor ("a", "a/b", "a/b/c"), idf-weighted
            brand  one-hot, idf-weighted
            price  one-hot of the item's price band (quantile edges of the fitted items)
            attr   one-hot of name=value (text, bool); numbers by quantile band per name
    e_i   = normalise(f_i P)            content embedding: P = the top right singular vectors
                                        of the warm items' feature matrix (a dense, small
                                        copy of feature space, cheap to score)
    y_i   = f_i W                       mapped factors of an item without interactions
            ridge: W = argmin |F W - Y|^2 + lam |W|^2 = (F'F + lam I)^-1 F'Y, fitted on the
                   warm items (F: their features, Y: their ALS item factors)
            knn:   y_i = sum_j s_ij y_j / sum_j s_ij over the warm items j with the largest
                   embedding cosine s_ij = e_i . e_j (top `neighbours`, s_ij > 0)
    p_u   = normalise(sum of e_j over the user's recent items)     content profile
    score(u, i) = (1 - w) x_u . y_i / (|x_u| m_y) + w p_u . e_i    hybrid, m_y = mean |y_j|

The hybrid score is one dot product of a stacked user vector [(1-w) x_u / (|x_u| m_y), w p_u]
with a stacked item row [y_i, e_i] (`hybrid_user_vectors`, `stacked_items`), so every
scorer of the project (dense top-k, the ANN index) ranks it unchanged. w = 0 is the plain
collaborative ranking; w = 1 is content only (new users, factor-less versions).

Choices (map kind, ridge lam, blend w) are made on validation data from training only
(`choose_map`, `choose_blend`); the caller never passes a holdout.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.linalg

from recsys.errors import RecsysError
from recsys.item_attributes import ItemAttributes

TOKEN = re.compile(r"[^\W_]{2,}", re.UNICODE)
GROUPS = ("text", "cat", "brand", "price", "attr")
MAP_KINDS = ("ridge", "knn")
DEFAULT_EMBEDDING_DIMS = 32
DEFAULT_MAX_TEXT_FEATURES = 20_000
DEFAULT_BANDS = 8
# a history of at most this many items is "short" (a session, a new user): it is blended
# with `session_blend`, chosen on validation users cut to a few items
SHORT_HISTORY = 10
RIDGE_GRID = (0.1, 1.0, 10.0, 100.0)  # lam as a share of the mean diagonal of F'F
BLEND_GRID = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
# the primal solve inverts a (d x d) matrix; above this many features LSQR per factor column
_DENSE_SOLVE_MAX = 6_000


class ContentError(RecsysError, ValueError):
    """The content model cannot be built or read (no features, bad shapes, bad payload)."""


def tokens(text: str | None) -> list[str]:
    return TOKEN.findall(text.lower()) if text else []


# --- feature space ---------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureSpace:
    """Names and weights of the features, fitted on a set of items: everything needed to turn
    any item's attributes (also one never seen) into a feature row. Plain JSON."""

    names: tuple[str, ...]  # "t:word", "c:a/b", "b:brand", "p:3", "a:colour=red", "n:year:2"
    idf: np.ndarray  # float64 per feature
    price_edges: tuple[float, ...] = ()
    number_edges: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    index: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.index:
            object.__setattr__(self, "index", {n: j for j, n in enumerate(self.names)})

    @property
    def n_features(self) -> int:
        return len(self.names)

    def to_json(self) -> dict[str, Any]:
        return {"names": list(self.names), "idf": [round(float(v), 6) for v in self.idf],
                "price_edges": list(self.price_edges),
                "number_edges": {k: list(v) for k, v in self.number_edges.items()}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FeatureSpace:
        try:
            names = tuple(str(n) for n in data["names"])
            idf = np.asarray(data["idf"], dtype=np.float64)
            if idf.shape != (len(names),):
                raise ContentError("feature space: idf and names differ in length")
            return cls(names, idf, tuple(float(v) for v in data.get("price_edges", ())),
                       {str(k): tuple(float(x) for x in v)
                        for k, v in dict(data.get("number_edges", {})).items()})
        except (KeyError, TypeError, ValueError) as exc:
            raise ContentError(f"feature space: malformed payload: {exc}") from None

    def transform(self, items: Sequence[ItemAttributes | None]) -> sp.csr_matrix:
        """Feature rows (float32 CSR, rows L2-normalised; an item without any known feature,
        or None, is an empty row)."""
        indptr, indices, values = [0], [], []
        for item in items:
            row = self._row(item) if item is not None else {}
            indices.extend(row)
            values.extend(row.values())
            indptr.append(len(indices))
        out = sp.csr_matrix((np.asarray(values, np.float32), np.asarray(indices, np.int64),
                             np.asarray(indptr, np.int64)),
                            shape=(len(items), self.n_features))
        out.sum_duplicates()
        return out

    def _row(self, item: ItemAttributes) -> dict[int, float]:
        row: dict[int, float] = {}
        for group, counts in raw_features(item, self.price_edges, self.number_edges).items():
            weights = {self.index[n]: (1.0 + math.log(c) if group == "text" else 1.0)
                       * float(self.idf[self.index[n]])
                       for n, c in counts.items() if n in self.index}
            norm = math.sqrt(sum(v * v for v in weights.values()))
            if norm > 0:
                for j, v in weights.items():
                    row[j] = v / norm
        norm = math.sqrt(sum(v * v for v in row.values()))
        return {j: v / norm for j, v in row.items()} if norm > 0 else {}


def _band(value: float, edges: Sequence[float]) -> int:
    return int(np.searchsorted(np.asarray(edges), value, side="right"))


def raw_features(item: ItemAttributes, price_edges: Sequence[float] = (),
                 number_edges: Mapping[str, Sequence[float]] | None = None
                 ) -> dict[str, Counter[str]]:
    """Feature names with counts per group, before any vocabulary or weighting."""
    groups: dict[str, Counter[str]] = {g: Counter() for g in GROUPS}
    text = [item.title, item.description, *item.tags]
    groups["text"].update("t:" + t for part in text for t in tokens(part))
    groups["cat"].update("c:" + a for a in item.ancestors())
    if item.brand:
        groups["brand"]["b:" + item.brand.lower()] += 1
    if item.price is not None and price_edges:
        groups["price"][f"p:{_band(float(item.price), price_edges)}"] += 1
    for name, value in item.attributes.items():
        if isinstance(value, bool) or isinstance(value, str):
            groups["attr"][f"a:{name}={str(value).lower()}"] += 1
        elif number_edges and name in number_edges:
            groups["attr"][f"n:{name}:{_band(float(value), number_edges[name])}"] += 1
    return groups


def _quantile_edges(values: Sequence[float], bands: int) -> tuple[float, ...]:
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2 or bands < 2:
        return ()
    edges = np.unique(np.quantile(v, np.linspace(0, 1, bands + 1)[1:-1]))
    return tuple(float(e) for e in edges)


def fit_feature_space(items: Sequence[ItemAttributes], *, bands: int = DEFAULT_BANDS,
                      max_text_features: int = DEFAULT_MAX_TEXT_FEATURES,
                      min_df: int = 2) -> FeatureSpace:
    """The vocabulary and idf of `items`. A feature on fewer than `min_df` items is dropped
    (it cannot relate two items); text keeps the `max_text_features` most frequent tokens."""
    prices = [float(i.price) for i in items if i.price is not None]
    numbers: dict[str, list[float]] = {}
    for item in items:
        for name, value in item.attributes.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                numbers.setdefault(name, []).append(float(value))
    price_edges = _quantile_edges(prices, bands)
    number_edges = {n: e for n, v in numbers.items() if (e := _quantile_edges(v, bands))}
    df: Counter[str] = Counter()
    text_df: Counter[str] = Counter()
    for item in items:
        for group, counts in raw_features(item, price_edges, number_edges).items():
            (text_df if group == "text" else df).update(counts.keys())
    kept = [n for n, c in df.items() if c >= min_df]
    kept += [n for n, c in text_df.most_common(max_text_features) if c >= min_df]
    kept.sort()
    n = len(items)
    counts = {**df, **text_df}
    idf = np.array([math.log((1 + n) / (1 + counts[name])) + 1.0 for name in kept])
    if not kept:
        raise ContentError(f"no feature occurs on {min_df} or more of the {n} item(s): "
                           "nothing to relate items by")
    return FeatureSpace(tuple(kept), idf, price_edges, number_edges)


# --- embeddings and maps ---------------------------------------------------------------------
def normalise_rows(matrix: np.ndarray) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return np.divide(m, norms, out=np.zeros_like(m), where=norms > 0)


def embedding_projection(features: sp.csr_matrix, dims: int = DEFAULT_EMBEDDING_DIMS,
                         seed: int = 42) -> np.ndarray:
    """P (n_features x d'): the top right singular vectors of the feature matrix, d' <=
    dims. e_i = normalise(f_i P) keeps most of the cosine structure of feature space."""
    n, d = features.shape
    rank = min(dims, n - 1, d - 1)
    if rank < 1:
        return np.eye(d, dtype=np.float32)[:, :max(min(dims, d), 1)]
    rng = np.random.default_rng(seed)
    _, _, vt = scipy.sparse.linalg.svds(features.astype(np.float64), k=rank,
                                        v0=rng.standard_normal(min(n, d)))
    return np.ascontiguousarray(vt[::-1].T, dtype=np.float32)


def embed(features: sp.csr_matrix, projection: np.ndarray) -> np.ndarray:
    return normalise_rows(features @ projection)


def ridge_map(features: sp.csr_matrix, factors: np.ndarray, lam: float) -> np.ndarray:
    """W = (F'F + lam I)^-1 F'Y (n_features x k): the least-squares map from features to
    factors with an L2 penalty. Dense primal solve for small feature spaces, else LSQR per
    factor column (same minimiser)."""
    f = sp.csr_matrix(features, dtype=np.float64)
    y = np.asarray(factors, dtype=np.float64)
    if f.shape[0] != y.shape[0]:
        raise ContentError(f"{f.shape[0]} feature rows but {y.shape[0]} factor rows")
    if lam <= 0:
        raise ContentError("ridge lam must be > 0")
    d = f.shape[1]
    if d <= _DENSE_SOLVE_MAX:
        gram = (f.T @ f).toarray()
        gram[np.diag_indices(d)] += lam
        return scipy.linalg.solve(gram, np.asarray(f.T @ y), assume_a="pos").astype(np.float32)
    damp = math.sqrt(lam)
    cols = [scipy.sparse.linalg.lsqr(f, y[:, j], damp=damp, atol=1e-6, btol=1e-6)[0]
            for j in range(y.shape[1])]
    return np.stack(cols, axis=1).astype(np.float32)


def ridge_scale(features: sp.csr_matrix) -> float:
    """The mean diagonal of F'F: lam is chosen as a share of it so that one grid fits any
    number of items and features."""
    f = sp.csr_matrix(features)
    diag = np.asarray(f.multiply(f).sum(axis=0)).ravel()
    used = diag[diag > 0]
    return float(used.mean()) if used.size else 1.0


def knn_map(embeddings: np.ndarray, warm_embeddings: np.ndarray, warm_factors: np.ndarray,
            neighbours: int) -> np.ndarray:
    """y_i = sum_j s_ij y_j / sum_j s_ij over the `neighbours` warm items of largest
    embedding cosine (s_ij > 0); zeros for an item with no such neighbour."""
    e = np.asarray(embeddings, np.float32)
    warm = np.asarray(warm_embeddings, np.float32)
    y = np.asarray(warm_factors, np.float32)
    out = np.zeros((len(e), y.shape[1]), dtype=np.float32)
    if len(e) == 0 or len(warm) == 0:
        return out
    top = min(neighbours, len(warm))
    for start in range(0, len(e), 1024):
        sims = e[start:start + 1024] @ warm.T
        idx = np.argpartition(-sims, top - 1, axis=1)[:, :top]
        s = np.maximum(np.take_along_axis(sims, idx, axis=1), 0.0)
        total = s.sum(axis=1, keepdims=True)
        block = np.einsum("bn,bnk->bk", s, y[idx])
        out[start:start + 1024] = np.divide(block, total, out=np.zeros_like(block),
                                            where=total > 0)
    return out


# --- the fitted model ------------------------------------------------------------------------
@dataclass
class ContentModel:
    """A fitted content model: what a version publishes beside its item factors.

    `embeddings` and `mapped` are per item of the version (its item order); `weights` (the
    ridge map W) or, for the knn map, the warm items' embeddings and factors turn the
    features of a new item into factors."""

    space: FeatureSpace
    projection: np.ndarray  # n_features x d'
    map_kind: str  # "ridge" | "knn" | "none" (factor-less version: content similarity only)
    weights: np.ndarray | None = None  # ridge: n_features x k
    neighbours: int = 50
    blend: float = 0.0  # w of the hybrid score
    session_blend: float = 0.0  # w for users with a short history (sessions, new users)
    factor_scale: float = 1.0  # m_y: mean norm of the warm item factors
    record: dict[str, Any] = field(default_factory=dict)  # what was measured to choose

    def features(self, items: Sequence[ItemAttributes | None]) -> sp.csr_matrix:
        return self.space.transform(items)

    def blend_for(self, history_length: int) -> float:
        """The hybrid weight for a user with this many items."""
        return self.session_blend if history_length <= SHORT_HISTORY else self.blend

    def embeddings(self, items: Sequence[ItemAttributes | None]) -> np.ndarray:
        return embed(self.features(items), self.projection)

    def map_factors(self, items: Sequence[ItemAttributes | None],
                    warm_embeddings: np.ndarray | None = None,
                    warm_factors: np.ndarray | None = None) -> np.ndarray:
        """Factors of items from their attributes alone (cold items, new items)."""
        if self.map_kind == "ridge" and self.weights is not None:
            return np.asarray(self.features(items) @ self.weights, dtype=np.float32)
        if self.map_kind == "knn":
            if warm_embeddings is None or warm_factors is None:
                raise ContentError("the knn map needs the warm items' embeddings and factors")
            return knn_map(self.embeddings(items), warm_embeddings, warm_factors,
                           self.neighbours)
        raise ContentError(f"a {self.map_kind!r} content model maps no factors")

    def to_payload(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON manifest part, arrays): plain data for publishing, no pickles."""
        meta = {"space": self.space.to_json(), "map_kind": self.map_kind,
                "neighbours": self.neighbours, "blend": self.blend,
                "session_blend": self.session_blend,
                "factor_scale": self.factor_scale, "record": self.record}
        arrays = {"projection": self.projection}
        if self.weights is not None:
            arrays["weights"] = self.weights
        return meta, arrays

    @classmethod
    def from_payload(cls, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
                     ) -> ContentModel:
        try:
            space = FeatureSpace.from_json(meta["space"])
            projection = np.asarray(arrays["projection"], dtype=np.float32)
            weights = arrays.get("weights")
            model = cls(space, projection, str(meta["map_kind"]),
                        None if weights is None else np.asarray(weights, np.float32),
                        int(meta.get("neighbours", 50)), float(meta.get("blend", 0.0)),
                        float(meta.get("session_blend", 0.0)),
                        float(meta.get("factor_scale", 1.0)), dict(meta.get("record", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise ContentError(f"content model: malformed payload: {exc}") from None
        if projection.ndim != 2 or projection.shape[0] != space.n_features:
            raise ContentError("content model: projection does not match the feature space")
        if model.weights is not None and model.weights.shape[0] != space.n_features:
            raise ContentError("content model: ridge weights do not match the feature space")
        return model


# --- publishing: one blob per version ------------------------------------------------------
CONTENT_FORMAT = "content-npz-1"


def pack_content(model: ContentModel, embeddings: np.ndarray) -> bytes:
    """The content model and the version's item embeddings as np.savez bytes (plain arrays,
    the JSON part as UTF-8 bytes; no pickle)."""
    meta, arrays = model.to_payload()
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
             embeddings=np.asarray(embeddings, dtype=np.float32), **arrays)
    return buffer.getvalue()


def unpack_content(raw: bytes, n_items: int) -> tuple[ContentModel, np.ndarray]:
    """(model, item embeddings) of a version of `n_items` items; ContentError if the blob is
    not one, or does not fit the version."""
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        meta = json.loads(arrays.pop("meta").tobytes().decode())
    except (OSError, ValueError, KeyError, UnicodeDecodeError) as exc:
        raise ContentError(f"content model: unreadable blob: {exc}") from None
    embeddings = arrays.pop("embeddings", None)
    model = ContentModel.from_payload(meta, arrays)
    if embeddings is None or embeddings.shape != (n_items, model.projection.shape[1]):
        raise ContentError(f"content model: embeddings do not match {n_items} items x "
                           f"{model.projection.shape[1]} dimensions")
    if not np.isfinite(embeddings).all():
        raise ContentError("content model: embeddings contain NaN or Inf")
    return model, embeddings


# --- users ----------------------------------------------------------------------------------
def content_profiles(histories: Iterable[np.ndarray], embeddings: np.ndarray) -> np.ndarray:
    """p_u = normalise(sum of e_j over each user's items): one row per history (zeros for
    an empty one)."""
    e = np.asarray(embeddings, dtype=np.float32)
    rows = [e[np.asarray(h, dtype=np.int64)].sum(axis=0) if len(h) else
            np.zeros(e.shape[1], np.float32) for h in histories]
    return normalise_rows(np.vstack(rows)) if rows else np.zeros((0, e.shape[1]), np.float32)


def hybrid_user_vectors(user_factors: np.ndarray, profiles: np.ndarray, blend: float,
                        factor_scale: float) -> np.ndarray:
    """[(1-w) x_u / (|x_u| m_y), w p_u]: dotted with `stacked_items` gives the hybrid score."""
    if not 0.0 <= blend <= 1.0:
        raise ContentError("blend weight must be in [0, 1]")
    x = np.asarray(user_factors, dtype=np.float32)
    collab = normalise_rows(x) * np.float32((1.0 - blend) / max(factor_scale, 1e-12))
    return np.hstack([collab, np.float32(blend) * np.asarray(profiles, np.float32)])


def stacked_items(item_factors: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """[y_i, e_i] per item: the item side of the hybrid dot product."""
    return np.hstack([np.asarray(item_factors, np.float32), np.asarray(embeddings, np.float32)])


def factor_scale(item_factors: np.ndarray) -> float:
    norms = np.linalg.norm(np.asarray(item_factors, np.float64), axis=1)
    used = norms[norms > 0]
    return float(used.mean()) if used.size else 1.0


__all__ = ["BLEND_GRID", "CONTENT_FORMAT", "MAP_KINDS", "RIDGE_GRID", "ContentError",
           "ContentModel", "pack_content", "unpack_content",
           "FeatureSpace", "content_profiles", "embed", "embedding_projection", "factor_scale",
           "fit_feature_space", "hybrid_user_vectors", "knn_map", "normalise_rows",
           "raw_features", "ridge_map", "ridge_scale", "stacked_items", "tokens"]
