"""The topics the worker reads and writes. Payloads stay raw bytes: validation is ours
(recsys.events), so a malformed record reaches the dead-letter topic instead of a decode
error inside Faust."""

from __future__ import annotations

import faust

from recsys.settings import Settings


def interactions_topic(app: faust.App, settings: Settings) -> faust.TopicT:
    return app.topic(settings.interactions_topic, key_type=bytes, value_type=bytes,
                     key_serializer="raw", value_serializer="raw",
                     partitions=settings.topic_partitions)


def dead_letter_topic(app: faust.App, settings: Settings) -> faust.TopicT:
    return app.topic(settings.dead_letter_topic, key_type=bytes, value_type=bytes,
                     key_serializer="raw", value_serializer="raw")
