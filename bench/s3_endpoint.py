"""Benchmark: the S3 endpoint under the broker, SeaweedFS (the embedded stack's) against npm s3rver (before).

The same generated events are produced with the project's producer to a Tansu broker whose storage is
each endpoint in turn, then read back from offset 0 by one consumer; endpoint and broker CPU seconds and
wall time are recorded for both phases, in one run, so the ratios are what to read. s3rver is the test
fixture `make install` puts in .venv/node (it ignores conditional PUTs, so the broker is started here
without the stack's start-up guard, as the stack did before; nothing is restarted, so no damage is done).

    python bench/s3_endpoint.py [--events 200000]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import psutil
from confluent_kafka import Consumer, KafkaError, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, write_section  # noqa: E402

from shopstream.events.generator import generate  # noqa: E402
from shopstream.events.producer import produce  # noqa: E402
from shopstream.settings import Settings, environment  # noqa: E402
from shopstream.stack.base import free_port, port_in_use, wait_until  # noqa: E402
from shopstream.stack.broker import BrokerService, ensure_topics  # noqa: E402
from shopstream.stack.process import ManagedProcess, ProcSpec  # noqa: E402
from shopstream.stack.s3 import S3Service, minio_client  # noqa: E402


def cpu(procs: list[ManagedProcess]) -> float:
    total = 0.0
    for m in procs:
        for p in m.tree():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
    return total


@contextmanager
def endpoint(kind: str, state: Path):
    """Settings and the endpoint's processes: the stack's SeaweedFS service, or s3rver as the tests run it."""
    env = {"SHOPSTREAM_STATE_DIR": str(state), "SHOPSTREAM_S3__ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
           "SHOPSTREAM_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
    if kind == "s3rver":
        env.update(SHOPSTREAM_S3__ACCESS_KEY="S3RVER", SHOPSTREAM_S3__SECRET_KEY="S3RVER")
    with environment(env) as s:
        if kind == "seaweedfs":
            svc = S3Service(s)
            svc.start()
            procs = svc.processes()
        else:
            binary = Path(sys.prefix) / "node" / "node_modules" / ".bin" / "s3rver"
            (state / "s3rver").mkdir()
            procs = [ManagedProcess(ProcSpec("s3rver", [str(binary), "-d", str(state / "s3rver"), "-a", "127.0.0.1",
                                                        "-p", s.s3.endpoint_url.rsplit(":", 1)[1], "--silent"]),
                                    state / "run", state / "logs")]
            procs[0].start()
            assert wait_until(lambda: None if port_in_use("127.0.0.1", int(s.s3.endpoint_url.rsplit(":", 1)[1]))
                              else "down", 30) is None
            for bucket in s.s3.buckets():
                minio_client(s).make_bucket(bucket)
        try:
            yield s, procs
        finally:
            for p in procs:
                p.stop()


@contextmanager
def broker(s: Settings):
    svc = BrokerService(s)
    proc = ManagedProcess(svc.specs()[0], s.state_dir / "run", s.state_dir / "logs")
    proc.start()
    try:
        assert wait_until(svc.check, 30) is None, proc.tail()
        ensure_topics(s)
        yield [proc]
    finally:
        proc.stop()


def read_all(s: Settings, total: int) -> int:
    c = Consumer(s.kafka.client_config(**{"group.id": "bench-read", "enable.partition.eof": True,
                                          "fetch.max.bytes": 8 * 2**20, "max.partition.fetch.bytes": 2 * 2**20}))
    c.assign([TopicPartition(s.kafka.raw_topic, p, 0) for p in range(s.kafka.partitions)])
    n, eof, deadline = 0, set(), time.time() + 600
    while len(eof) < s.kafka.partitions and time.time() < deadline:
        for m in c.consume(10_000, timeout=0.5):
            if m.error() is None:
                n += 1
                eof.discard(m.partition())
            elif m.error().code() == KafkaError._PARTITION_EOF:
                eof.add(m.partition())
    c.close()
    assert n == total, (n, total)
    return n


def run(kind: str, messages: list) -> dict:
    state = Path(tempfile.mkdtemp(prefix=f"shopstream-bench-{kind}-"))
    state.chmod(0o755)
    try:
        with endpoint(kind, state) as (s, s3_procs), broker(s) as broker_procs:
            print(f"{kind}: producing {len(messages):,} events ...", flush=True)
            c0, b0, t0 = cpu(s3_procs), cpu(broker_procs), time.time()
            stats = produce(s, messages)
            prod = {"seconds": time.time() - t0, "s3": cpu(s3_procs) - c0, "broker": cpu(broker_procs) - b0,
                    "events": stats.sent}
            print(f"{kind}: reading them back ...", flush=True)
            c0, b0, t0 = cpu(s3_procs), cpu(broker_procs), time.time()
            n = read_all(s, stats.sent + stats.resent)
            read = {"seconds": time.time() - t0, "s3": cpu(s3_procs) - c0, "broker": cpu(broker_procs) - b0,
                    "events": n}
            rss = sum(p.memory_info().rss for m in s3_procs for p in m.tree()) / 2**20
        return {"produce": prod, "read": read, "rss": rss}
    finally:
        shutil.rmtree(state, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    load = ", ".join(f"{x:.1f}" for x in psutil.getloadavg())
    messages = list(generate(args.events, seed=9, days=2).timed())
    res = {kind: run(kind, messages) for kind in ("s3rver", "seaweedfs")}
    rows = []
    for phase in ("produce", "read"):
        for kind in ("s3rver", "seaweedfs"):
            r = res[kind][phase]
            rows.append(f"| {phase} | {kind} | {r['events']:,} | {r['seconds']:.1f} | {r['events'] / r['seconds']:,.0f} | "
                        f"{r['s3']:.1f} | {r['s3'] / r['events'] * 1e6:.1f} | {r['broker']:.1f} |")
    ratio = {ph: (res["seaweedfs"][ph]["s3"] / res["seaweedfs"][ph]["events"])
             / (res["s3rver"][ph]["s3"] / res["s3rver"][ph]["events"]) for ph in ("produce", "read")}
    speed = {ph: (res["seaweedfs"][ph]["events"] / res["seaweedfs"][ph]["seconds"])
             / (res["s3rver"][ph]["events"] / res["s3rver"][ph]["seconds"]) for ph in ("produce", "read")}
    body = f"""## S3 endpoint under the broker: SeaweedFS against s3rver (issue 13)

Machine: {machine()}; load average before the run {load}.
{args.events:,} generated events produced with the project's producer to a Tansu broker storing its log on each endpoint, then read back from offset 0 by
one consumer; CPU seconds of the endpoint's and the broker's processes per phase. s3rver (npm, JavaScript)
was the embedded stack's endpoint until it was found to ignore conditional PUTs (the broker then restarts
every partition at offset 0); SeaweedFS (`weed mini`: master, volume server, filer and S3 gateway in one Go
process) replaces it.

| phase | endpoint | events | seconds | events/s | endpoint CPU s | endpoint CPU µs/event | broker CPU s |
|---|---|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

Endpoint CPU per event, SeaweedFS / s3rver: **{ratio['produce']:.1f}x** producing, **{ratio['read']:.1f}x** reading;
events/s SeaweedFS / s3rver: {speed['produce']:.2f}x producing, {speed['read']:.2f}x reading. Resident memory after
the run: s3rver {res['s3rver']['rss']:.0f} MiB, SeaweedFS {res['seaweedfs']['rss']:.0f} MiB. In SeaweedFS each of the
broker's small writes (a record batch, the partition's watermark, the producer metadata) goes through its
S3 gateway, filer and volume server; s3rver writes a file.
"""
    print(f"wrote {write_section('s3-endpoint', body)}")


if __name__ == "__main__":
    main()
