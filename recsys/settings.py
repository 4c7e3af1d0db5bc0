"""The one settings object of the project.

Every role (producer, stream worker, trainer, API) reads its configuration from here, once at
start-up, and passes the object down. Values come from the environment (and an optional
`.env` file); a bad value stops start-up with a message that names the variable.

Environment variables are the field names upper-cased with the prefix `RECSYS_`
(`RECSYS_ALS_FACTORS=64`), except the two connection strings that the wider ecosystem already
names: `KAFKA_BOOTSTRAP_SERVERS` and `REDIS_URL` (the prefixed forms work too). Dict-valued
settings take JSON (`RECSYS_EVENT_WEIGHTS='{"view": 1, "transaction": 10}'`).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from recsys.errors import ConfigError
from recsys.events import EventType

# The wire contract (recsys.events.EventType) is the one list of event types.
EVENT_TYPES = tuple(t.value for t in EventType)

# Relative strength of each event type as evidence of preference. Purchases say far more than
# views; the ratios follow the Retailrocket funnel (a purchase is ~100x rarer than a view).
DEFAULT_EVENT_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "click": 1.5,
    "addtocart": 4.0,
    "transaction": 8.0,
    "rating": 1.0,
    # Negative feedback: the weight is subtracted (recsys.confidence).
    "dislike": 4.0,
    "hide": 4.0,
}

# Upper bounds of settings that request schemas also use as their own static limits.
MAX_BATCH_EVENTS_LIMIT = 100_000
MAX_ANONYMOUS_ITEMS_LIMIT = 10_000

_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RECSYS_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
        frozen=True,
        populate_by_name=True,
    )

    # --- connections ---------------------------------------------------------------------
    kafka_bootstrap_servers: str = Field(
        default="localhost:9092",
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "RECSYS_KAFKA_BOOTSTRAP_SERVERS"),
        description="Kafka bootstrap servers, comma-separated host:port (at least one).",
    )
    kafka_client_options: dict[str, str] = Field(
        default_factory=dict,
        description="Extra librdkafka options for every client (security.protocol, sasl.*), JSON.",
    )
    redis_url: str = Field(
        default="redis://localhost:6379/0",
        validation_alias=AliasChoices("REDIS_URL", "RECSYS_REDIS_URL"),
        description="Redis connection URL (redis://, rediss:// or unix://).",
    )
    redis_namespace: str = Field(
        default="recsys",
        description="Prefix of every Redis key this deployment writes (1-64 letters, digits, "
        "'_', '.', '-').",
    )
    redis_cluster: bool = Field(
        default=False,
        description="REDIS_URL names a node of a Redis Cluster: every role uses the cluster "
        "client and the cluster key layout (hash-tagged buckets, docs/scale.md). Checked "
        "against the server at start-up: a mismatch either way stops the role with an error "
        "naming this setting.",
    )
    redis_user_buckets: int = Field(
        default=1024, ge=1, le=16_384,
        description="Cluster mode only: buckets (hash tags) that a version's user vectors and "
        "the users' state are spread over. Recorded in each version's manifest; readers "
        "refuse a version written with another count, so change it only together with a "
        "fresh version and cleared user state.",
    )

    # --- topics ----------------------------------------------------------------------------
    interactions_topic: str = Field(
        default="interactions",
        description="Topic of interaction events (key = user id). A valid Kafka topic name.",
    )
    dead_letter_topic: str = Field(
        default="interactions.dlq",
        description="Topic for rejected events, with the reason. A valid Kafka topic name.",
    )
    impressions_topic: str = Field(
        default="impressions",
        description="Topic of served recommendation lists (impressions; key = user or session "
        "id, so it is co-partitioned with the interactions topic). A valid Kafka topic name.",
    )
    topic_partitions: int = Field(
        default=4, ge=1, le=1024,
        description="Partitions when the project creates the interactions topic.",
    )
    topic_replication_factor: int = Field(
        default=1, ge=1, le=16,
        description="Replication factor of the topics the project creates (interactions, "
        "dead letters). 1 suits one local broker; production Kafka wants 3. Topics that "
        "already exist are left as they are.",
    )
    dead_letter_retention_hours: float = Field(
        default=7 * 24.0, gt=0.0, le=100_000.0,
        description="retention.ms of the dead-letter topic, set when it is created: dead "
        "letters carry users' payloads and are kept only this long.",
    )
    dead_letter_redact_payload: bool = Field(
        default=False,
        description="Dead-letter records carry no payload, only its size and SHA-256 (and "
        "the reason, field, topic, partition and offset, to find the record in the source).",
    )

    # --- storage ---------------------------------------------------------------------------
    data_dir: Path = Field(
        default=Path("var/data"),
        description="Local state: the trainer's Parquet history (`history/`) and the stream "
        "worker's Faust folder (`stream/`).",
    )
    model_dir: Path = Field(
        default=Path("var/models"),
        description="Published and rejected model versions (npz + manifest).",
    )

    # --- model and confidence (shared by trainer and stream: same maths everywhere) ------
    als_factors: int = Field(
        default=64, ge=1, le=1024, description="ALS latent factors (shared by trainer and stream)."
    )
    # Tuned on ML-100K (time split and per-user random split) and on the synthetic stream;
    # see docs/trainer.md, "Tuning and quality". Small regularisation (implicit's
    # default-like 0.01-0.1) overfits small dense data and loses to popularity.
    als_regularization: float = Field(
        default=50.0, ge=0.0,
        description="ALS regularisation lambda (tuned on ML-100K; see the trainer page).",
    )
    als_iterations: int = Field(
        default=15, ge=1, le=1000, description="ALS iterations of a full fit."
    )
    alpha: float = Field(default=10.0, gt=0.0, description="C = 1 + alpha * weighted count.")
    event_weights: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS),
        description="Weight of each event type in the confidence (JSON; known types only, "
        "weights >= 0; partial overrides keep the other defaults). Shared by trainer and stream. "
        "dislike and hide are negative feedback: their weight is subtracted.",
    )
    negative_rating_max: float | None = Field(
        default=None, ge=1.0, le=5.0,
        description="Ratings up to this many stars are negative feedback: weight "
        "-event_weights.rating * (negative_rating_max + 1 - rating) / 5, subtracted like a "
        "dislike (recsys.confidence); 2 makes 1-2 stars negative. Unset (off, the default): "
        "every rating is a positive, rating / 5 of its weight (see the stream page for why "
        "the default is off). Shared by trainer, stream and serving (recorded in the manifest).",
    )
    random_seed: int = Field(
        default=42, description="Seed of fits, samples and the synthetic generator."
    )

    # --- event time (the producer's clock is not trusted; see recsys/eventtime.py) -------
    event_time_future_tolerance_s: float = Field(
        default=300.0, ge=0.0, le=86_400.0,
        description="An event time more than this far past its arrival (the Kafka record's "
        "timestamp, or the API's clock) is clamped to the arrival time wherever it serves as "
        "a clock (trending, decay, snapshots) and counted in the *_events_clamped_total "
        "metrics. The event is kept: it is still a real interaction.",
    )
    event_time_naive_utc: bool = Field(
        default=False,
        description="Read ISO-8601 timestamps without a time zone as UTC. Off: such events "
        "are rejected with reason timestamp_without_timezone (a zone-less time is the "
        "producer's local time, which reads as hours in the future or past).",
    )

    # --- neural sequence model (recsys.sequence_model; training needs the `neural` extra) ---
    trainer_model_kind: Literal["als", "neural"] = Field(
        default="als", description="What `recsys train` publishes: `als`, the winner of the "
        "candidate selection (`trainer_candidates`, which may list `neural`); `neural`, the "
        "neural user tower over recent items, fitted and gated without a selection.")
    neural_dim: int = Field(default=64, ge=4, le=1024, description="Item embedding size.")
    neural_window: int = Field(default=50, ge=1, le=1000, description="Newest items the tower "
                               "reads; longer sequences are truncated to them.")
    neural_hidden: int = Field(default=128, ge=1, le=8192, description="Feed-forward width.")
    neural_horizon: int = Field(default=1, ge=1, le=1000, description="Each position learns "
                                "to predict each of the next N items (1: the next item).")
    neural_epochs: int = Field(default=10, ge=1, le=10_000, description="Training epochs, at "
                               "most (the time budget may stop earlier).")
    neural_learning_rate: float = Field(default=3e-3, gt=0.0, le=1.0,
                                        description="Adam learning rate.")
    neural_dropout: float = Field(default=0.2, ge=0.0, lt=1.0, description="Dropout while "
                                  "training (none at inference).")
    neural_time_budget_s: float = Field(default=120.0, gt=0.0, description="Training stops "
                                        "after the epoch that exceeds it.")
    neural_exclude_seen: bool = Field(
        default=True, description="Training leaves the items a sequence already holds out of "
        "each position's softmax, as recommendations leave out what the user has seen.")

    # --- stream processor ------------------------------------------------------------------
    stream_app_id: str = Field(
        default="recsys-stream",
        description="Faust app id = consumer group of the stream workers and prefix of the "
        "changelog topic.",
    )
    stream_fetch_max_wait_ms: int = Field(
        default=20,
        ge=1,
        le=10_000,
        description="Consumer fetch wait. Faust hard-codes 1500 ms; the local broker always "
        "waits the full time, so it is lowered here.",
    )
    stream_batch_max_events: int = Field(
        default=500, ge=1, le=100_000, description="Largest micro-batch."
    )
    stream_batch_max_ms: int = Field(
        default=20, ge=1, le=60_000,
        description="Longest a micro-batch is held open for more events (latency bound).",
    )
    stream_batch_quiet_ms: float = Field(
        default=2.0, ge=0.0, le=60_000,
        description="A micro-batch closes early once no event arrived for this long.",
    )
    stream_history_max_items: int = Field(
        default=200, ge=1, le=100_000,
        description="Items kept per user in the history table (least recently touched leave "
        "first); also the size of the seen set in Redis.",
    )
    stream_web_port: int = Field(
        default=6066, ge=0, le=65535,
        description="Stream worker /metrics port (0 = a free one, logged).",
    )
    stream_store: str = Field(default="memory://", description="Faust table store URL.")
    stream_dedupe_ids: int = Field(
        default=64, ge=1, le=10_000,
        description="Recent event ids remembered per user to drop re-sent events (replays after "
        "a restart are dropped by offset, whatever their number).",
    )
    stream_model_poll_s: float = Field(
        default=5.0, gt=0.0, le=3600.0,
        description="Poll of the current-model pointer, besides the switch channel.",
    )
    stream_session_timeout_ms: int = Field(
        default=10_000, ge=1_000, le=300_000,
        description="Consumer group session timeout: how soon a dead worker's partitions move.",
    )
    stream_commit_interval_s: float = Field(
        default=1.0, gt=0.0, le=60.0,
        description="Offset commit interval; at most this much is re-read after a crash.",
    )
    stream_redis_backoff_max_s: float = Field(
        default=5.0, gt=0.0, le=300.0, description="Longest wait between Redis write retries."
    )
    stream_batch_max_retries: int = Field(
        default=3, ge=0, le=100,
        description="Retries of a batch that fails for a reason other than Redis; then its "
        "events go to the dead-letter topic (reason processing_error) and the worker moves on.",
    )
    stream_redis_max_attempts: int = Field(
        default=10, ge=1, le=1000,
        description="Attempts of one Redis write on connection errors and timeouts (capped "
        "exponential backoff between them, up to stream_redis_backoff_max_s). Then the batch "
        "is kept, its offsets uncommitted, and tried again while /healthz reports the stall. "
        "Error replies (OOM, WRONGTYPE) are not retried: their events are dead-lettered.",
    )
    stream_stall_s: float = Field(
        default=60.0, gt=0.0, le=3600.0,
        description="The stream worker's /healthz answers 503 when its event loop has not "
        "beaten for this long, one batch has been in progress for longer, or records have "
        "waited (consumer lag > 0) this long while it processed less than a hundredth of the "
        "lag in this long.",
    )
    stream_batch_guard_ttl_s: float = Field(
        default=600.0, gt=0.0, le=86_400.0,
        description="How long Redis remembers that a batch's trending increments were "
        "applied (one small key per batch and window), so a retried write adds them once.",
    )
    stream_user_idle_days: float = Field(
        default=30.0, gt=0.0,
        description="The stream table forgets a user idle for this long (a tombstone in its "
        "changelog; swept every stream_idle_sweep_s): it bounds the table to the users active "
        "within it. Their next event starts a new stream history (the trainer still has theirs).",
    )
    stream_idle_sweep_s: float = Field(
        default=300.0, gt=0.0, le=86_400.0,
        description="How often the stream worker sweeps its table for users idle longer than "
        "stream_user_idle_days: the table can exceed its bound by the users of one interval.",
    )
    stream_switch_active_days: float = Field(
        default=7.0, gt=0.0,
        description="After a model switch the stream worker recomputes only users active "
        "within this many days; the others keep the trainer's vector under the new version "
        "(or get a fallback) until their next event.",
    )
    stream_item_foldin: bool = Field(
        default=True,
        description="Item fold-in: the stream worker learns vectors for items the served "
        "version does not know from their first interactions (the item half-step of ALS "
        "against the interacting users' current vectors); serving merges them within a "
        "second (docs/stream.md, Item fold-in).",
    )
    stream_item_foldin_max_users: int = Field(
        default=200, ge=1, le=5_000,
        description="Recent interacting users kept per item for the item fold-in (the most "
        "recent ones): bounds each item's solve, whatever a burst of bots sends.",
    )
    stream_item_foldin_min_users: int = Field(
        default=2, ge=1, le=1_000,
        description="An item is folded in once this many of its recent users have vectors "
        "under the served version; before that it keeps no stream vector.",
    )
    stream_item_foldin_max_items: int = Field(
        default=1_000, ge=1, le=1_000_000,
        description="At most this many items are folded in per batch (the rest wait for "
        "their next event; counted in recsys_stream_item_foldin_skipped_total{reason="
        "\"batch_bound\"}).",
    )
    stream_item_users_ttl_days: float = Field(
        default=30.0, gt=0.0,
        description="An item's recent-user list (item fold-in state in Redis) expires this "
        "long after its last interaction.",
    )
    seen_ttl_s: float = Field(
        default=90 * 86_400.0, ge=0.0,
        description="A user's seen set expires this long after their last event (refreshed "
        "on every event; 0 = never). Past it, the user's already-seen items are no longer "
        "filtered from recommendations.",
    )
    stream_worker_id: str | None = Field(
        default=None, description="Name of this worker in logs and dead letters (default host:pid)."
    )

    # --- trainer ---------------------------------------------------------------------------
    trainer_group_id: str = Field(
        default="recsys-trainer", description="Consumer group of the trainer's history."
    )
    trainer_holdout_fraction: float = Field(
        default=0.2, gt=0.0, lt=1.0,
        description="Share of events (by time) held out for the gate.",
    )
    trainer_gate_metric: str = Field(
        default="ndcg@10",
        description="Metric the gate compares, `metric@k` with a metric among precision, recall, "
        "f1, map, ndcg, hit_rate, coverage.",
    )
    trainer_gate_tolerance: float = Field(
        default=0.02, ge=0.0, lt=1.0,
        description="Publish if candidate >= (1 - tolerance) x serving.",
    )
    trainer_keep_versions: int = Field(
        default=3, ge=2, le=100,
        description="Versions kept for rollback (current included), and rejected candidates "
        "kept on disk.",
    )
    trainer_retention_days: float = Field(
        default=365.0, gt=0.0, description="History window, back from the newest event."
    )
    trainer_time_decay_days: float | None = Field(
        default=None, gt=0.0, description="Half-life of event weight decay; unset = no decay."
    )
    trainer_similar_items: int = Field(
        default=50, ge=1, le=1000, description="Length of each similar-items list."
    )
    trainer_content: bool = Field(
        default=True,
        description="Fit a content model (item features from the catalogue's attributes, a "
        "map to the factor space, the hybrid blend weight) with each version when the "
        "catalogue describes the version's items; see docs/trainer.md.",
    )
    trainer_content_dims: int = Field(
        default=32, ge=2, le=256,
        description="Dimensions of the items' content embeddings (the content part of the "
        "hybrid score).",
    )
    trainer_metrics_port: int = Field(
        default=9101, ge=0, le=65535,
        description="Trainer /metrics port in --every mode (0 = a free one).",
    )
    trainer_eval_k: int = Field(default=10, ge=1, le=1000, description="Metrics at this k.")
    trainer_eval_max_users: int = Field(
        default=2000, ge=10, description="Holdout users scored (seeded sample): bounds eval cost."
    )
    trainer_gate_min_users: int = Field(
        default=30, ge=1, description="Fewest holdout users after the serving model's data for "
        "the gate to compare on those alone (otherwise the whole holdout)."
    )
    trainer_refit_iterations: int = Field(
        default=1, ge=0, le=1000, description="Warm-started iterations on the whole history "
        "after the gate passed; 0 publishes the model fitted without the holdout."
    )
    trainer_fit_threads: int = Field(default=0, ge=0, le=256, description="0 = all cores.")
    trainer_min_new_events: int = Field(
        default=1, ge=0, description="--every: train only when this many new events arrived."
    )
    trainer_flush_events: int = Field(
        default=50_000, ge=1,
        description="History: flush a Parquet part after this many events.",
    )
    trainer_flush_seconds: float = Field(
        default=60.0, gt=0.0, description="History file cadence while consuming (and always "
        "before a run); unflushed events are re-read from Kafka after a crash, never lost."
    )
    trainer_compact_parts: int = Field(
        default=32, ge=2, description="History: compact when this many parts exist."
    )
    trainer_redis_timeout_s: float = Field(
        default=30.0, gt=0.0, le=3600.0,
        description="Socket (and connect) timeout of the trainer's Redis client: a hung Redis "
        "fails the run (counted, serving untouched) instead of blocking it forever.",
    )
    trainer_lease_ttl_s: float = Field(
        default=30.0, ge=1.0, le=3600.0,
        description="Lifetime of the one-trainer lease in Redis, renewed every third of it "
        "while the trainer runs; a killed trainer blocks others for at most this long.",
    )
    trainer_lease_wait_s: float = Field(
        default=0.0, ge=0.0, le=86_400.0,
        description="How long a second trainer waits for the lease before it exits with "
        "code 3 (0 = exit at once).",
    )
    trainer_orphan_grace_s: float = Field(
        default=3600.0, ge=0.0,
        description="Version keys in Redis that belong to no complete version on disk and "
        "are neither current nor kept for rollback (a publish that failed or was killed "
        "between staging and activation) are deleted once their version is this old.",
    )
    trainer_quarantine_dir: str = Field(
        default="quarantine", pattern=r"^[A-Za-z0-9_.-]+$",
        description="Sub-folder of the history where unreadable Parquet files are moved "
        "(with a log line and a metric) instead of crash-looping the trainer.",
    )
    trainer_history_uri: str | None = Field(
        default=None,
        description="Where the trainer's Parquet history lives, as a filesystem URI pyarrow "
        "understands: `file:///abs/path` or a local path, `s3://bucket/prefix` in production "
        "(credentials from the usual AWS variables). Unset: `data_dir/history`.",
    )
    trainer_backend: Literal["implicit", "spark"] = Field(
        default="implicit",
        description="What fits the ALS candidate: `implicit` in the trainer's process, or "
        "`spark` (Spark MLlib on `spark_master`; needs the `spark` extra and Java 17+). Same "
        "confidences and settings either way; the regularisation mapping is on the scale page.",
    )
    spark_master: str = Field(
        default="local[2]",
        description="Spark master URL of the `spark` trainer backend: local[N] (in-process, "
        "N cores), spark://host:7077, yarn, k8s://...",
    )
    spark_conf: dict[str, str] = Field(
        default_factory=dict,
        description="Spark settings of the `spark` backend, as spark-submit's --conf pairs "
        '(JSON: {"spark.executor.memory": "4g", "spark.executor.cores": "4"}).',
    )
    spark_finish_sweeps: int = Field(
        default=2, ge=0, le=10,
        description="ALS sweeps with the fixed lambda (users, then items; the stream's fold-in "
        "maths) run in the trainer's process on the factors the `spark` backend returns: "
        "Spark's count-scaled regularisation is not the fixed lambda the stream folds users in "
        "with (docs/scale.md). 0: Spark's factors as they come.",
    )
    spark_connect_timeout_s: float = Field(
        default=60.0, gt=0.0, le=3600.0,
        description="A non-local Spark master must run a first job within this many "
        "seconds of start-up, or the trainer fails naming the master.",
    )
    trainer_candidates: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("popularity", "als", "knn_cosine", "knn_bm25", "knn_tfidf", "ease"),
        description="Candidates the trainer tunes and chooses from (recsys.candidates), "
        "comma-separated or JSON; popularity is always on the board.",
    )
    trainer_tune_budget_s: float = Field(
        default=180.0, gt=0.0, description="Wall-clock seconds the candidate search may take "
        "per run (start points of every candidate are scored even past it)."
    )
    trainer_retune_growth: float = Field(
        default=1.5, ge=1.0, description="Search again when the history has grown by this "
        "factor since the last search; otherwise reuse the last best points."
    )
    trainer_retune_days: float = Field(
        default=7.0, gt=0.0, description="Search again at least this often (days)."
    )
    trainer_validation_fraction: float = Field(
        default=0.2, gt=0.0, lt=1.0, description="Share of the training part (its newest "
        "events) carved off as the validation split the candidates are chosen on."
    )
    trainer_ease_max_items: int = Field(
        default=20_000, ge=2, description="EASE is fitted only up to this many items (an "
        "items x items inverse: 8 n^2 bytes); skipped above."
    )
    trainer_neighbours: int = Field(
        default=100, ge=1, le=2000, description="Neighbours kept per item by item-item "
        "candidates (kNN, EASE): what serving scores from."
    )
    trainer_repeat_min_rate: float = Field(
        default=0.05, ge=0.0, le=1.0, description="Fit a buy-again weight (requests with "
        "exclude_seen=false rank re-buys) when at least this share of bought (user, item) "
        "pairs is bought again; below it the weight is 0."
    )
    ann_min_items: int = Field(
        default=200_000, ge=1,
        description="Catalogues of at least this many items get an approximate "
        "nearest-neighbour index (recsys/ann.py): the trainer builds and publishes it with the "
        "version, and serving answers personalised and similar-item requests from its "
        "candidates (then re-scores them exactly) instead of scoring every item.",
    )
    ann_lists: int = Field(
        default=0, ge=0, le=1_000_000,
        description="Cells of the index (k-means centroids); 0 = about 4 sqrt(n_items).",
    )
    ann_probe: int = Field(
        default=16, ge=1, le=100_000,
        description="Cells a query visits: more finds more of the exact top k, at more CPU.",
    )
    ann_candidates: int = Field(
        default=4, ge=1, le=100,
        description="Serving asks the index for this many times (k + excluded items) "
        "candidates, then re-scores them exactly, filters and keeps k; too few left after "
        "filtering -> an exact scan of every item.",
    )
    trainer_similar_max_items: int = Field(
        default=5_000, ge=0, description="Stored similar lists for at most this many (most "
        "popular) items; serving computes the others from the factors. 0 = all items."
    )

    # --- serving ---------------------------------------------------------------------------
    api_host: str = Field(default="127.0.0.1", description="API bind address.")
    api_port: int = Field(default=8000, ge=0, le=65535, description="API port.")
    api_key: SecretStr | None = Field(
        default=None, description="When set, write endpoints require header X-API-Key. Set "
        "but empty is a configuration error (it used to mean: every write answers 401)."
    )
    api_allow_open_writes: bool = Field(
        default=False,
        description="Allow the API to bind a non-loopback address without an api_key (write "
        "endpoints open to anyone who reaches it). Off: such a start-up is refused.",
    )
    api_max_k: int = Field(
        default=500, ge=1, le=10_000, description="Largest k a request may ask for."
    )
    api_redis_timeout_s: float = Field(
        default=0.25, gt=0.0, le=30.0,
        description="Per-operation Redis timeout on the request path; past it, a fallback.",
    )
    api_redis_max_connections: int = Field(
        default=256, ge=1, le=10_000,
        description="Redis connection pool size of one API process (beyond it: a fallback).",
    )
    api_redis_retry_after_s: float = Field(
        default=1.0, ge=0.0, le=60.0,
        description="After a Redis error, requests skip Redis (straight to the in-memory "
        "fallback) for this long before trying again.",
    )
    api_model_poll_s: float = Field(
        default=5.0, gt=0.0, le=3600.0,
        description="Poll of the current-model pointer, besides the switch channel.",
    )
    api_fresh_items_poll_s: float = Field(
        default=0.25, gt=0.0, le=60.0,
        description="How often an API process reads the served version's fresh-item counter "
        "(the stream's item fold-in) and merges new item vectors into its in-memory matrix.",
    )
    api_catalog_poll_s: float = Field(
        default=2.0, gt=0.0, le=3600.0,
        description="How often an API process checks for catalog changes by others.",
    )
    api_catalog_cache_s: float = Field(
        default=3600.0, ge=0.0, le=86_400.0,
        description="How long item details (name, price...) are cached in memory at most. "
        "Every catalogue write the product makes (the API, `recsys items load`, erasure) "
        "moves the catalogue generation, and each API process reloads within "
        "`api_catalog_poll_s` and drops its cache; this bound only limits how long a write "
        "made around the product (straight into Redis) stays unseen.",
    )
    api_catalog_cache_size: int = Field(
        default=100_000, ge=0, le=10_000_000,
        description="Catalog item details cached in memory.",
    )
    api_filter_attributes: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("*",),
        description="Item attributes each API process indexes in memory for `attr=` "
        "filters, comma-separated; `*` indexes every attribute. A catalogue with many "
        "attributes per item (Retailrocket's hashed properties) lists the few it filters "
        "by: every indexed attribute value costs memory per item. `attr=` on an attribute "
        "not listed is a 422.",
    )
    api_new_items_poll_s: float = Field(
        default=0.2, gt=0.0, le=60.0,
        description="How often an API process checks the catalogue for new items to map "
        "from their attributes into the served version (the new-item cold start).",
    )
    api_content_recent: int = Field(
        default=20, ge=1, le=1000,
        description="Most recent items of a user (or session) whose content embeddings make "
        "their content profile in the hybrid score.",
    )
    api_seen_max: int = Field(
        default=1000, ge=1, le=100_000, description="Most recent seen items read per request."
    )
    api_fallback_window: str = Field(
        default="24h", pattern=r"^(1h|24h|7d)$", description="Trending window of fallbacks."
    )
    api_max_batch_events: int = Field(
        default=1000, ge=1, le=MAX_BATCH_EVENTS_LIMIT,
        description="Most events in one POST /v1/events body.")
    api_max_anonymous_items: int = Field(
        default=200, ge=1, le=MAX_ANONYMOUS_ITEMS_LIMIT,
        description="Most interactions in one anonymous-session request (422 beyond).")
    api_max_offset: int = Field(
        default=1000, ge=0, le=100_000,
        description="Largest `offset` of a paged personalised list (422 beyond); a page "
        "costs a top-(offset + k), so this bounds it.")
    api_max_score_items: int = Field(
        default=1000, ge=1, le=100_000,
        description="Most item ids in one POST /v1/users/{user_id}/scores (422 beyond).")
    api_max_batch_users: int = Field(
        default=100, ge=1, le=10_000,
        description="Most users in one POST /v1/recommendations/batch (422 beyond).")
    api_rules_max_weight: float = Field(
        default=10.0, ge=1.0, le=1000.0, allow_inf_nan=False,
        description="Bound of a boost's multiplicative weight: weights must lie in "
        "[1/this, this] (422 beyond).")
    api_rules_pool_factor: int = Field(
        default=3, ge=1, le=100,
        description="Rules (boosts, max_per, diversity) re-rank the top "
        "this x (offset + k) of the model's list; a boosted item deeper than that is not "
        "reached.")
    api_max_placements: int = Field(
        default=1000, ge=1, le=100_000,
        description="Most stored placements (PUT /v1/placements/{name}: 422 beyond).")
    api_explain_items: int = Field(
        default=3, ge=1, le=50,
        description="History items listed per recommended item with explain=true.")
    api_max_page_size: int = Field(
        default=1000, ge=1, le=100_000,
        description="Largest `limit` of the listing endpoints (GET /v1/items, "
        "GET /v1/users/{user_id}/items; 422 beyond).")
    api_max_body_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024,
        description="Largest request body. 413 before parsing: at once from Content-Length, "
        "or as soon as a chunked body passes it (the rest is never buffered).",
    )
    api_max_in_flight: int = Field(
        default=512, ge=1, le=100_000,
        description="Requests handled at once per API process; beyond, 503 with Retry-After "
        "at once (health and metrics endpoints exempt).",
    )
    api_produce_queue_max: int = Field(
        default=100_000, ge=1, le=10_000_000,
        description="Events the API holds for Kafka (queued or in flight) at most. A POST "
        "that does not fit answers 503 with Retry-After, at once: the event loop never waits "
        "for room.",
    )
    api_produce_stall_s: float = Field(
        default=10.0, gt=0.0, le=3600.0,
        description="While events wait and the broker has acknowledged none for this long, "
        "POSTs answer 503 with Retry-After instead of queueing more.",
    )
    api_produce_delivery_timeout_s: float = Field(
        default=300.0, ge=1.0, le=86_400.0,
        description="How long an accepted (202) event is retried towards Kafka before it "
        "counts as lost (recsys_api_events_delivery_failed_total; alert RecsysEventsLost).",
    )
    impressions_enabled: bool = Field(
        default=True,
        description="Record every served recommendation list as an impression on "
        "impressions_topic (a non-blocking produce; a full queue drops the impression, "
        "counted, never the response). Off: responses still carry a recommendation_id.",
    )
    attribution_window_s: float = Field(
        default=1800.0, gt=0.0, le=30 * 86_400.0,
        description="An event is attributed to a recommendation only within this many seconds "
        "after it was served (by its context.recommendation_id, or by hitting a recommended "
        "item of the same user).",
    )
    attribution_web_port: int = Field(
        default=9103, ge=0, le=65535,
        description="Port of the attribution consumer's /metrics (`recsys attribution`; "
        "0 = a free one).",
    )
    api_retry_after_s: int = Field(
        default=2, ge=1, le=3600, description="Retry-After (seconds) of the API's 503 answers."
    )

    # --- process -----------------------------------------------------------------------------
    blas_threads: int = Field(
        default=1, ge=1, le=256,
        description="BLAS threads per process (OPENBLAS_NUM_THREADS of the processes that "
        "`recsys` starts); each role has its own parallelism, so 1 avoids oversubscription.",
    )

    # --- logging ---------------------------------------------------------------------------
    log_level: str = Field(
        default="INFO", description="DEBUG, INFO, WARNING, ERROR or CRITICAL (any case)."
    )

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        servers = [s.strip() for s in value.split(",") if s.strip()]
        if not servers:
            raise ValueError("must name at least one host:port")
        for server in servers:
            host, sep, port = server.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{server!r} is not host:port")
        return ",".join(servers)

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("api_key")
    @classmethod
    def _check_api_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("is set but empty; set a real key, or unset the variable to run "
                             "without one (loopback only, or with RECSYS_API_ALLOW_OPEN_WRITES)")
        return value

    @field_validator("redis_namespace")
    @classmethod
    def _check_namespace(cls, value: str) -> str:
        if not _NAMESPACE_RE.match(value):
            raise ValueError("must be 1-64 characters of letters, digits, '_', '.', '-'")
        return value

    @field_validator("interactions_topic", "dead_letter_topic", "impressions_topic")
    @classmethod
    def _check_topic(cls, value: str) -> str:
        if not _TOPIC_RE.match(value):
            raise ValueError("is not a valid Kafka topic name")
        return value

    @field_validator("negative_rating_max", mode="before")
    @classmethod
    def _negative_ratings_off(cls, value: object) -> object:
        # From the environment: RECSYS_NEGATIVE_RATING_MAX=off (or none, null, empty).
        if isinstance(value, str) and value.strip().lower() in ("", "off", "none", "null"):
            return None
        return value

    @field_validator("event_weights")
    @classmethod
    def _check_weights(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = set(value) - set(EVENT_TYPES)
        if unknown:
            raise ValueError(f"unknown event types {sorted(unknown)}; known: {list(EVENT_TYPES)}")
        for name, weight in value.items():
            if not weight >= 0.0:
                raise ValueError(f"weight of {name!r} must be >= 0")
        # Types left out keep their default weight, so a partial override is safe.
        return {**DEFAULT_EVENT_WEIGHTS, **value}

    @field_validator("api_filter_attributes", mode="before")
    @classmethod
    def _split_filter_attributes(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(dict.fromkeys(p.strip() for p in value.split(",") if p.strip()))
        return value

    @field_validator("trainer_candidates", mode="before")
    @classmethod
    def _split_candidates(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return tuple(json.loads(text))
            return tuple(part.strip() for part in text.split(",") if part.strip())
        return value

    @field_validator("trainer_candidates")
    @classmethod
    def _check_candidates(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from recsys.candidates import registry

        known = registry.names()
        unknown = [name for name in value if name not in known]
        if unknown:
            raise ValueError(f"unknown candidates {unknown}; known: {known}")
        if not value:
            raise ValueError("name at least one candidate")
        return tuple(dict.fromkeys(value))

    @field_validator("trainer_gate_metric")
    @classmethod
    def _check_gate_metric(cls, value: str) -> str:
        name, _, k = value.partition("@")
        known = {"precision", "recall", "f1", "map", "ndcg", "hit_rate", "coverage"}
        if name not in known or not k.isdigit() or int(k) < 1:
            raise ValueError(f"must look like 'ndcg@10' with a metric in {sorted(known)}")
        return value

    @field_validator("spark_conf")
    @classmethod
    def _check_spark_conf(cls, value: dict[str, str]) -> dict[str, str]:
        bad = sorted(k for k in value if not k.startswith("spark."))
        if bad:
            raise ValueError(f"keys must be Spark settings (spark.*): {bad}")
        return value

    @field_validator("trainer_history_uri")
    @classmethod
    def _check_history_uri(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        scheme, sep, _ = value.partition("://")
        if sep and not scheme.replace("+", "").replace("-", "").isalnum():
            raise ValueError(f"not a filesystem URI: {value!r}")
        return value.strip()

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return upper

    def kafka_config(self, **overrides: Any) -> dict[str, Any]:
        """librdkafka configuration for a confluent-kafka client."""
        return {"bootstrap.servers": self.kafka_bootstrap_servers, **self.kafka_client_options,
                **overrides}


def _env_name(field: str, settings_cls: type[BaseSettings] = Settings) -> str:
    info = settings_cls.model_fields.get(field)
    alias = getattr(info, "validation_alias", None) if info else None
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return f"RECSYS_{field.upper()}"


def load_settings(**overrides: Any) -> Settings:
    """Build and validate the settings; raise ConfigError naming each bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            env = _env_name(field) if field in Settings.model_fields else field
            problems.append(f"{env}: {err['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings for entry points; library code takes a Settings argument."""
    return load_settings()
