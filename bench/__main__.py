"""``python -m bench --n 100000 [--repeat 3]``: run the benchmark, print the table,
write the figures to ``bench/results/<timestamp>-<n>.json``."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from bench.parallel import PRODUCTS
from bench.suite import RESULTS, Options, main


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of products >= 1, not {text!r}")
    return value


def parse(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--n", type=int, default=100_000, help="products in the catalog")
    parser.add_argument("--repeat", type=int, default=3, help="runs per scenario (medians)")
    parser.add_argument(
        "--first-repeat",
        type=int,
        default=1,
        help="measured first syncs (each pushes everything through the Python fakes); "
        "the other repeats start from the state the first one left",
    )
    parser.add_argument(
        "--sources",
        default="jsonl,postgres,mariadb,sqlite",
        help="comma-separated: jsonl, postgres, mariadb, sqlite",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "syncd-bench",
        help="catalogs (kept and reused), state databases, the children's log",
    )
    parser.add_argument("--concurrency", default="1,4,16,64", help="throughput: concurrency levels")
    parser.add_argument(
        "--seed",
        choices=("auto", "sync", "direct"),
        default="auto",
        help="how state is first filled: a measured first sync, or written directly "
        "(auto: directly above 200k products)",
    )
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help="where the figures' JSON is written"
    )
    parser.add_argument("--no-naive", action="store_true", help="skip the naive re-push")
    parser.add_argument("--no-throughput", action="store_true", help="skip throughput runs")
    parser.add_argument(
        "--parallel",
        type=_positive,
        default=PRODUCTS,
        metavar="PRODUCTS",
        help="products (at most n) in the targets-in-parallel first syncs",
    )
    parser.add_argument(
        "--no-parallel", action="store_true", help="skip the targets-in-parallel scenario"
    )
    args = parser.parse_args(argv)
    direct = args.seed == "direct" or (args.seed == "auto" and args.n > 200_000)
    return Options(
        n=args.n,
        repeat=args.repeat,
        first_repeat=min(args.first_repeat, args.repeat),
        sources=tuple(s.strip() for s in args.sources.split(",") if s.strip()),
        workdir=args.workdir,
        concurrency=tuple(int(c) for c in args.concurrency.split(",")),
        seed_directly=direct,
        naive=not args.no_naive and not direct,
        throughput=not args.no_throughput,
        results=args.results,
        parallel=0 if args.no_parallel else args.parallel,
    )


if __name__ == "__main__":
    sys.exit(main(parse(sys.argv[1:])))
