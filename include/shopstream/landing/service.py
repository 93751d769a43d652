"""The landing service: a consumer group on the raw topic that lands validated events in the lake.

Per batch (every ``batch_size`` messages or ``max_interval_s`` seconds): validate each partition's
messages, cut valid rows into per-hour Parquet objects and rejections into dead-letter objects, then
land them with the intent/commit protocol of :mod:`shopstream.landing.manifest`. Rejections are also
produced to the dead-letter topic (keyed ``topic/partition/offset``) with their reason. Kafka offsets
are committed only after the objects are durable and the manifest committed; on assignment a
partition resumes from the offset recorded with the manifest.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import groupby, repeat

import numpy as np
import orjson
import psycopg
import pyarrow as pa
from confluent_kafka import OFFSET_STORED, Consumer, KafkaError, KafkaException, Message, TopicPartition

from shopstream.events.producer import ReliableSender, make_producer
from shopstream.events.validation import Rejection, validate_batch
from shopstream.landing import manifest
from shopstream.landing.writer import LakeObject, deadletter_objects, event_objects
from shopstream.settings import Settings
from shopstream.stack.s3 import ObjectExists, minio_client, put_if_absent, s3_client

log = logging.getLogger("shopstream.landing")


@dataclass
class LandingConfig:
    """Batching and stopping behaviour of one landing run."""

    batch_size: int = 100_000
    max_interval_s: float = 10.0
    idle_timeout_s: float = 10.0  # --until-idle: stop after this long with nothing new
    assign_timeout_s: float = 60.0  # --until-idle: fail if no partition is assigned by then
    poll_batch: int = 10_000
    upload_threads: int = 8
    notify: bool = True  # publish a landed notification per batch (the data DAG's asset watcher listens)
    end_check_s: float = 30.0  # idle this long: check that no position is past its partition's log end


@dataclass
class LandingStats:
    """What a landing run did; ``summary()`` is the text a person reads."""

    messages: int = 0
    valid: int = 0
    rejected: int = 0
    by_reason: Counter = field(default_factory=Counter)
    objects: int = 0
    deadletter_objects: int = 0
    batches: int = 0
    bytes: int = 0
    recovered_intents: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def summary(self, settings: Settings) -> str:
        rate = self.messages / self.elapsed if self.elapsed > 0 else 0.0
        reasons = ", ".join(f"{k}={v}" for k, v in self.by_reason.most_common()) or "none"
        return (
            f"landed {self.messages:,} messages in {self.batches} batches ({rate:,.0f} msg/s): "
            f"{self.valid:,} valid -> {self.objects} objects under s3://{settings.s3.lake_bucket}/events/; "
            f"{self.rejected:,} rejected ({reasons}) -> {self.deadletter_objects} objects under "
            f"s3://{settings.s3.lake_bucket}/deadletter/ and topic {settings.kafka.invalid_topic}"
            + (f"; recovered {self.recovered_intents} interrupted batch(es)" if self.recovered_intents else "")
        )


@dataclass
class _PartitionBuffer:
    """One partition's consumed messages not yet landed, as columns (offsets ascending)."""

    values: list[bytes | None] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)  # Kafka timestamps, ms


class LandingService:
    """Consume ``settings.kafka.raw_topic`` and land it; one instance per process."""

    def __init__(
        self,
        settings: Settings,
        config: LandingConfig | None = None,
        on_batch: Callable[[LandingStats], None] | None = None,
    ) -> None:
        self.settings = settings
        self.config = config or LandingConfig()
        self.on_batch = on_batch
        k = settings.kafka
        self.topic = k.raw_topic
        self.group = k.landing_group
        self.lake = minio_client(settings)
        self.s3 = s3_client(settings)  # create-only writes (If-None-Match) of new lake objects
        self.bucket = settings.s3.lake_bucket
        self.db = psycopg.connect(settings.postgres.dsn(), autocommit=True)
        manifest.ensure_schema(self.db)
        self.consumer = Consumer(k.stream_consumer_config(self.group, **{"queued.max.messages.kbytes": 256 * 1024}))
        self.producer = ReliableSender(lambda: make_producer(settings))
        import pandas  # noqa: F401 - pyarrow imports it on first use (~1.5 s): pay that now, not in a batch

        self.stats = LandingStats()
        self._stopping = threading.Event()
        self._assigned: set[int] = set()
        self._buf: dict[int, _PartitionBuffer] = {}
        self._buffered = 0
        self._buf_since: float | None = None
        self._assigned_at = 0.0
        self._positions = PositionGuard(settings, self.topic, self.group, "the manifest (ops.landing_offsets)",
                                        self.config.end_check_s)

    # ----------------------------------------------------------------- lifecycle
    def request_stop(self, *_: object) -> None:
        """Finish the current batch, commit and leave (SIGTERM/SIGINT handler)."""
        self._stopping.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def close(self) -> None:
        try:
            self.consumer.close()
        finally:
            self.producer.flush(10)
            self.db.close()

    # ----------------------------------------------------------------- rebalance
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        ids = [p.partition for p in partitions]
        for partition, keys in manifest.pending_intents(self.db, self.group, self.topic, ids):
            # a batch that crashed before its manifest commit: its objects are orphans (never an object the
            # manifest holds: such a key in an intent can only come from a repeated offset range)
            landed = manifest.landed_keys(self.db, keys)
            for key in keys:
                if key not in landed:
                    self.lake.remove_object(self.bucket, key)
            manifest.clear_intent(self.db, self.group, self.topic, partition)
            self.stats.recovered_intents += 1
            log.warning("partition %s: removed %d objects of an interrupted batch%s", partition,
                        len(keys) - len(landed), f" (kept {len(landed)} the manifest holds)" if landed else "")
        stored = manifest.stored_offsets(self.db, self.group, self.topic)
        if not self._positions.assigned(consumer, partitions, stored):
            return  # an offset is past its log end: nothing is assigned, run() raises
        for p in partitions:
            p.offset = stored.get(p.partition, OFFSET_STORED)
        self._assigned.update(ids)
        self._assigned_at = time.monotonic()
        consumer.assign(partitions)
        log.info("assigned partitions %s (offsets %s)", ids, {p.partition: p.offset for p in partitions})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.flush()
        self._assigned.difference_update(p.partition for p in partitions)

    # ----------------------------------------------------------------- main loop
    def run(self, until_idle: bool = False) -> LandingStats:
        """Consume and land until stopped (or, with ``until_idle``, until every partition is drained)."""
        cfg = self.config
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        eof: set[int] = set()
        last_msg = time.monotonic()
        started = time.monotonic()
        try:
            while not self._stopping.is_set():
                msgs = self.consumer.consume(num_messages=cfg.poll_batch, timeout=0.5)
                now = time.monotonic()
                self._positions.check(now, last_msg, self._assigned)  # raises OffsetPastLogEnd
                n = self._buffer(msgs, eof) if msgs else 0
                if n:
                    self._buffered += n
                    if self._buf_since is None:
                        self._buf_since = now
                    last_msg = now
                drained = bool(self._assigned) and self._assigned <= eof
                if self._buffered and (
                    self._buffered >= cfg.batch_size
                    or now - (self._buf_since or now) >= cfg.max_interval_s
                    or (until_idle and drained)
                ):
                    self.flush()
                if until_idle:
                    if drained and not self._buffered:
                        break
                    if not self._assigned and now - started > cfg.assign_timeout_s:
                        raise RuntimeError(
                            f"no partition of {self.topic!r} was assigned to group {self.group!r} within "
                            f"{cfg.assign_timeout_s:.0f}s: is the topic there and the broker reachable?"
                        )
                    if self._assigned and now - max(last_msg, self._assigned_at) > cfg.idle_timeout_s:
                        self.flush()
                        self._positions.check(now, last_msg, self._assigned, force=not drained)
                        break
            self.flush()
        finally:
            self.stats.finished = time.monotonic()
        return self.stats

    def _buffer(self, msgs: list[Message], eof: set[int]) -> int:
        """Add consumed messages to their partition's buffer, note partition ends; return how many.

        Columns are pulled out with one comprehension each per run of a partition (``consume`` returns
        runs): a per-message loop of method calls and tuples cost more than validating the message.
        """
        errors = [m for m in msgs if m.error() is not None]
        if errors:
            msgs = [m for m in msgs if m.error() is None]
        for p, run in groupby(msgs, key=Message.partition):
            run = list(run)
            buf = self._buf.get(p)
            if buf is None:
                buf = self._buf[p] = _PartitionBuffer()
            buf.values += [m.value() for m in run]
            buf.offsets += [m.offset() for m in run]
            buf.timestamps += [m.timestamp()[1] for m in run]
            self._positions.next[p] = buf.offsets[-1] + 1
            eof.discard(p)
        for m in errors:
            err = m.error()
            if err.code() == KafkaError._PARTITION_EOF:
                buf = self._buf.get(m.partition())
                if buf is None or not buf.offsets or buf.offsets[-1] < m.offset():  # no message past the end
                    eof.add(m.partition())
            elif err.fatal():
                raise KafkaException(err)
            else:
                log.warning("consumer error: %s", err)
        return len(msgs)

    # ----------------------------------------------------------------- one batch
    def flush(self) -> None:
        """Land everything buffered: intent, objects, dead letters, manifest + offsets, Kafka commit."""
        if not self._buffered:
            return
        objects: list[LakeObject] = []
        rejected: list[Rejection] = []
        intents: dict[int, tuple[int, int, list[str]]] = {}
        next_offsets: dict[int, int] = {}
        n_msgs = n_valid = 0
        for p, buf in self._buf.items():
            if not buf.offsets:
                continue
            first, last = buf.offsets[0], buf.offsets[-1]
            res = validate_batch(zip(buf.values, repeat(self.topic), repeat(p), buf.offsets))
            valid = with_arrival_time(res.valid, buf.offsets, buf.timestamps)
            objs = event_objects(valid, self.topic, p, first, last)
            if res.rejected:
                ts = dict(zip(buf.offsets, buf.timestamps, strict=True))
                objs += deadletter_objects(res.rejected, ts, self.topic, p, first, last)
            objects += objs
            rejected += res.rejected
            intents[p] = (first, last, [o.key for o in objs])
            next_offsets[p] = last + 1
            n_msgs += len(buf.offsets)
            n_valid += res.valid.num_rows

        landed = manifest.landed_keys(self.db, [o.key for o in objects])
        if landed:  # before the intent: recovery must never remove an object the manifest holds
            raise RepeatedOffsets(self.topic, [(o, landed[o.key]) for o in objects if o.key in landed])
        manifest.begin(self.db, self.group, self.topic, intents)
        self._upload(objects)
        self._dead_letter(rejected)
        manifest.commit(self.db, self.group, self.topic, next_offsets, objects)
        try:
            self.consumer.commit(
                offsets=[TopicPartition(self.topic, p, off) for p, off in next_offsets.items()], asynchronous=False
            )
        except KafkaException as e:  # PostgreSQL holds the truth; Kafka's copy is for lag tooling
            log.warning("Kafka offset commit failed (the manifest has the offsets): %s", e)
        self._notify(objects, n_valid)

        s = self.stats
        s.messages += n_msgs
        s.valid += n_valid
        s.rejected += len(rejected)
        s.by_reason.update(r.reason_code for r in rejected)
        s.objects += sum(1 for o in objects if o.kind == "events")
        s.deadletter_objects += sum(1 for o in objects if o.kind == "deadletter")
        s.bytes += sum(len(o.data) for o in objects)
        s.batches += 1
        self._buf = {}
        self._buffered = 0
        self._buf_since = None
        if self.on_batch:
            self.on_batch(s)

    def _upload(self, objects: list[LakeObject]) -> None:
        """Write the batch's objects create-only: an object already in the lake is never replaced."""

        def put(o: LakeObject) -> None:
            try:
                put_if_absent(self.s3, self.bucket, o.key, o.data, "application/vnd.apache.parquet")
            except ObjectExists as e:
                raise ObjectExists(
                    f"{e}. Partition {o.partition} offsets {o.first_offset}-{o.last_offset} of {self.topic!r} "
                    f"name an object the lake already has but the manifest does not: the batch is not landed "
                    f"(see docs/operations.md, section \"The landing stops\")."
                ) from None

        with ThreadPoolExecutor(self.config.upload_threads) as pool:
            list(pool.map(put, objects))

    def _dead_letter(self, rejected: list[Rejection]) -> None:
        """Produce every rejection to the dead-letter topic and wait for the broker's acks."""
        if not rejected:
            return
        topic = self.settings.kafka.invalid_topic
        for r in rejected:
            value = orjson.dumps({
                "reason": r.reason_code,
                "detail": r.detail,
                "src_topic": r.topic,
                "src_partition": r.partition,
                "src_offset": r.offset,
                "payload": r.payload.decode("utf-8", errors="replace") if r.payload is not None else None,
            })
            self.producer.produce(topic, f"{r.topic}/{r.partition}/{r.offset}".encode(), value,
                                  headers=[("reason", r.reason_code.encode())])
        self.producer.flush(60)  # raises if not delivered: the batch is then not committed

    def _notify(self, objects: list[LakeObject], n_valid: int) -> None:
        """Tell listeners (Airflow's asset watcher) that new partitions landed; best effort."""
        hours = sorted({o.hour.isoformat() for o in objects if o.kind == "events"})
        if not hours or not self.config.notify:
            return
        try:
            self.producer.produce(
                self.settings.kafka.landed_topic, self.group.encode(),
                orjson.dumps({"events": n_valid, "objects": len(objects), "hours": hours}),
            )
            self.producer.poll()
        except KafkaException as e:
            log.warning("could not publish the landed notification: %s", e)


def with_arrival_time(valid: pa.Table, offsets: list[int], timestamps_ms: list[int]) -> pa.Table:
    """Add ``src_timestamp``, the Kafka timestamp (arrival time) of each valid row's message.

    ``offsets`` (ascending) and ``timestamps_ms`` are those of every message of the batch.
    """
    idx = np.searchsorted(np.asarray(offsets, dtype=np.int64), valid.column("src_offset").to_numpy())
    ts = np.asarray(timestamps_ms, dtype=np.int64)[idx]
    return valid.append_column(pa.field("src_timestamp", pa.timestamp("ms", tz="UTC")), pa.array(ts).cast(
        pa.timestamp("ms", tz="UTC")))


def end_offsets(settings: Settings, topic: str, timeout: float = 10.0) -> dict[int, int]:
    """The true end offset (high watermark) of every partition of ``topic``.

    Read from fetch responses, not ListOffsets: the embedded broker (Tansu 0.6) answers ListOffsets
    "latest" with a stale offset (the base of an earlier batch). Reading from that offset to the
    partition's end costs at most one producer batch per partition and is correct on Kafka too.
    """
    c = Consumer(settings.kafka.client_config(**{
        "group.id": "shopstream-offsets", "enable.auto.commit": False, "enable.partition.eof": True,
    }))
    try:
        md = c.list_topics(topic, timeout=timeout).topics.get(topic)
        if md is None or md.error is not None:
            return {}
        parts = sorted(md.partitions)
        starts = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1] for p in parts}
        c.assign([TopicPartition(topic, p, max(off, 0)) for p, off in starts.items()])
        ends: dict[int, int] = {}
        deadline = time.monotonic() + timeout
        while len(ends) < len(parts) and time.monotonic() < deadline:
            for m in c.consume(num_messages=10_000, timeout=0.5):
                err = m.error()
                if err is not None and err.code() == KafkaError._PARTITION_EOF:
                    ends[m.partition()] = m.offset()
        missing = set(parts) - set(ends)
        if missing:
            raise TimeoutError(f"could not read the end of {topic} partitions {sorted(missing)} in {timeout}s")
        return ends
    finally:
        c.close()


def committed_offsets(settings: Settings, topic: str, group: str, partitions: list[int],
                      timeout: float = 10.0) -> dict[int, int]:
    """The group's offsets committed in Kafka for these partitions (those with a commit)."""
    c = Consumer(settings.kafka.client_config(**{"group.id": group, "enable.auto.commit": False}))
    try:
        got = c.committed([TopicPartition(topic, p) for p in partitions], timeout=timeout)
        return {tp.partition: tp.offset for tp in got if tp.offset >= 0}
    finally:
        c.close()


@dataclass
class PartitionLag:
    """One partition as a consumer group sees it: log end, the offset the group resumes from, lag."""

    partition: int
    end: int
    committed: int | None  # None: the group has no offset for it yet (it starts at the beginning)

    @property
    def past_end(self) -> bool:
        """The group's offset is past the log end: the log went backwards, the consumer stops."""
        return self.committed is not None and self.committed > self.end

    @property
    def lag(self) -> int:
        return self.end - (self.committed or 0)


def group_lag(settings: Settings, topic: str, stored: dict[int, int], group: str | None = None,
              timeout: float = 10.0) -> list[PartitionLag]:
    """Every partition of ``topic`` with its true end and the group's offset (``stored``, else its Kafka commit)."""
    ends = end_offsets(settings, topic, timeout)
    offsets = {p: off for p, off in stored.items() if p in ends}
    missing = [p for p in ends if p not in offsets]
    if group and missing:
        offsets.update(committed_offsets(settings, topic, group, missing, timeout))
    return [PartitionLag(p, end, offsets.get(p)) for p, end in sorted(ends.items())]


def lag(settings: Settings, timeout: float = 10.0) -> list[PartitionLag]:
    """The landing group on the raw topic, per partition; its offsets are the manifest's (else Kafka's commit)."""
    k = settings.kafka
    with psycopg.connect(settings.postgres.dsn(), autocommit=True) as conn:
        manifest.ensure_schema(conn)
        stored = manifest.stored_offsets(conn, k.landing_group, k.raw_topic)
    return group_lag(settings, k.raw_topic, stored, k.landing_group, timeout)


class OffsetPastLogEnd(RuntimeError):
    """A consumer group's offset is past its partition's log end: the broker's log went backwards."""

    def __init__(self, topic: str, group: str, bad: list[PartitionLag], source: str) -> None:
        self.topic, self.group, self.partitions = topic, group, bad
        parts = "; ".join(f"partition {b.partition}: committed offset {b.committed:,}, log end {b.end:,}" for b in bad)
        super().__init__(
            f"consumer group {group!r} on topic {topic!r}: {parts} (offsets from {source}). The committed offset "
            f"is past the partition's log end, so the broker's log went backwards (its storage was reset or lost, "
            f"or its S3 endpoint ignored conditional writes): reading on would wait for offsets not written yet "
            f"and miss the messages now below them. Stopping; see docs/operations.md, section \"A consumer stops: "
            f"committed offset past the log end\"."
        )


class RepeatedOffsets(RuntimeError):
    """A batch's offset range was landed before: the broker handed the same offsets out again."""

    def __init__(self, topic: str, hits: list[tuple[LakeObject, object]]) -> None:
        o, at = hits[0]
        super().__init__(
            f"partition {o.partition} offsets {o.first_offset:,}-{o.last_offset:,} of {topic!r} were landed before: "
            f"{o.key} is in the manifest since {at} ({len(hits)} object(s) of this batch are). The broker handed "
            f"these offsets out again, so its log went backwards. Nothing was overwritten and the batch is not "
            f"landed; see docs/operations.md, section \"The landing stops\"."
        )


class PositionGuard:
    """Stops a stream consumer that would idle on a log that went backwards.

    On assignment the offsets a group resumes from (``stored``, else its Kafka commit) are compared with the
    partitions' true ends; while consuming, a consumer idle for ``interval_s`` compares its next offsets
    (``next``, kept by the consumer) again. A position past the end raises :class:`OffsetPastLogEnd`.
    """

    def __init__(self, settings: Settings, topic: str, group: str, source: str, interval_s: float = 30.0) -> None:
        self.settings, self.topic, self.group, self.source = settings, topic, group, source
        self.interval_s = interval_s
        self.next: dict[int, int] = {}
        self.error: OffsetPastLogEnd | None = None
        self._last_check = time.monotonic()

    def assigned(self, consumer: Consumer, partitions: list[TopicPartition], stored: dict[int, int]) -> bool:
        """Check the offsets newly assigned partitions resume from; False (and ``error`` set) if one is past the end."""
        ids = [p.partition for p in partitions]
        try:
            rows = group_lag(self.settings, self.topic, {p: stored[p] for p in ids if p in stored}, self.group)
        except Exception as e:  # noqa: BLE001 - checked again once idle
            log.warning("could not read the log ends of %s to check the resume offsets: %s", self.topic, e)
            return True
        bad = [r for r in rows if r.partition in ids and r.past_end]
        if bad:
            self.error = OffsetPastLogEnd(self.topic, self.group, bad, self.source)
            log.error("%s", self.error)
            return False
        self.next.update({r.partition: r.committed for r in rows if r.partition in ids and r.committed is not None})
        return True

    def check(self, now: float, last_msg: float, assigned: set[int], force: bool = False) -> None:
        """Raise the assignment's error, or (idle for ``interval_s``, or ``force``) one found now."""
        if self.error is not None:
            raise self.error
        if not assigned or (not force and now - max(last_msg, self._last_check) < self.interval_s):
            return
        self._last_check = now
        positions = {p: off for p, off in self.next.items() if p in assigned}
        try:
            ends = end_offsets(self.settings, self.topic)
        except Exception as e:  # noqa: BLE001 - a busy broker: try again at the next idle interval
            log.warning("could not read the log ends of %s: %s", self.topic, e)
            return
        bad = [PartitionLag(p, ends[p], off) for p, off in sorted(positions.items()) if p in ends and off > ends[p]]
        if bad:
            raise OffsetPastLogEnd(self.topic, self.group, bad, "its position")
