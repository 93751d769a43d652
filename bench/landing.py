"""Benchmark: end-to-end landing throughput (first produce -> last commit) vs a naive per-event sink.

Runs on a private embedded stack (PostgreSQL, S3 endpoint, broker) started for the run under a temp dir. The baseline writes one JSON object per valid event, as an S3 sink connector
with a flush size of 1 does; it runs on fewer events (it is slow) and is compared in events/s.

    python bench/landing.py [--events 1000000] [--baseline-events 20000]
"""

from __future__ import annotations

import argparse
import io
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import psycopg
from confluent_kafka import Consumer, KafkaError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, write_section  # noqa: E402
from stack import private_stack  # noqa: E402

from shopstream.events.generator import generate  # noqa: E402
from shopstream.events.producer import produce  # noqa: E402
from shopstream.events.validation import validate_batch  # noqa: E402
from shopstream.settings import Settings  # noqa: E402
from shopstream.stack.base import venv_bin  # noqa: E402
from shopstream.stack.s3 import minio_client  # noqa: E402


def private(settings: Settings, tag: str) -> tuple[Settings, dict[str, str]]:
    kafka = settings.kafka.model_copy(update={
        "raw_topic": f"bench.raw.{tag}", "invalid_topic": f"bench.invalid.{tag}", "landing_group": f"bench-{tag}",
    })
    env = {**settings.service_env(), "SHOPSTREAM_KAFKA__RAW_TOPIC": kafka.raw_topic,
           "SHOPSTREAM_KAFKA__INVALID_TOPIC": kafka.invalid_topic, "SHOPSTREAM_KAFKA__LANDING_GROUP": kafka.landing_group}
    return settings.model_copy(update={"kafka": kafka}), env


def bench_landing(settings: Settings, n: int) -> dict:
    s, env = private(settings, uuid.uuid4().hex[:8])
    print(f"generating {n:,} events ...", flush=True)
    stream = generate(n, seed=7, days=2)
    messages = list(stream.timed())
    truth = stream.truth
    # the topic must exist before the consumer subscribes
    produce(s, messages[:1])
    log_path = s.state_dir / "logs" / f"bench-landing-{s.kafka.landing_group}.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen([venv_bin("shopstream"), "land", "--max-interval", "2"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while b"assigned partitions" not in log_path.read_bytes():  # consumer group joined
        if time.time() > deadline or proc.poll() is not None:
            raise RuntimeError(f"landing did not start: see {log_path}")
        time.sleep(0.2)
    print("producing ...", flush=True)
    t0 = time.time()
    stats = produce(s, messages[1:])
    produced = time.time()
    query = ("select extract(epoch from max(landed_at)), coalesce(sum(rows) filter (where kind = 'events'), 0), "
             "coalesce(sum(rows) filter (where kind = 'deadletter'), 0), count(*) "
             "from ops.landed_objects where topic = %s")
    with psycopg.connect(s.postgres.dsn(), autocommit=True) as conn:
        while True:
            last_commit, rows, dead, objects = conn.execute(query, (s.kafka.raw_topic,)).fetchone()
            if int(rows) + int(dead) >= truth.total_messages or time.time() - produced > 900:
                break
            time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    seconds = float(last_commit) - t0
    assert int(rows) == truth.valid_messages and int(dead) == truth.invalid, (rows, dead, truth.valid_messages)
    return {"events": n, "seconds": seconds, "rate": n / seconds, "produce_rate": stats.sent / (produced - t0),
            "objects": int(objects)}


def bench_naive(settings: Settings, n: int) -> dict:
    """One S3 object per valid event, written as it is consumed."""
    s, _ = private(settings, uuid.uuid4().hex[:8])
    messages = list(generate(n, seed=8, days=2).timed())
    lake = minio_client(s)
    c = Consumer(s.kafka.client_config(**{"group.id": s.kafka.landing_group, "auto.offset.reset": "earliest",
                                          "enable.partition.eof": True, "session.timeout.ms": 6000}))
    produce(s, messages[:1])
    c.subscribe([s.kafka.raw_topic])
    c.consume(1, timeout=8)
    t0 = time.time()
    produce(s, messages[1:])
    done = 0
    idle_since = time.time()
    while time.time() - idle_since < 5:
        batch = c.consume(500, timeout=0.5)
        msgs = [m for m in batch if m.error() is None or m.error().code() != KafkaError._PARTITION_EOF]
        if not msgs:
            continue
        idle_since = time.time()
        res = validate_batch([(m.value(), m.topic(), m.partition(), m.offset()) for m in msgs])
        for row in res.valid.to_pylist():
            body = orjson.dumps(row, default=str)
            key = f"naive/{row['src_topic']}/{row['src_partition']}/{row['src_offset']}.json"
            lake.put_object(s.s3.lake_bucket, key, io.BytesIO(body), len(body))
        c.commit(asynchronous=False)
        done += len(msgs)
        last = time.time()
    c.close()
    seconds = last - t0
    return {"events": done + 1, "seconds": seconds, "rate": (done + 1) / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--baseline-events", type=int, default=20_000)
    args = parser.parse_args()
    with private_stack() as settings:
        ours = bench_landing(settings, args.events)
        print(f"landing: {ours}", flush=True)
        naive = bench_naive(settings, args.baseline_events)
        print(f"naive:   {naive}", flush=True)
    ratio = ours["rate"] / naive["rate"]
    target = "met" if ours["rate"] >= 100_000 else "NOT met"
    body = f"""## Landing: Kafka -> validated Parquet in the lake (issue 4)

Machine: {machine()}. Embedded stack (Tansu broker, s3rver, PostgreSQL manifest). Generated events with
10% invalid, 2% re-sent and 2% late; time from the first produce to the last manifest commit, producer
and landing service running at the same time (two processes).

| path | events | seconds | events/s |
|---|---:|---:|---:|
| shopstream landing (batches, Parquet per partition-hour, intent/commit manifest) | {ours['events']:,} | {ours['seconds']:.1f} | {ours['rate']:,.0f} |
| naive sink: one JSON object per event (baseline) | {naive['events']:,} | {naive['seconds']:.1f} | {naive['rate']:,.0f} |

Ratio: **{ratio:,.0f}x** the baseline. Target (>= 100,000 events/s end to end): **{target}**. The
producer alone ran at {ours['produce_rate']:,.0f} events/s in the same run; {ours['objects']:,} lake objects
were written.
"""
    print(f"wrote {write_section('landing', body)}")


if __name__ == "__main__":
    main()
