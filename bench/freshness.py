"""Benchmark: event-to-gold freshness of a small increment, spark-submit per task vs the Spark Connect server.

Runs on a private embedded stack (PostgreSQL, S3 endpoint, broker, Spark Connect server). Each increment
is ``--events`` generated events produced now (their Kafka timestamps are the arrival), landed as the
landing service lands them, loaded into bronze and built into silver and gold the way the data DAG's
tasks do it, each Spark task in a process of its own:

* submit (the path before issue 19): ``spark-submit spark/silver.py`` then ``spark-submit spark/gold.py``,
  a new driver JVM and Spark session per task;
* connect (the default now): a fresh Python process per task calling ``shopstream.pipeline.transform``,
  a client of the long-lived Spark Connect server (one shared server-side session).

The paths alternate increment by increment (so both see the same machine load), the first increment of
each path is a warm-up and is not counted. Freshness per increment is what the pipeline records in
``dq.freshness`` (gold's commit time minus each event's Kafka timestamp: median and worst over the
increment's events). Not included, the same for both paths: Airflow's scheduling and task start, and the
Great Expectations checks between the layers.

    python bench/freshness.py [--events 100] [--increments 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, write_section  # noqa: E402
from stack import private_stack  # noqa: E402

from shopstream.events.generator import generate  # noqa: E402
from shopstream.events.producer import produce  # noqa: E402
from shopstream.landing.service import LandingConfig, LandingService  # noqa: E402
from shopstream.settings import Settings  # noqa: E402
from shopstream.spark_session import submit_argv  # noqa: E402
from shopstream.warehouse import bronze  # noqa: E402

SERVICES = ("postgres", "s3", "broker", "spark-connect")
CONNECT_TASK = ("import sys; from shopstream.pipeline import transform; from shopstream.settings import get_settings; "
                "transform(get_settings(), sys.argv[1], sys.argv[2])")


def increment(settings: Settings, n: int, seed: int, path: str) -> dict:
    """Produce, land, load and build one increment on ``path``; seconds per step and the recorded freshness."""
    run_id = f"bench-{path}-{seed}"
    env = settings.service_env()
    t0 = time.monotonic()
    start = datetime(2019, 10, 1, tzinfo=UTC) + timedelta(hours=seed)   # a live stream: each increment later
    produce(settings, ((k, v) for k, v in generate(n, seed=seed, start=start, days=0.02)))   # arrival: now
    svc = LandingService(settings, LandingConfig(idle_timeout_s=1.0, max_interval_s=1.0, notify=False))
    try:
        svc.run(until_idle=True)
    finally:
        svc.close()
    t1 = time.monotonic()
    bronze.load(settings, run_id)
    t2 = time.monotonic()
    steps = {"land": t1 - t0, "bronze": t2 - t1}
    for layer in ("silver", "gold"):
        argv = (submit_argv(settings, layer, "--run-id", run_id) if path == "submit"
                else [sys.executable, "-c", CONNECT_TASK, layer, run_id])
        t = time.monotonic()
        subprocess.run(argv, env=env, check=True, capture_output=True)  # noqa: S603
        steps[layer] = time.monotonic() - t
    with psycopg.connect(settings.postgres.dsn()) as conn:
        events, median_s, worst_s = conn.execute(
            "select events, median_s, worst_s from dq.freshness where run_id = %s", (run_id,)).fetchone()
    out = {"path": path, "events": events, "median_s": median_s, "worst_s": worst_s, **steps}
    print(f"{path:>7}: {events} events in gold, freshness median {median_s:.1f}s worst {worst_s:.1f}s "
          f"({', '.join(f'{k} {v:.1f}s' for k, v in steps.items())})", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--increments", type=int, default=5, help="counted increments per path (+1 warm-up)")
    args = parser.parse_args()
    results: dict[str, list[dict]] = {"submit": [], "connect": []}
    with private_stack(SERVICES) as settings:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        seed = 100
        for i in range(args.increments + 1):
            for path in ("submit", "connect"):
                seed += 1
                r = increment(settings, args.events, seed, path)
                if i:   # the first of each path warms caches (and the server's Python workers)
                    results[path].append(r)
    summary = {p: {"median": statistics.median(r["median_s"] for r in rs), "worst": max(r["worst_s"] for r in rs),
                   "silver": statistics.median(r["silver"] for r in rs), "gold": statistics.median(r["gold"] for r in rs)}
               for p, rs in results.items()}
    sub, con = summary["submit"], summary["connect"]
    body = f"""## Freshness: a small increment from Kafka to gold, spark-submit vs Spark Connect (issue 19)

Machine: {machine()}; load average at the start {load} (the cores are shared with other work: read the
ratio). Private embedded stack; {args.increments} increments of {args.events:,} generated events per path
(after one warm-up each), the paths alternating. Per increment: produce (Kafka timestamp = now), land,
bronze COPY, silver and gold each as a task process of its own; freshness as recorded in `dq.freshness`
(gold commit minus Kafka timestamp, per event). Airflow scheduling and the GE checks are not included.

| path | freshness median of the increments' medians | worst event | silver task (median) | gold task (median) |
|---|---:|---:|---:|---:|
| spark-submit per task (before, baseline) | {sub['median']:.1f}s | {sub['worst']:.1f}s | {sub['silver']:.1f}s | {sub['gold']:.1f}s |
| client of the long-lived Spark Connect server (default) | {con['median']:.1f}s | {con['worst']:.1f}s | {con['silver']:.1f}s | {con['gold']:.1f}s |

Ratio: the Connect path's median freshness is **{con['median'] / sub['median']:.2f}x** the spark-submit path's
(silver task {con['silver'] / sub['silver']:.2f}x, gold task {con['gold'] / sub['gold']:.2f}x).
"""
    print(body)
    print(f"wrote {write_section('freshness', body)}")


if __name__ == "__main__":
    main()
