"""Full ALS fit with Spark MLlib: the same factors as recsys.als, computed by a Spark cluster
(or local mode) instead of implicit in this process. Needs the `spark` extra (pyspark) and
a Java runtime.

Same confidence rule. Spark's implicit ALS reads a "rating" r per (user, item) and uses

    preference = 1 if r > 0 else 0          confidence = 1 + alpha * |r|

so passing r = sign(c) * (|c| - 1) / alpha for each stored confidence c of recsys.confidence
(c = 1 + alpha * w, negative for negative feedback) gives Spark exactly the c and the
preference implicit is given; `alpha` is the same setting.

Regularisation differs. implicit solves each user's row with a fixed lambda:

    (Y^T C_u Y + lambda I) x_u = Y^T C_u p_u

Spark scales it by the row's count of positive entries (ALS-WR): (... + regParam * n_u I).
No single regParam reproduces a fixed lambda for every row, nor for both sides (the mean
count per user and per item differ), so the mapping is

    regParam = lambda / n_mean,     n_mean = nnz / (users with entries)

exact for a user with the mean count, heavier for users with more entries and lighter for
those with fewer (docs/scale.md measures what that costs in NDCG). The settings stay in
implicit's units: the stream's fold-in solves with lambda, unscaled, against the item factors
whichever backend fitted them; so Spark's factors are finished with `finish_sweeps` sweeps at
that fixed lambda (finish_fixed_lambda) before they are published.

A fitted row set comes back as float32 arrays in the matrix's own row and column order; rows
and columns with no entry stay zero, as in recsys.als.fit_als.

Two inputs. `fit_als_spark` is handed C by the caller (the selection's fits, on matrices the
trainer already holds). `fit_als_spark_history` reads the history's Parquet files itself
(spark.read.parquet on the trainer's own file list) and weighs every event on the executors
with the core's rule (recsys.matrix.event_weights_of and decay_factors, through mapInPandas),
over the driver's user/item index (joined by id) and relative to the driver's decay reference,
then sums per (user, item) in Spark: the driver sends no event to Spark. Since
r = sign(c) (|c| - 1) / alpha and c = sign(w) (1 + alpha |w|), Spark's rating is the summed
weight w itself.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.als import AlsParams, Factors, check_finite
from recsys.confidence import confidence
from recsys.errors import ConfigError, NotEnoughData
from recsys.foldin import fold_in_batch, gram
from recsys.matrix import decay_factors, event_weights_of

log = logging.getLogger(__name__)

JAVA_PACKAGE = "openjdk-17-jre-headless"  # Debian's; Spark 4 runs on Java 17 or 21


class SparkUnavailable(ConfigError):
    """Spark cannot start: pyspark or Java missing, or the master does not answer."""


@dataclass(frozen=True)
class SparkOptions:
    """Where fits run: a Spark master URL and `spark.*` settings (spark-submit's --conf)."""

    master: str = "local[2]"
    conf: tuple[tuple[str, str], ...] = ()
    app_name: str = "recsys-trainer"
    connect_timeout_s: float = 60.0
    finish_sweeps: int = 2  # fixed-lambda sweeps after Spark's fit (finish_fixed_lambda)

    @classmethod
    def of(cls, master: str, conf: Mapping[str, Any] | None = None,
           connect_timeout_s: float = 60.0, finish_sweeps: int = 2) -> SparkOptions:
        return cls(master=master, conf=tuple(sorted((str(k), str(v))
                                                    for k, v in (conf or {}).items())),
                   connect_timeout_s=connect_timeout_s, finish_sweeps=finish_sweeps)

    @property
    def session_key(self) -> tuple[Any, ...]:
        """What the SparkSession depends on (not the fit's own options)."""
        return (self.master, self.conf, self.app_name, self.connect_timeout_s)


def spark_options(settings: Any) -> SparkOptions | None:
    """The settings' Spark backend (recsys.settings.Settings), or None for implicit."""
    if getattr(settings, "trainer_backend", "implicit") != "spark":
        return None
    return SparkOptions.of(settings.spark_master, settings.spark_conf,
                           settings.spark_connect_timeout_s, settings.spark_finish_sweeps)


def spark_reg_param(regularization: float, conf: sp.csr_matrix) -> float:
    """implicit's fixed lambda in Spark's count-scaled units (module docstring)."""
    users = int(np.count_nonzero(np.diff(conf.indptr)))
    positives = int(np.count_nonzero(conf.data > 0))
    return _reg_param(regularization, users, positives)


def _reg_param(regularization: float, users: int, positives: int) -> float:
    """regParam = lambda / n_mean, n_mean = positive entries per user with entries."""
    return float(regularization) * users / max(positives, 1)


def spark_ratings(conf: sp.csr_matrix, alpha: float) -> sp.coo_matrix:
    """The ratings that make Spark's confidence and preference equal to C's entries."""
    coo = sp.coo_matrix(conf, dtype=np.float64)
    coo.data = np.sign(coo.data) * (np.abs(coo.data) - 1.0) / alpha
    return coo


def java_problem() -> str | None:
    """Why no Java runtime can run Spark here (None: one can)."""
    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    if not java or not os.path.exists(java):
        return (f"no Java runtime (java not on PATH{', JAVA_HOME=' + home if home else ''}); "
                f"the Spark backend needs Java 17 or 21: apt-get install {JAVA_PACKAGE}")
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{java} -version failed ({exc}); install {JAVA_PACKAGE}"
    if out.returncode != 0:
        return f"{java} -version exited {out.returncode}; install {JAVA_PACKAGE}"
    return None


def master_problem(options: SparkOptions) -> str | None:
    """Why a standalone master (spark://host:port[,host:port]) cannot be reached (None: one
    answers, or the master is not a standalone one: Spark itself reports on those). Checked
    before Spark starts: Spark retries an unreachable master for a minute, then leaves the
    process unable to exit."""
    if not options.master.startswith("spark://"):
        return None
    errors = []
    for address in options.master[len("spark://"):].split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            with socket.create_connection((host, int(port)),
                                          timeout=min(options.connect_timeout_s, 10.0)):
                return None
        except (OSError, ValueError) as exc:
            errors.append(f"{address}: {exc}")
    return (f"Spark master {options.master!r} is unreachable ({'; '.join(errors)}); check "
            "RECSYS_SPARK_MASTER")


_session: tuple[SparkOptions, Any] | None = None
_lock = threading.Lock()
CHECKPOINT_CONF = "spark.checkpoint.dir"


def _stopped(session: Any) -> bool:
    """The session's SparkContext has shut down (a failed job in local mode can take the
    driver's context with it): a new session is needed, the cached one only raises."""
    try:
        return bool(session.sparkContext._jsc.sc().isStopped())
    except Exception:  # noqa: BLE001 - py4j gateway gone: as dead as stopped
        return True


def _checkpoint_dir(options: SparkOptions) -> str | None:
    """A checkpoint directory for a local master that has none configured.

    MLlib's ALS checkpoints its factor RDDs every `checkpointInterval` (10) iterations only
    when the context has a checkpoint directory; without one the lineage grows by a few
    stages per iteration and somewhere past 20 iterations serialising a task overflows the
    JVM's stack (StackOverflowError), which in local mode stops the context. A local master's
    executors share this machine's disk, so a temporary directory serves; on a cluster the
    directory must be shared storage (HDFS, S3...): RECSYS_SPARK_CONF
    {"spark.checkpoint.dir": ...}."""
    if any(key == CHECKPOINT_CONF for key, _ in options.conf):
        return None
    if not options.master.startswith("local"):
        log.warning("no %s in spark_conf: ALS fits of more than about 20 iterations may "
                    "overflow Spark's stack; set it to a directory on shared storage",
                    CHECKPOINT_CONF)
        return None
    path = tempfile.mkdtemp(prefix="recsys-spark-checkpoint-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def spark_session(options: SparkOptions) -> Any:
    """The process's SparkSession for `options`, started on first use and then reused (a
    JVM start costs seconds). One per process, as Spark allows: other options stop it and
    start a new one. Raises SparkUnavailable naming what to fix."""
    global _session
    with _lock:
        if _session is not None:
            same = _session[0].session_key == options.session_key
            if same and not _stopped(_session[1]):
                return _session[1]
            if same:
                log.warning("the Spark session on %s has stopped; starting a new one",
                            options.master)
            _session[1].stop()
            _session = None
        _quiet_pandas_check()
        # py4j narrates every connection at INFO, down to its own garbage collection at
        # interpreter exit, when the handlers' streams may already be closed.
        logging.getLogger("py4j").setLevel(logging.WARNING)
        try:
            from pyspark.sql import SparkSession
        except ImportError:
            raise SparkUnavailable("the Spark backend needs pyspark: pip install "
                                   "'streaming-recsys[spark]'") from None
        problem = java_problem() or master_problem(options)
        if problem:
            raise SparkUnavailable(problem)
        if options.master.startswith("local"):
            # Python workers (the history's weighting, mapInPandas) run this interpreter,
            # whose environment has pandas, pyarrow and recsys; Spark's default is whatever
            # `python3` is on PATH. A cluster's executors need that environment installed.
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = (SparkSession.builder.master(options.master).appName(options.app_name)
                   .config("spark.sql.execution.arrow.pyspark.enabled", "true")
                   .config("spark.ui.enabled", "false")
                   .config("spark.ui.showConsoleProgress", "false"))
        for key, value in options.conf:
            builder = builder.config(key, value)
        checkpoints = _checkpoint_dir(options)
        if checkpoints:
            builder = builder.config(CHECKPOINT_CONF, checkpoints)
        try:
            session = _start(builder, options)
        except SparkUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - py4j/JVM errors: name the master
            raise SparkUnavailable(f"cannot start Spark on master {options.master!r}: "
                                   f"{_first_line(exc)}") from None
        _session = (options, session)
        return session


def _quiet_pandas_check() -> None:
    """pyspark warns about pandas 3 whenever it checks pandas. This module moves Arrow tables
    in and out of Spark; its one pandas use, the history's weighing (mapInPandas), is
    checked against the driver's weights by tests/trainer/test_spark_backend.py."""
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas",
                            category=FutureWarning)


def _start(builder: Any, options: SparkOptions) -> Any:
    """getOrCreate, then one tiny job: a standalone master that is down only shows once a job
    waits for executors, so wait `connect_timeout_s` for one at most."""
    session = builder.getOrCreate()
    if options.master.startswith("local"):
        return session
    done: list[Any] = []
    failed: list[BaseException] = []

    def run_probe() -> None:
        try:
            done.append(session.range(1).count())
        except Exception as exc:  # noqa: BLE001 - reported below, with the master
            failed.append(exc)

    probe = threading.Thread(target=run_probe, daemon=True)
    probe.start()
    probe.join(options.connect_timeout_s)
    if not done:
        session.stop()
        why = f" ({_first_line(failed[0])})" if failed else ""
        raise SparkUnavailable(f"Spark master {options.master!r} ran no job within "
                               f"{options.connect_timeout_s:g}s: unreachable, or no workers"
                               f"{why}; check RECSYS_SPARK_MASTER")
    return session


def stop_session() -> None:
    global _session
    with _lock:
        if _session is not None:
            _session[1].stop()
            _session = None


def _first_line(exc: BaseException) -> str:
    """The JVM's own message for a py4j error (its str() names only the Java call)."""
    java = getattr(exc, "java_exception", None)
    text = str(java.toString() if java is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def fit_als_spark(conf: sp.csr_matrix, params: AlsParams, options: SparkOptions) -> Factors:
    """Fit on C (users x items, full confidences, as recsys.als.fit_als) with Spark MLlib."""
    if conf.nnz == 0:
        raise NotEnoughData("the confidence matrix is empty")
    import pyarrow as pa

    session = spark_session(options)
    ratings = spark_ratings(conf, params.alpha)
    frame = session.createDataFrame(pa.table({
        "user": ratings.row.astype(np.int32), "item": ratings.col.astype(np.int32),
        "rating": ratings.data.astype(np.float32)}))
    return _fit(session, frame, conf.shape, conf.nnz,
                spark_reg_param(params.regularization, conf), lambda: conf, params, options)


@dataclass(frozen=True)
class HistorySource:
    """What Spark needs to weigh the history itself (fit_als_spark_history): the Parquet
    files and the inputs of the driver's rule, so that its weights are the driver's."""

    paths: tuple[str, ...]  # the history files, as Spark paths (spark_paths)
    user_ids: np.ndarray  # row -> user id: the driver's index (recsys.matrix.index_events)
    item_ids: np.ndarray  # column -> item id; events of other ids are left out
    event_weights: Mapping[str, float]
    half_life_days: float | None
    reference_ms: int  # the decay's "now": the driver's newest event time
    negative_rating_max: float | None = None
    min_timestamp_ms: int | None = None  # retention: older events are not in the history

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.user_ids), len(self.item_ids)


def spark_paths(location: str, files: Sequence[Any]) -> tuple[str, ...]:
    """The history's files (trainer.history paths inside `location`'s filesystem) as paths
    Spark reads: a local path or file:// URI -> file:///abs/path; s3://bucket/key ->
    s3a://bucket/key (Hadoop's S3 connector; it needs hadoop-aws on the classpath and the
    credentials in spark.hadoop.fs.s3a.*); another scheme keeps its name and authority
    (hdfs://namenode:port/..., gs://bucket/...)."""
    text = str(location)
    scheme = text.partition("://")[0] if "://" in text else "file"
    if scheme == "file":
        return tuple(Path(str(f)).resolve().as_uri() for f in files)
    # pyarrow's paths on an object store begin with the bucket (s3, gs); on HDFS they are
    # absolute, the namenode being the URI's authority
    authority = text.partition("://")[2].partition("/")[0]
    scheme = "s3a" if scheme == "s3" else scheme
    return tuple(f"{scheme}://{authority}{f}" if str(f).startswith("/") else f"{scheme}://{f}"
                 for f in map(str, files))


def spark_weights(session: Any, source: HistorySource) -> Any:
    """DataFrame (user int, item int, weight double): the summed non-zero weight per pair of
    the history's events, by recsys.matrix's rule (as weight_matrix of the driver's
    index_events), weighed on the executors."""
    import pyarrow as pa
    from pyspark.sql import functions as F

    weights, half_life = dict(source.event_weights), source.half_life_days
    reference, negative_max = int(source.reference_ms), source.negative_rating_max

    def weigh(batches: Iterator[Any]) -> Iterator[Any]:
        # the core's functions, as index_events applies them (types as categories there too)
        for batch in batches:
            w = event_weights_of(batch["event_type"].astype("category"),
                                 batch["value"].to_numpy(dtype=np.float64), weights,
                                 negative_max)
            w *= decay_factors(batch["timestamp"].to_numpy(dtype=np.int64), half_life,
                               reference)
            yield batch[["user_id", "item_id"]].assign(weight=w)

    events = session.read.parquet(*source.paths).select(
        "user_id", "item_id", "event_type", "value", "timestamp")
    if source.min_timestamp_ms is not None:
        events = events.where(F.col("timestamp") >= int(source.min_timestamp_ms))
    users = session.createDataFrame(pa.table({
        "user_id": np.asarray(source.user_ids).astype(str),
        "user": np.arange(len(source.user_ids), dtype=np.int32)}))
    items = session.createDataFrame(pa.table({
        "item_id": np.asarray(source.item_ids).astype(str),
        "item": np.arange(len(source.item_ids), dtype=np.int32)}))
    _quiet_pandas_check()
    weighed = events.mapInPandas(weigh, "user_id string, item_id string, weight double")
    return (weighed.join(users, "user_id").join(items, "item_id")
            .groupBy("user", "item").agg(F.sum("weight").alias("weight"))
            .where(F.col("weight") != 0.0))


def collect_weights(frame: Any, shape: tuple[int, int]) -> sp.csr_matrix:
    """spark_weights' pairs as the driver's W (users x items, float64, as weight_matrix)."""
    table = frame.toArrow()
    out = sp.csr_matrix((table.column("weight").to_numpy(),
                         (table.column("user").to_numpy(), table.column("item").to_numpy())),
                        shape=shape, dtype=np.float64)
    out.sort_indices()
    return out


def fit_als_spark_history(source: HistorySource, params: AlsParams,
                          options: SparkOptions) -> Factors:
    """fit_als_spark on the history's Parquet files, read and weighed by Spark (module
    docstring). The driver holds the id maps, and, for the fixed-lambda finish
    (options.finish_sweeps > 0), the summed (user, item) pairs that come back from Spark:
    one entry per pair, never one per event."""
    from pyspark.sql import functions as F

    session = spark_session(options)
    weights = spark_weights(session, source).cache()
    try:
        counts = weights.agg(F.countDistinct("user").alias("users"),
                             F.sum((F.col("weight") > 0).cast("long")).alias("positives"),
                             F.count(F.lit(1)).alias("nnz")).first()
        if not counts["nnz"]:
            raise NotEnoughData("no event of the history carries weight")
        reg = _reg_param(params.regularization, int(counts["users"]),
                         int(counts["positives"] or 0))

        def conf() -> sp.csr_matrix:
            summed = collect_weights(weights, source.shape)
            matrix = summed.astype(np.float32)
            matrix.data = np.asarray(confidence(summed.data, params.alpha), dtype=np.float32)
            return matrix

        # Spark's rating r = sign(c) (|c| - 1) / alpha is the summed weight (module docstring)
        frame = weights.select("user", "item", F.col("weight").cast("float").alias("rating"))
        return _fit(session, frame, source.shape, int(counts["nnz"]), reg, conf, params,
                    options)
    finally:
        weights.unpersist()


def _fit(session: Any, frame: Any, shape: tuple[int, int], nnz: int, reg: float,
         conf: Callable[[], sp.csr_matrix], params: AlsParams,
         options: SparkOptions) -> Factors:
    """MLlib's implicit ALS on a (user, item, rating) frame, then the fixed-lambda finish on
    C (`conf()`: only built when there are sweeps to run)."""
    from pyspark.ml.recommendation import ALS

    n_users, n_items = shape
    blocks = max(1, session.sparkContext.defaultParallelism)
    als = ALS(rank=params.factors, maxIter=params.iterations, regParam=reg,
              implicitPrefs=True, alpha=params.alpha, seed=params.seed, userCol="user",
              itemCol="item", ratingCol="rating", nonnegative=False,
              # one block per core: Spark's default of 10 shuffles ten-way for nothing on a
              # small cluster, and the fit's time is mostly shuffles
              numUserBlocks=blocks, numItemBlocks=blocks)
    started = time.perf_counter()
    model = als.fit(frame)
    users = _dense(model.userFactors, n_users, params.factors)
    items = _dense(model.itemFactors, n_items, params.factors)
    spark_s = time.perf_counter() - started
    if options.finish_sweeps > 0:
        users, items = finish_fixed_lambda(conf(), users, items, params.regularization,
                                           options.finish_sweeps)
    seconds = time.perf_counter() - started
    log.info("Spark ALS fit (%s): %d x %d, %d nonzeros, k=%d, regParam=%.4g (lambda %g), "
             "%d iterations in %.2fs, then %d fixed-lambda sweep(s) in %.2fs", options.master,
             n_users, n_items, nnz, params.factors, reg, params.regularization,
             params.iterations, spark_s, options.finish_sweeps, seconds - spark_s)
    return check_finite(Factors(users, items, seconds))


def finish_fixed_lambda(conf: sp.csr_matrix, users: np.ndarray, items: np.ndarray,
                        regularization: float, sweeps: int) -> tuple[np.ndarray, np.ndarray]:
    """`sweeps` ALS sweeps with implicit's fixed lambda from Spark's factors: every user
    solved against the item factors, then every item against those users (recsys.foldin's
    solve, the stream's maths, both ways).

    Spark's count-scaled regularisation leaves the popular items over-shrunk and the rare
    ones under-regularised (module docstring), and the stream then folds users in with a
    fixed lambda against those items. One fixed-lambda sweep moves the item factors to
    that lambda's solution given the users, which recovers most of the quality the mapping
    loses (docs/scale.md). It runs in this process, where the matrix and the factors
    already are (the fit's input and output); each sweep is exact solves for every row, a
    sizeable share of a whole implicit fit's CPU (docs/scale.md)."""
    for _ in range(sweeps):
        users = _solve_rows(conf, items, regularization)
        items = _solve_rows(conf.T.tocsr(), users, regularization)
    return users, items


_SWEEP_BATCH = 2048  # rows per stacked solve: bounds fold_in_batch's (rows, width, k) arrays


def _solve_rows(conf: sp.csr_matrix, fixed: np.ndarray, regularization: float) -> np.ndarray:
    """Each row of C solved against the fixed factors of its columns (a row without
    entries gets the zero vector, as in a fit)."""
    fixed = np.asarray(fixed, dtype=np.float32)
    fixed_gram = gram(fixed)
    out = np.zeros((conf.shape[0], fixed.shape[1]), dtype=np.float32)
    ptr, indices, data = conf.indptr, conf.indices, conf.data
    for start in range(0, conf.shape[0], _SWEEP_BATCH):
        stop = min(start + _SWEEP_BATCH, conf.shape[0])
        histories = [(indices[ptr[r]:ptr[r + 1]], data[ptr[r]:ptr[r + 1]])
                     for r in range(start, stop)]
        out[start:stop] = fold_in_batch(fixed, fixed_gram, regularization, histories)
    return out


def _dense(factors: Any, n_rows: int, k: int) -> np.ndarray:
    """A factors DataFrame (id, features: array<float>) as rows of a dense matrix."""
    table = factors.toArrow()
    out = np.zeros((n_rows, k), dtype=np.float32)
    if table.num_rows:
        ids = table.column("id").to_numpy()
        values = table.column("features").combine_chunks().flatten().to_numpy()
        out[ids] = values.reshape(len(ids), k)
    return out
