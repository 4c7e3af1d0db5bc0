"""`recsys items load SPEC`: bulk-load an items file into the catalogue in Redis.

The file is read and validated whole first (recsys.sources.items: missing or conflicting
ids, bad fields name their row and field), so a bad file writes nothing; then it is written
in batches (recsys.catalog_codec.write_items) with a progress bar, and the catalogue
generation moves once, so every API process reloads its catalogue once."""

from __future__ import annotations

import argparse

DEFAULT_BATCH = 1000


def register(sub: argparse._SubParsersAction) -> None:
    items = sub.add_parser("items", help="the item catalogue: load an items file")
    actions = items.add_subparsers(dest="items_action", metavar="ACTION", required=True)
    load = actions.add_parser(
        "load", help="validate an items file whole, then write it into the catalogue",
        description="SPEC is retailrocket:PATH (item_properties*.csv[.gz], a file or a "
        "directory; category_tree.csv beside it) or csv:PATH (with --map). Items are "
        "created or replaced; catalogue items not in the file stay.")
    load.add_argument("spec", metavar="SPEC")
    load.add_argument("--map", dest="mapping", default=None, metavar="FIELD=COLUMN,...",
                      help="csv: item_id=...,name=...,category=...,brand=...,price=...,"
                      "tags=...,description=...,image_url=...,available=...")
    load.add_argument("--sep", default=None, help="csv: the column separator (default ,)")
    load.add_argument("--level-sep", default=None,
                      help="csv: separates a category path's levels (default /)")
    load.add_argument("--paths-sep", default=None,
                      help="csv: separates several paths in one cell (default ;)")
    load.add_argument("--tags-sep", default=None, help="csv: separates tags (default |)")
    load.add_argument("--attributes", default=None, metavar="COLUMN,...",
                      help="csv: only these columns become attributes (default: every "
                      "column not mapped)")
    load.add_argument("--category-tree", default=None, metavar="PATH",
                      help="retailrocket: categoryid,parentid (default: category_tree.csv "
                      "beside the file)")
    load.add_argument("--batch-size", type=int, default=DEFAULT_BATCH,
                      help=f"items per Redis transaction (default {DEFAULT_BATCH})")
    load.add_argument("--dry-run", action="store_true",
                      help="validate only; write nothing")
    load.set_defaults(handler=_load)


def _options(args: argparse.Namespace) -> dict:
    given = {"mapping": args.mapping, "sep": args.sep, "level_sep": args.level_sep,
             "paths_sep": args.paths_sep, "tags_sep": args.tags_sep,
             "category_tree": args.category_tree,
             "attributes": args.attributes.split(",") if args.attributes else None}
    return {name: value for name, value in given.items() if value is not None}


def _load(args: argparse.Namespace) -> int:
    import logging
    import sys
    import time

    from redis.exceptions import RedisError
    from tqdm import tqdm

    from recsys.catalog_codec import write_items
    from recsys.errors import RecsysError
    from recsys.keys import Keys
    from recsys.redis_client import redis_client
    from recsys.settings import get_settings
    from recsys.sources.items import load_items

    log = logging.getLogger("recsys.items")
    if args.batch_size < 1:
        raise RecsysError("--batch-size must be at least 1")
    started = time.perf_counter()
    items = load_items(args.spec, **_options(args))
    log.info("%s: %d items valid (read and checked in %.1f s)", args.spec, len(items),
             time.perf_counter() - started)
    if args.dry_run or not items:
        return 0
    settings = get_settings()
    client = redis_client(settings, socket_timeout=30)
    written = 0
    interactive = sys.stderr.isatty()
    with tqdm(total=len(items), unit="item", desc="catalogue", file=sys.stderr,
              disable=not interactive) as bar:
        def advance(n: int) -> None:
            # A bar on a terminal; a log line per tenth of the file otherwise (CI, files).
            nonlocal written
            tenth = written * 10 // len(items)
            written += n
            bar.update(n)
            if not interactive and written * 10 // len(items) > tenth:
                log.info("catalogue: %d of %d items written", written, len(items))

        try:
            generation = write_items(client, Keys.for_settings(settings), items,
                                     args.batch_size, advance)
        except (RedisError, OSError) as exc:
            raise RecsysError(f"Redis failed after {written} of {len(items)} items ({exc}); "
                              "run the same command again (it replaces, so it is "
                              "idempotent)") from None
        finally:
            client.close()
    log.info("loaded %d items into the catalogue (generation %d) in %.1f s", len(items),
             generation, time.perf_counter() - started)
    return 0
