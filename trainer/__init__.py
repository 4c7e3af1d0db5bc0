"""The batch layer: keeps its own interaction history (Parquet), refits implicit ALS on a
schedule, evaluates each candidate on a time-based holdout against popularity and the model in
service, and publishes versions atomically to disk and Redis.

    history.py   durable Parquet history, offsets stored with the rows (exactly-once resume)
    ingest.py    consumer of the interactions topic into the history
    matrix.py    events -> confidence matrix (recsys.confidence rule, optional decay)
    fit.py       implicit ALS on full confidences; NaN/Inf refused
    evaluate.py  fold-in scoring of any factor model on a holdout
    gate.py      the publishing decision (pure)
    publish.py   versions on disk and in Redis: publish, rollback, list, garbage collection
    pipeline.py  one training run, end to end
    schedule.py  --every loop
    metrics.py   Prometheus metrics (recsys_trainer_*)
    cli.py       `recsys train`, `recsys model`
"""
