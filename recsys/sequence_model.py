"""The neural user tower: a user's recent items -> a user vector in the item-factor space.

One implementation of the tower's forward pass, in numpy, used by the trainer's evaluation,
the stream worker, the replay and serving's anonymous sessions ("same maths everywhere").
The PyTorch module that trains it (recsys.sequence_train) is tested equal to it; torch is
only needed to train.

Model: one causal self-attention block (SASRec-style, pre-layer-norm, one head) over the
last `window` items of the user's sequence. Item embeddings are tied: the same matrix E is
the tower's input and the version's item factors, so serving scores a tower vector exactly
like an ALS user vector (score_i = u . E_i).

For a sequence s_1..s_L (L <= window, oldest first) the user vector is the block's output
at the last position:

    x_t = E[s_t] + P[window - L + t - 1]              positions count back from the newest
    z_t = LN1(x_t)
    q = z_L Wq + bq ;  k_t = z_t Wk + bk ;  v_t = z_t Wv + bv
    a = softmax_t(q . k_t / sqrt(d)) . v  Wo + bo     (the last position sees every item)
    h = x_L + a
    h = h + relu(LN2(h) W1 + b1) W2 + b2
    u = LNf(h)

The sequence of a user: the distinct items of their history ordered by the time they last
touched each (ties by a hash of the item id), which is exactly what the stream table holds
(recsys.userstate: item -> [weight, last time]). Sequences longer than the
window are truncated to their newest `window` items; items the version does not know are
skipped (and counted by the callers).

Weights travel as plain arrays (np.savez bytes, no pickle) beside the version's item factors.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

TOWER_FORMAT = "sasrec1-npz"
LAYER_NORM_EPS = 1e-5
# Tower arrays besides the item embeddings (which are the version's item factors).
TOWER_ARRAYS = ("pos", "ln1_g", "ln1_b", "wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo",
                "ln2_g", "ln2_b", "w1", "b1", "w2", "b2", "lnf_g", "lnf_b")


class TowerFormatError(ValueError):
    """Tower weights that this code cannot read (unknown format, missing or misshapen arrays)."""


def tie_key(item: str) -> int:
    """Order of items touched at the same time: a stable hash of the id. Not the id itself:
    sources with coarse clocks have many ties (half of ML-100K's consecutive ratings share a
    second), and an id order inside them is a pattern a sequence model learns instead of
    the user's taste."""
    return int.from_bytes(hashlib.blake2b(item.encode("utf-8"), digest_size=8).digest(),
                          "little")


def recent_items(items: Mapping[str, Sequence[float]]) -> list[str]:
    """A history (item -> [weight, last time ms, ...]) as a sequence, oldest first: ordered by
    last time, ties by `tie_key`. The one ordering rule of the trainer, stream and serving."""
    return [item for item, _ in sorted(items.items(),
                                       key=lambda kv: (kv[1][1], tie_key(kv[0])))]


@dataclass(frozen=True)
class Sequences:
    """Rows of known items per user (oldest first, truncated to the window), how many items
    were skipped because the model does not know them, and how many because they were older
    than the window."""

    rows: list[np.ndarray]
    unknown: int
    truncated: int


def to_rows(sequences: Iterable[Sequence[str]], item_index: Mapping[str, int],
            window: int) -> Sequences:
    """Item id sequences -> row sequences of the items `item_index` knows, newest `window`."""
    out: list[np.ndarray] = []
    unknown = truncated = 0
    for seq in sequences:
        rows = [row for row in (item_index.get(item) for item in seq) if row is not None]
        unknown += len(seq) - len(rows)
        if len(rows) > window:
            truncated += len(rows) - window
            rows = rows[-window:]
        out.append(np.asarray(rows, dtype=np.int64))
    return Sequences(out, unknown, truncated)


def _layer_norm(x: np.ndarray, gain: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + LAYER_NORM_EPS) * gain + bias


@dataclass(frozen=True, eq=False)
class UserTower:
    """Tower weights (float32) with the version's item factors as input embeddings."""

    item_factors: np.ndarray  # (n_items, d): E
    weights: Mapping[str, np.ndarray]

    def __post_init__(self) -> None:
        missing = [name for name in TOWER_ARRAYS if name not in self.weights]
        if missing:
            raise TowerFormatError(f"tower weights lack {missing}")
        d = self.dim
        shapes = {"pos": (self.window, d), "wq": (d, d), "wk": (d, d), "wv": (d, d),
                  "wo": (d, d), "w1": (d, None), "w2": (None, d)}
        for name, shape in shapes.items():
            got = self.weights[name].shape
            if len(got) != 2 or any(want is not None and g != want
                                    for g, want in zip(got, shape, strict=True)):
                raise TowerFormatError(f"tower array {name} has shape {got}; expected {shape} "
                                       f"for {d} factors")
        if self.weights["w1"].shape[1] != self.weights["w2"].shape[0]:
            raise TowerFormatError("tower arrays w1 and w2 do not fit together")
        for name in TOWER_ARRAYS:
            if not np.isfinite(self.weights[name]).all():
                raise TowerFormatError(f"tower array {name} contains NaN or Inf")

    @cached_property
    def _wkv(self) -> np.ndarray:
        return np.ascontiguousarray(np.hstack([self.weights["wk"], self.weights["wv"]]))

    @cached_property
    def _bkv(self) -> np.ndarray:
        return np.concatenate([self.weights["bk"], self.weights["bv"]])

    @property
    def dim(self) -> int:
        return int(self.item_factors.shape[1])

    @property
    def window(self) -> int:
        return int(self.weights["pos"].shape[0])

    def user_vectors(self, sequences: Sequence[np.ndarray]) -> np.ndarray:
        """(n, d) float32 user vectors of non-empty row sequences (each oldest first, at most
        `window` long; longer ones are cut to their newest `window`). Vectorised over users:
        sequences are left-padded to the longest one and the padding is masked out."""
        n = len(sequences)
        d = self.dim
        if n == 0:
            return np.zeros((0, d), dtype=np.float32)
        w = self.weights
        seqs = [np.asarray(s, dtype=np.int64)[-self.window:] for s in sequences]
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=n)
        if (lengths == 0).any():
            raise ValueError("every sequence needs at least one known item")
        width = int(lengths.max())
        padded = np.zeros((n, width), dtype=np.int64)
        valid = np.arange(width)[None, :] >= (width - lengths)[:, None]
        padded[valid] = np.concatenate(seqs)
        x = self.item_factors[padded] + w["pos"][self.window - width:][None]  # (n, L, d)
        z = _layer_norm(x, w["ln1_g"], w["ln1_b"])
        q = z[:, -1] @ w["wq"] + w["bq"]
        kv = z @ self._wkv + self._bkv  # keys and values in one product: (n, L, 2d)
        keys, values = kv[..., :d], kv[..., d:]
        logits = (keys @ q[:, :, None])[..., 0] / np.float32(np.sqrt(d))
        logits = np.where(valid, logits, -np.inf)
        logits -= logits.max(axis=1, keepdims=True)
        att = np.exp(logits)
        att /= att.sum(axis=1, keepdims=True)
        h = x[:, -1] + (att[:, None, :] @ values)[:, 0] @ w["wo"] + w["bo"]
        ffn = np.maximum(_layer_norm(h, w["ln2_g"], w["ln2_b"]) @ w["w1"] + w["b1"], 0.0)
        h = h + ffn @ w["w2"] + w["b2"]
        return _layer_norm(h, w["lnf_g"], w["lnf_b"]).astype(np.float32)


def pack_tower(weights: Mapping[str, np.ndarray]) -> bytes:
    """Tower arrays (without the item embeddings) as np.savez bytes."""
    buffer = io.BytesIO()
    np.savez(buffer, **{name: np.asarray(weights[name], dtype=np.float32)
                        for name in TOWER_ARRAYS})
    return buffer.getvalue()


def unpack_tower(raw: bytes) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as data:
            return {name: np.asarray(data[name], dtype=np.float32) for name in data.files}
    except (ValueError, OSError, KeyError) as exc:
        raise TowerFormatError(f"tower weights are not an npz archive: {exc}") from None


def tower_manifest(window: int, dim: int, hidden: int, extra: Mapping[str, Any] | None = None
                   ) -> dict[str, Any]:
    """What a neural version's manifest says about its tower (`tower` field)."""
    return {"format": TOWER_FORMAT, "window": window, "dim": dim, "hidden": hidden,
            **dict(extra or {})}


def load_tower(item_factors: np.ndarray, manifest: Mapping[str, Any], raw: bytes | None
               ) -> UserTower:
    """The tower of a neural version from its manifest and stored bytes; TowerFormatError
    when this code cannot use it (a newer format, missing weights)."""
    spec = manifest.get("tower") or {}
    if spec.get("format") != TOWER_FORMAT:
        raise TowerFormatError(f"unsupported tower format {spec.get('format')!r}; this code "
                               f"reads {TOWER_FORMAT!r}")
    if raw is None:
        raise TowerFormatError("the version's tower weights are missing")
    tower = UserTower(np.asarray(item_factors, dtype=np.float32), unpack_tower(raw))
    if tower.window != int(spec.get("window", -1)):
        raise TowerFormatError(f"tower window {tower.window} differs from the manifest's "
                               f"{spec.get('window')}")
    return tower


def tower_queries(tower: UserTower, users: Sequence[int], sequences: Sequence[Sequence[int]],
                  known: np.ndarray | None = None) -> np.ndarray:
    """(len(users), d) vectors of `users` (indices into `sequences`, item columns of the
    tower's item factors, oldest first); items outside `known` (bool per column) skipped;
    a user with no known item gets the zero vector (scores nothing above anything)."""
    out = np.zeros((len(users), tower.dim), dtype=np.float32)
    rows, where = [], []
    for i, user in enumerate(users):
        seq = np.asarray(sequences[int(user)], dtype=np.int64)
        if known is not None and len(seq):
            seq = seq[known[seq]]
        if len(seq):
            rows.append(seq)
            where.append(i)
    for start in range(0, len(rows), 1024):  # bounds the (batch, window, d) arrays
        out[where[start:start + 1024]] = tower.user_vectors(rows[start:start + 1024])
    return out


def random_weights(dim: int, window: int, hidden: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Tower arrays of an untrained tower (random, non-trivial layer norms): for tests and
    benchmarks that need a neural version without training one."""
    rng = np.random.default_rng(seed)
    shapes = {"pos": (window, dim), "wq": (dim, dim), "wk": (dim, dim), "wv": (dim, dim),
              "wo": (dim, dim), "w1": (dim, hidden), "w2": (hidden, dim), "b1": (hidden,)}
    out = {}
    for name in TOWER_ARRAYS:
        shape = shapes.get(name, (dim,))
        scale = 1.0 / np.sqrt(shape[0]) if len(shape) == 2 else 0.1
        out[name] = (rng.normal(0.0, scale, shape)
                     + (1.0 if name.endswith("_g") else 0.0)).astype(np.float32)
    return out
