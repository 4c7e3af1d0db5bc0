"""Model versions on disk and in Redis: write, activate, roll back, list, garbage-collect.

On disk, one directory per version (written under a temporary name, then renamed):

    {model_dir}/{version}/model.npz       item_ids, item_factors, user_ids, user_factors,
                                          item_scores, and for item_item versions
                                          neighbour_rows, neighbour_weights
                                          (plain arrays, np.savez: no pickle)
    {model_dir}/{version}/tower.npz       neural versions: the user tower's arrays
                                          (recsys.sequence_model.TOWER_ARRAYS)
    {model_dir}/{version}/content.npz     versions fitted with item attributes: the content
                                          model and item embeddings (recsys.content)
    {model_dir}/{version}/manifest.json   the manifest (recsys.modelstore lists its fields)
                                          plus status: "published" | "rejected"

In Redis, through recsys.modelstore: `stage_model_version` writes every key of the version
(manifest last), then `activate_version` moves the `current` pointer in one MULTI/EXEC. A
reader that resolves `current` and then reads version-scoped keys never sees half a model.
Rejected candidates are written to disk only.

Garbage collection keeps the current version and the newest `keep - 1` previous ones (the
rollback list) in Redis and on disk, and the newest `keep` rejected candidates on disk.

Orphans: a publish that fails or is killed between staging and activation leaves a whole
version's keys in Redis (user vectors included) with no directory on disk. Garbage
collection also SCANs Redis for version-scoped keys (recsys.keys) and deletes those of any
version that is neither current nor kept for rollback once the version (its id carries its
creation time) is older than `trainer_orphan_grace_s`. The grace keeps a version that another
process is staging right now; ids that carry no time are left alone.

A version an A/B experiment serves (recsys.experiments.pinned_versions: model_version and
model_kind variants of any stored experiment) is kept by both until the experiment is deleted.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from recsys.ann import ANN_FORMAT, build_layout, pack_layout
from recsys.errors import ModelIntegrityError, ModelNotFound
from recsys.experiments import pinned_versions
from recsys.keys import Keys
from recsys.modelstore import (
    SIMILAR_DTYPE,
    activate_version,
    current_and_previous,
    delete_model_version,
    rollback_version,
    stage_model_version,
)
from recsys.sequence_model import pack_tower, unpack_tower
from trainer.errors import PublishError

log = logging.getLogger(__name__)

MODEL_FILE = "model.npz"
TOWER_FILE = "tower.npz"
CONTENT_FILE = "content.npz"
MANIFEST_FILE = "manifest.json"


_VERSION_TIME = re.compile(r"^v(\d{8}T\d{6})(\d{3})-")


def version_created_s(version: str) -> float | None:
    """Creation time (epoch s) encoded in a version id from new_version_id, else None."""
    match = _VERSION_TIME.match(version)
    if not match:
        return None
    stamp = datetime.strptime(match.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    return stamp.timestamp() + int(match.group(2)) / 1000.0


def new_version_id(now: float | None = None) -> str:
    """Sortable by creation time, unique across processes: v20250101T120000123-1a2b3c."""
    now = time.time() if now is None else now
    stamp = datetime.fromtimestamp(now, tz=UTC).strftime("%Y%m%dT%H%M%S")
    return f"v{stamp}{int(now * 1000) % 1000:03d}-{uuid.uuid4().hex[:6]}"


@dataclass
class ModelArtifacts:
    version: str
    item_ids: np.ndarray  # str
    item_factors: np.ndarray  # float32 (n_items, k)
    user_ids: np.ndarray  # str
    user_factors: np.ndarray  # float32 (n_users, k)
    manifest: dict[str, Any] = field(default_factory=dict)
    tower: dict[str, np.ndarray] | None = None  # neural versions: the user tower's arrays
    item_scores: np.ndarray | None = None  # float64 per item: popularity under the version
    neighbour_rows: np.ndarray | None = None  # item_item: (n_items, N) int32
    neighbour_weights: np.ndarray | None = None  # item_item: (n_items, N) float32
    content: bytes | None = None  # recsys.content.pack_content of the version's items

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"item_ids": np.asarray(self.item_ids, dtype=str),
               "item_factors": np.asarray(self.item_factors, dtype=np.float32),
               "user_ids": np.asarray(self.user_ids, dtype=str),
               "user_factors": np.asarray(self.user_factors, dtype=np.float32)}
        if self.item_scores is not None:
            out["item_scores"] = np.asarray(self.item_scores, dtype=np.float64)
        if self.neighbour_rows is not None and self.neighbour_weights is not None:
            out["neighbour_rows"] = np.asarray(self.neighbour_rows, dtype=np.int32)
            out["neighbour_weights"] = np.asarray(self.neighbour_weights, dtype=np.float32)
        return out


# --- approximate search ------------------------------------------------------------------
def wants_ann(artifacts: ModelArtifacts, min_items: int) -> bool:
    """Whether this version gets an approximate-search index; if so its manifest says so
    (call before the manifest is written anywhere)."""
    # Versions without item factors (item_item, popularity) have nothing to search.
    if len(artifacts.item_ids) < min_items or artifacts.item_factors.shape[1] == 0:
        return False
    artifacts.manifest["ann_format"] = ANN_FORMAT
    return True


def ann_layout(item_factors: np.ndarray, n_lists: int, threads: int) -> bytes:
    """The packed index layout of a version's item factors (recsys.ann)."""
    start = time.perf_counter()
    layout = build_layout(item_factors, n_lists=n_lists, threads=threads)
    log.info("ANN layout: %d items in %d lists, %.1fs", len(item_factors), layout.n_lists,
             time.perf_counter() - start)
    return pack_layout(layout)


# --- similar items -----------------------------------------------------------------------
def encode_similar(item_ids: np.ndarray, rows: np.ndarray, idx: np.ndarray,
                   scores: np.ndarray) -> dict[str, bytes]:
    """item_ids[rows[j]] -> its list from row j of (idx, scores), packed
    (recsys.modelstore.pack_similar: neighbours as rows of `item_ids`, the version's order)."""
    ids = np.asarray(item_ids).astype(str).tolist()
    counts = (idx >= 0).sum(axis=1).tolist()  # -1 padding only ever trails
    packed = np.empty(idx.shape, dtype=SIMILAR_DTYPE)
    packed["row"] = idx
    packed["score"] = scores
    return {ids[row]: packed[j, :counts[j]].tobytes()
            for j, row in enumerate(np.asarray(rows).tolist()) if counts[j]}


# --- disk --------------------------------------------------------------------------------
def version_dir(model_dir: Path, version: str) -> Path:
    return Path(model_dir) / version


def save_to_disk(model_dir: Path, artifacts: ModelArtifacts) -> Path:
    final = version_dir(model_dir, artifacts.version)
    tmp = Path(model_dir) / f".{artifacts.version}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    np.savez(tmp / MODEL_FILE, **artifacts.arrays())
    if artifacts.tower is not None:
        (tmp / TOWER_FILE).write_bytes(pack_tower(artifacts.tower))
    if artifacts.content is not None:
        (tmp / CONTENT_FILE).write_bytes(artifacts.content)
    write_manifest(tmp, artifacts.manifest)
    os.replace(tmp, final)
    return final


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    tmp = Path(directory) / f".{MANIFEST_FILE}.tmp"
    tmp.write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    os.replace(tmp, Path(directory) / MANIFEST_FILE)


def read_manifest(model_dir: Path, version: str) -> dict[str, Any]:
    path = version_dir(model_dir, version) / MANIFEST_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelNotFound(f"version {version!r} is not in {model_dir}") from None


def load_from_disk(model_dir: Path, version: str, items_only: bool = False) -> ModelArtifacts:
    """A version's arrays and manifest; `items_only` skips the (large) user side."""
    directory = version_dir(model_dir, version)
    skip = {"user_ids", "user_factors"} if items_only else set()
    try:
        with np.load(directory / MODEL_FILE, allow_pickle=False) as data:
            # an npz reads members lazily
            arrays = {name: data[name] for name in data.files if name not in skip}
    except FileNotFoundError:
        raise ModelNotFound(f"version {version!r} has no {MODEL_FILE} in {model_dir}") from None
    empty = np.empty(0, dtype=str)
    tower = None
    if (directory / TOWER_FILE).exists():
        tower = unpack_tower((directory / TOWER_FILE).read_bytes())
    content = (directory / CONTENT_FILE).read_bytes() if (directory / CONTENT_FILE).exists() \
        else None
    return ModelArtifacts(version=version, item_ids=arrays["item_ids"],
                          item_factors=arrays["item_factors"],
                          user_ids=arrays.get("user_ids", empty),
                          user_factors=arrays.get("user_factors", np.empty((0, 0), np.float32)),
                          manifest=read_manifest(model_dir, version), tower=tower,
                          item_scores=arrays.get("item_scores"),
                          neighbour_rows=arrays.get("neighbour_rows"),
                          neighbour_weights=arrays.get("neighbour_weights"), content=content)


def disk_versions(model_dir: Path) -> list[str]:
    """Versions on disk, oldest first (ids sort by creation time)."""
    root = Path(model_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST_FILE).exists())


# --- Redis -------------------------------------------------------------------------------
def _decode(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value


def publish(redis: Any, keys: Keys, artifacts: ModelArtifacts,
            similar: dict[str, bytes] | Callable[[], dict[str, bytes]] | None,
            popularity: dict[str, float] | None, keep: int,
            before_activate: Callable[[], object] | None = None,
            fence: tuple[str, str] | None = None,
            ann: Callable[[], bytes | None] | None = None) -> str | None:
    """Stage every key of the version, then make it current. Returns the replaced version.

    `similar` may be a callable (a future's `result`): it is called after the other keys
    are written, so that they overlap its computation; `ann` (the packed approximate-search
    layout, `ann_layout`) the same.

    `before_activate` runs between the two (and may raise to stop the switch): the caller
    waits there for work that must be complete before the version is served, such as its
    directory on disk being written in another thread. `fence` (the trainer lease's key and
    token, trainer.lease) makes the activation conditional on still holding the lease."""
    manifest = artifacts.manifest
    neighbours = None
    if artifacts.neighbour_rows is not None and artifacts.neighbour_weights is not None:
        neighbours = (artifacts.neighbour_rows, artifacts.neighbour_weights)
    has_users = len(artifacts.user_ids) > 0
    stage_model_version(
        redis, keys, artifacts.version, artifacts.item_ids.tolist(),
        artifacts.item_factors, manifest,
        user_ids=artifacts.user_ids.tolist() if has_users else None,
        user_factors=artifacts.user_factors if has_users else None, similar=similar,
        popularity=popularity, neighbours=neighbours,
        tower=pack_tower(artifacts.tower) if artifacts.tower is not None else None, ann=ann,
        content=artifacts.content)
    if before_activate is not None:
        before_activate()
    replaced = activate_version(redis, keys, artifacts.version, keep_previous=keep - 1,
                                fence=fence)
    log.info("published model version %s (replaced %s)", artifacts.version, replaced)
    return replaced


def rollback(redis: Any, keys: Keys) -> tuple[str, str | None]:
    """Make the newest previous version current again (recsys.modelstore.rollback_version).
    Returns (restored, replaced)."""
    try:
        return rollback_version(redis, keys)
    except ModelIntegrityError as exc:
        raise PublishError(str(exc)) from None


def collect_garbage(redis: Any, keys: Keys, model_dir: Path, keep: int) -> list[str]:
    """Delete versions that are neither current nor among the newest keep - 1 previous ones
    (Redis and disk); keep the newest `keep` rejected candidates on disk. Returns deleted.
    (Versions that exist only in Redis: collect_orphans.)"""
    current, previous = current_and_previous(redis, keys)
    live = {v for v in [current, *previous[:keep - 1]] if v} | experiment_versions(redis, keys)
    deleted: list[str] = []
    rejected_seen = 0
    for version in reversed(disk_versions(model_dir)):  # newest first
        if version in live:
            continue
        try:
            status = read_manifest(model_dir, version).get("status")
        except (ModelNotFound, ValueError):
            status = None
        if status == "rejected":
            rejected_seen += 1
            if rejected_seen <= keep:
                continue
        else:
            delete_model_version(redis, keys, version)
        shutil.rmtree(version_dir(model_dir, version), ignore_errors=True)
        deleted.append(version)
    if deleted:
        log.info("garbage-collected model versions %s", deleted)
    return deleted


def experiment_versions(redis: Any, keys: Keys) -> set[str]:
    """The versions the stored experiments serve (kept by garbage collection)."""
    return pinned_versions(redis.hvals(keys.experiments))


def redis_versions(redis: Any, keys: Keys) -> set[str]:
    """Every version that has at least one key in Redis (SCAN, not KEYS: no long block)."""
    found: set[str] = set()
    for pattern in keys.version_key_patterns():
        for key in redis.scan_iter(match=pattern, count=1000):
            version = keys.version_of(_decode(key) or "")
            if version:
                found.add(version)
    return found


def collect_orphans(redis: Any, keys: Keys, live: set[str], grace_s: float,
                    now: float | None = None) -> list[str]:
    """Delete the keys of versions in Redis that are not `live` (current, rollback list) and
    older than `grace_s`. Returns the versions deleted."""
    now = time.time() if now is None else now
    orphans = []
    for version in sorted(redis_versions(redis, keys) - live):
        created = version_created_s(version)
        if created is None or now - created < grace_s:
            continue
        # re-read the pointer right before: never delete what became current (or what an
        # experiment started to serve) meanwhile
        current, previous = current_and_previous(redis, keys)
        if version == current or version in previous or version in experiment_versions(
                redis, keys):
            continue
        delete_model_version(redis, keys, version)
        orphans.append(version)
    if orphans:
        log.warning("deleted the Redis keys of %d orphaned model versions (staged, never "
                    "activated or no longer on disk): %s", len(orphans), orphans)
    return orphans


def list_versions(redis: Any | None, keys: Keys, model_dir: Path) -> list[dict[str, Any]]:
    """One row per version on disk, newest first, with its role in Redis when reachable."""
    current, previous = current_and_previous(redis, keys) if redis is not None else (None, [])
    rows = []
    for version in reversed(disk_versions(model_dir)):
        manifest = read_manifest(model_dir, version)
        role = ("current" if version == current else
                "previous" if version in previous else manifest.get("status", "?"))
        rows.append({"version": version, "role": role, "created_at": manifest.get("created_at"),
                     "status": manifest.get("status"), "metrics": manifest.get("metrics", {}),
                     "beats_popularity": manifest.get("beats_popularity"),
                     "model_kind": manifest.get("model_kind", "als"),
                     "candidate": manifest.get("candidate", "als"),
                     "holdout_metric": (manifest.get("gate") or {}).get("metric"),
                     "holdout_value": (manifest.get("gate") or {}).get("candidate"),
                     "popularity_value": (manifest.get("gate") or {}).get("popularity"),
                     "n_users": manifest.get("n_users"), "n_items": manifest.get("n_items")})
    return rows
