"""The speed layer: Faust workers that fold each user's newest events into a user vector.

    recsys stream                  # one worker; start more on other hosts to share partitions

Layout (agents stay thin; the maths and the rules live in pure modules):
    app.py          the faust.App (configuration only)
    transport.py    aiokafka transport: configurable fetch wait (Faust hard-codes 1500 ms) and
                    exact end offsets for table recovery (the local broker under-reports them)
    topics.py       the interactions and dead-letter topics
    tables.py       the per-user history table (changelog partition = the user's partition)
    agents.py       the consuming agent: pin each event, hand it to the micro-batcher
    microbatch.py   adaptive micro-batches: delivery overlaps processing
    state.py        pure: a user's bounded history, dedupe by offset and event id
    batching.py     pure: records -> validated events coalesced by user, dead-letter records
    popularity.py   pure: forward-decay maths for trending (and the Lua that applies it)
    processor.py    one batch end to end: table -> fold-in -> one Redis pipeline
    redis_writer.py the Redis pipeline with retry and backoff
    current_model.py the version in use; on a switch (recsys.model_watch): swap, recompute
    metrics.py      Prometheus metrics, namespace recsys_stream_
    worker.py       wire it all together and run
    cli.py          `recsys stream`
"""

from recsys.errors import RecsysError


class StreamError(RecsysError):
    """Base of the stream processor's own errors."""
