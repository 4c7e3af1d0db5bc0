"""`recsys bench`: the benchmark command behind `make bench`."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.run import BENCHMARKS


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "bench",
        help="run the trainer, stream, serving and Redis Cluster benchmarks; write "
        "reports/bench.json",
        description="Runs each benchmark against the embedded local stack and prints a Markdown "
        "table with every figure next to its same-run baseline and the ratio.",
    )
    parser.add_argument("--only", action="append", choices=list(BENCHMARKS),
                        help="run only this part (repeatable)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--out", type=Path, default=Path("reports/bench.json"))
    parser.set_defaults(handler=_bench)


def _bench(args: argparse.Namespace) -> int:
    from bench.run import markdown_table, run_all

    parts = args.only or list(BENCHMARKS)
    results = run_all(parts, args.quick, args.out)
    print(markdown_table(results))
    print(f"\nwritten: {args.out}")
    return 1 if any("error" in results.get(p, {}) for p in parts) else 0
