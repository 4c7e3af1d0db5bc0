"""Every Prometheus metric of the stream worker, namespace `recsys_stream_`.

One worker runs per process, so the metrics live in the process-wide default registry and
are served with /healthz by `stream.health.start_server` on `settings.stream_web_port`
(0 = a free port).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info, start_http_server

NS = "recsys_stream"

# Outcome of each consumed record: ok | invalid | duplicate | no_model | unknown_item.
EVENTS = Counter(f"{NS}_events_total", "Consumed events by type and outcome.",
                 ["event_type", "outcome"])
DEAD_LETTERS = Counter(f"{NS}_dead_letters_total", "Records sent to the dead-letter topic.",
                       ["reason"])
CLAMPED = Counter(f"{NS}_events_clamped_total",
                  "Events whose time was clamped to their arrival (reason future: more than "
                  "event_time_future_tolerance_s ahead of the record's Kafka timestamp).",
                  ["reason"])
MISROUTED = Counter(f"{NS}_misrouted_events_total",
                    "Valid events whose Kafka key is not their user id (producer bug).")
PARTITION_EVENTS = Counter(f"{NS}_partition_events_total",
                           "Records consumed per source partition.", ["partition"])
BATCH_EVENTS = Histogram(f"{NS}_batch_events", "Records per micro-batch.",
                         buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000))
BATCH_USERS = Histogram(f"{NS}_batch_users", "Distinct users per micro-batch.",
                        buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000))
BATCH_SECONDS = Histogram(f"{NS}_batch_seconds", "Processing time of one micro-batch.",
                          buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                   2.5, 5, 10))
FOLDIN_SECONDS = Histogram(f"{NS}_foldin_seconds",
                           "Time to solve the fold-in of one batch of users.",
                           buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                    0.05, 0.1, 0.25, 0.5, 1, 2.5))
FRESHNESS_SECONDS = Histogram(
    f"{NS}_freshness_seconds",
    "End-to-end freshness: event timestamp to the Redis write being acknowledged.",
    buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
CONSUMER_LAG = Gauge(f"{NS}_consumer_lag",
                     "Records behind the partition's end offset, after the last processed one.",
                     ["partition"])
FETCH_TIMEOUTS = Counter(f"{NS}_fetch_timeouts_total",
                         "Fetch requests the broker left unanswered, given up and sent again "
                         "on a new connection.")
STARVED_FETCHES = Counter(f"{NS}_starved_fetches_total",
                          "Switches to the longer fetch wait after a fetch answered without "
                          "records the broker has (stream/transport.py).")
CONSUMER_REWINDS = Counter(f"{NS}_consumer_rewinds_total",
                           "Seeks back to the next expected offset: records were skipped after a "
                           "rebalance (stream.transport).", ["partition"])
ASSIGNED_PARTITIONS = Gauge(f"{NS}_assigned_partitions",
                            "Partitions of the interactions topic this worker owns.")
TABLE_USERS = Gauge(f"{NS}_table_users", "Users in this worker's local history table.")
REDIS_RETRIES = Counter(f"{NS}_redis_retries_total", "Failed Redis writes that were retried.")
REDIS_REJECTED = Counter(f"{NS}_redis_rejected_total",
                         "Redis error replies that retrying cannot fix (their events are "
                         "dead-lettered), by reason: redis_oom | redis_wrongtype | redis_error.",
                         ["reason"])
REDIS_UNAVAILABLE = Counter(f"{NS}_redis_unavailable_total",
                            "Batch writes that ran out of retry attempts (Redis unreachable); "
                            "the batch is kept and tried again.")
ERASED_USERS = Counter(f"{NS}_erased_users_total",
                       "Users forgotten on an erase control record (table tombstone, Redis).")
IDLE_FORGOTTEN = Counter(f"{NS}_idle_users_forgotten_total",
                         "Table entries tombstoned because their user was idle for longer "
                         "than stream_user_idle_days.")
HEARTBEAT = Gauge(f"{NS}_heartbeat_timestamp_seconds",
                  "Last time the worker's event loop ran its heartbeat (epoch s).")
BATCH_IN_PROGRESS = Gauge(f"{NS}_batch_in_progress_seconds",
                          "How long the batch being processed has been running (0 when idle).")
CHANGELOG_RESENDS = Counter(f"{NS}_changelog_resends_total",
                            "History-table changelog records sent again after a failed delivery.")
BATCH_ERRORS = Counter(f"{NS}_batch_errors_total",
                       "Batches that failed for a reason other than Redis.")
STATE_RESETS = Counter(f"{NS}_state_resets_total",
                       "Table values that could not be decoded and were started afresh.")
MODEL = Info(f"{NS}_model", "Model version the worker folds users in against.")
MODEL_SWITCHES = Counter(f"{NS}_model_switches_total", "Model versions switched to.")
TOWER_SECONDS = Histogram(f"{NS}_tower_seconds",
                          "Time of the neural user tower's forward pass for one batch of users "
                          "(neural versions; ALS versions fold in instead).",
                          buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                   0.05, 0.1, 0.25, 0.5, 1, 2.5))
TOWER_SKIPPED_ITEMS = Counter(f"{NS}_tower_skipped_items_total",
                              "History items the neural tower did not read: `unknown` to the "
                              "version (skipped), or older than its window (`truncated`).",
                              ["reason"])
MODEL_LOAD_ERRORS = Counter(f"{NS}_model_load_errors_total",
                            "Failed attempts to load a newly announced model version.")
RECOMPUTED_USERS = Counter(f"{NS}_recomputed_users_total",
                           "User vectors recomputed from the table after a switch/rebalance.")
ITEM_FOLDIN_ITEMS = Counter(f"{NS}_item_foldin_items_total",
                            "Item vectors learned by the item fold-in and written under the "
                            "served version (items it does not know).")
ITEM_FOLDIN_SKIPPED = Counter(
    f"{NS}_item_foldin_skipped_total",
    "Items of a batch the item fold-in left without a new vector, by reason: erased (removed "
    "from the catalogue), too_few_users (fewer than stream_item_foldin_min_users of its recent "
    "users have vectors), batch_bound (beyond stream_item_foldin_max_items in one batch), "
    "no_user_gram (the version has no user Gram matrix), redis_error, error (a bug: logged). "
    "Neural versions do not fold items in.",
    ["reason"])
ITEM_FOLDIN_USERS_SKIPPED = Counter(
    f"{NS}_item_foldin_users_skipped_total",
    "Recent users of an item left out of its fold-in because they have no vector under the "
    "served version (they are not folded in first; see docs/stream.md).")
ITEM_FOLDIN_USERS_BOUNDED = Counter(
    f"{NS}_item_foldin_users_bounded_total",
    "Interactions of one batch on one item beyond stream_item_foldin_max_users (bots, bursts): "
    "only the most recent users of the batch were recorded.")
ITEM_FOLDIN_SECONDS = Histogram(f"{NS}_item_foldin_seconds",
                                "Item fold-in of one batch: Redis reads and the solve.",
                                buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                         0.25, 0.5, 1, 2.5))
REFOLDED_ITEMS = Counter(f"{NS}_refolded_items_total",
                         "Items of the previous version's item fold-in re-folded under a new "
                         "version that still lacks them.")

MODEL.info({"version": "none"})


def start_metrics_server(port: int, addr: str = "0.0.0.0") -> int:
    """Serve /metrics in a background thread; returns the port actually bound."""
    server, _thread = start_http_server(port, addr=addr)
    return int(server.server_port)

# --- the attribution consumer (`recsys attribution`, stream/attribution.py) -----------------
# Labels are bounded: endpoint (5), source (personalized, similar, popular, anonymous,
# fallback:<reason>), variant (an experiment's variant names, or "none"), model_version (the
# versions served while the process ran), bucket (recsys.attribution.POSITION_BUCKETS).
FEEDBACK_IMPRESSIONS = Counter(
    "recsys_feedback_impressions_total", "Served lists read from the impressions topic.",
    ["endpoint", "model_version", "variant"])
FEEDBACK_OUTCOMES = Counter(
    "recsys_feedback_outcomes_total",
    "Events attributed to a served list: outcome click | addtocart | purchase, by the list's "
    "endpoint, model version, variant, source and the item's position bucket.",
    ["outcome", "endpoint", "model_version", "variant", "source", "bucket"])
FEEDBACK_UNATTRIBUTED = Counter(
    "recsys_feedback_unattributed_total",
    "Outcome events not attributed, by reason (unknown_recommendation, item_not_in_list, "
    "outside_window, no_impression, duplicate).", ["outcome", "reason"])
FEEDBACK_INVALID = Counter(
    "recsys_feedback_invalid_records_total",
    "Records the attribution consumer could not read (skipped), by topic kind.", ["kind"])
FEEDBACK_USERS = Gauge("recsys_feedback_users", "Users with attribution state in memory.")
