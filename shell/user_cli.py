"""`recsys user erase ID`: erase a user everywhere (recsys.erasure), like
`DELETE /v1/users/{user_id}` without the API."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    user = sub.add_parser("user", help="privacy: erase a user everywhere")
    actions = user.add_subparsers(dest="user_action", metavar="ACTION", required=True)
    erase = actions.add_parser(
        "erase", help="delete a user's vectors, seen items, stream state and trainer history",
        description="Deletes the user's Redis state at once and sends an erase control "
        "record on the interactions topic: the stream worker tombstones their table entry, "
        "the trainer removes their history rows (also applied before its next run).")
    erase.add_argument("user_id")
    erase.set_defaults(handler=_erase)


def _erase(args: argparse.Namespace) -> int:
    import logging

    from recsys.erasure import erase_control_record, erase_user
    from recsys.errors import RecsysError
    from recsys.events import Event, InvalidEvent
    from recsys.keys import Keys
    from recsys.producer import EventProducer
    from recsys.redis_client import redis_client
    from recsys.settings import get_settings

    log = logging.getLogger("recsys.erasure")
    settings = get_settings()
    try:  # the same id rules as events: an id that cannot be in any store is a typo
        Event.create(args.user_id, "x", "view")
    except InvalidEvent as exc:
        raise RecsysError(f"not a valid user id: {exc}") from None
    client = redis_client(settings, socket_timeout=10)
    removed = erase_user(client, Keys.for_settings(settings), args.user_id)
    key, value = erase_control_record(args.user_id)
    with EventProducer(settings) as producer:
        producer.send_raw(key, value)
        if producer.flush(30):
            raise RecsysError("the erase record was not delivered to Kafka; run it again")
    log.info("erased %r: %d Redis entries removed; erase record sent to %s", args.user_id,
             removed, settings.interactions_topic)
    return 0
