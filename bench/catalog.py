"""Catalog benchmark: promote, rollback and info at 10,000 versions and 1,000 channel moves.

Run: .venv/bin/python bench/catalog.py [--versions 10000] [--moves 1000] [--samples 200]
                                       [--store sqlite|postgresql] [--dsn postgresql://...]

The baseline is the same code on a small catalog (100 versions, 10 moves) built in the same run, so
the ratios show how the cost grows with the catalog. ``--store postgresql`` measures the PostgreSQL
store next to SQLite in the same run (on ``--dsn``, or on a throwaway local cluster, as the tests
start one) and prints PostgreSQL's medians as a ratio to SQLite's too.

Goals: median promote, rollback and info at most 50 ms each on the large catalog; one page of
versions costs the same at 100 and at 10,000 versions (ratio about 1).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "collections"))

from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Catalog, Version
from ansible_collections.kiln.immutable.plugins.modules.image_info import query

CHANNELS = ("dev", "staging", "prod")
GOAL_MS = 50.0


def packages(n: int) -> dict:
    """A package list the size of a small Debian image's (about 150 packages)."""
    return {f"lib{i}": f"1.{i}.{n % 7}-{n % 3}+deb12u1" for i in range(150)}


def build(path: str, versions: int, moves: int) -> tuple[Catalog, float]:
    catalog = Catalog(path)
    start = time.perf_counter()
    for n in range(1, versions + 1):
        name = catalog.reserve_version("web")
        catalog.register(
            Version(
                image="web",
                name=name,
                fingerprint=f"{n:064x}",
                artifacts={"docker": {"image_id": f"sha256:{n:064x}", "tag": f"kiln/web:{name}"}},
                base={"ref": "kiln/base:bookworm", "id": "sha256:" + "b" * 64},
                parent=f"web/{n - 1}" if n > 1 else None,
                inputs={f"file{i}": f"{n % (i + 2):x}" for i in range(20)},
                packages=packages(n),
            )
        )
    for i in range(moves):
        target = versions - moves + i + 1 if versions > moves else (i % versions) + 1
        catalog.promote(CHANNELS[i % 3], f"web/{target}", reason="bench")
    return catalog, time.perf_counter() - start


def median_ms(fn, samples: int) -> float:
    times = []
    for i in range(samples):
        start = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def measure(catalog: Catalog, location: str, versions: int, samples: int) -> dict[str, float]:
    def promote(i: int) -> None:
        catalog.promote("prod", f"web/{versions - (i % 50)}", reason="bench promote")

    def rollback(i: int) -> None:
        # Promote then roll back, so every sample has a previous assignment to go back to.
        if i % 2 == 0:
            catalog.promote("staging", f"web/{versions - (i % 40)}")
        else:
            catalog.rollback("web", "staging", reason="bench rollback")

    params = dict(
        image="web",
        version=None,
        channel="prod",
        history=True,
        diff=None,
        events=False,
        verify=False,
        limit=20,
        before=None,
    )

    def info(_i: int) -> None:
        query(catalog, params)

    def first_page(_i: int) -> None:
        catalog.list_versions("web", limit=50)

    def deep_page(_i: int) -> None:
        catalog.list_versions("web", limit=50, before=str(versions // 2))

    def reopen_and_get(_i: int) -> None:
        with Catalog(location) as fresh:
            fresh.channel_version("web", "prod")

    out = {
        "promote": median_ms(promote, samples),
        "rollback": median_ms(rollback, samples),
        "info (image_info channel+history)": median_ms(info, samples),
        "open + channel_version": median_ms(reopen_and_get, samples),
        "list first page (50)": median_ms(first_page, samples),
        "list middle page (50)": median_ms(deep_page, samples),
    }
    return out


def run_store(name: str, small_at: str, large_at: str, args) -> tuple[dict, dict, dict]:
    small, small_build = build(small_at, 100, 10)
    large, large_build = build(large_at, args.versions, args.moves)
    size = f", {os.path.getsize(large.path) / 1e6:.0f} MB" if name == "sqlite" else ""
    print(f"[{name}] built baseline: 100 versions, 10 moves in {small_build:.2f}s")
    print(
        f"[{name}] built catalog: {args.versions} versions (150 packages each), {args.moves} channel moves "
        f"in {large_build:.1f}s ({large_build / (args.versions + args.moves) * 1000:.2f} ms per write){size}"
    )
    base = measure(small, small_at, 100, args.samples)
    big = measure(large, large_at, args.versions, args.samples)
    verify_start = time.perf_counter()
    report = large.verify()
    report["seconds"] = time.perf_counter() - verify_start
    small.close()
    large.close()
    return base, big, report


def print_store(name: str, base: dict, big: dict, report: dict, versions: int, sqlite: dict | None) -> list:
    print()
    title = f"[{name}] median (ms)"
    head = f"{title:<36}{'100 versions':>14}{f'{versions} versions':>18}{'ratio':>8}"
    print(head + (f"{'vs sqlite':>11}" if sqlite else "") + "  goal")
    failed = []
    for key in base:
        ratio = big[key] / base[key] if base[key] else float("inf")
        goal = ""
        if key in ("promote", "rollback", "info (image_info channel+history)"):
            ok = big[key] <= GOAL_MS
            goal = f"<= {GOAL_MS:g} ms {'ok' if ok else 'MISSED'}"
            failed += [] if ok else [f"{name} {key}"]
        elif key.startswith("list"):
            ok = ratio <= 1.5
            goal = f"ratio ~1 {'ok' if ok else 'MISSED'}"
            failed += [] if ok else [f"{name} {key}"]
        versus = f"{big[key] / sqlite[key]:>11.2f}" if sqlite else ""
        print(f"{key:<36}{base[key]:>14.3f}{big[key]:>18.3f}{ratio:>8.2f}{versus}  {goal}")
    print(
        f"[{name}] verify of the whole audit trail: {report['events']} events in {report['seconds']:.2f}s "
        f"(ok={report['ok']})"
    )
    return failed


def postgres_locations(args, stack: contextlib.ExitStack) -> tuple[str, str]:
    if args.dsn:
        base = args.dsn + ("&" if "?" in args.dsn else "?") + "options=-csearch_path%3D"
        for schema in ("kiln_bench_small", "kiln_bench_large"):
            import psycopg

            with psycopg.connect(args.dsn, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
                conn.execute(f"CREATE SCHEMA {schema}")
        return base + "kiln_bench_small", base + "kiln_bench_large"
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from postgres_support import Cluster

    cluster = Cluster().start()
    stack.callback(cluster.stop)
    return cluster.fresh_dsn(), cluster.fresh_dsn()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=10_000)
    parser.add_argument("--moves", type=int, default=1_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--dsn", help="PostgreSQL URL to measure on (default: a throwaway local cluster)")
    args = parser.parse_args()
    failed = []
    with tempfile.TemporaryDirectory(prefix="kiln-bench-catalog-") as tmp, contextlib.ExitStack() as stack:
        sqlite = run_store("sqlite", os.path.join(tmp, "small.db"), os.path.join(tmp, "large.db"), args)
        failed += print_store("sqlite", *sqlite, args.versions, None)
        if args.store == "postgresql":
            small_at, large_at = postgres_locations(args, stack)
            pg = run_store("postgresql", small_at, large_at, args)
            failed += print_store("postgresql", *pg, args.versions, sqlite[1])
    if failed:
        print(f"goals missed: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
