"""The landing service: a consumer group on the raw topic that lands validated events in the lake.

Per batch (every ``batch_size`` messages or ``max_interval_s`` seconds): validate each partition's
messages, cut valid rows into per-hour Parquet objects and rejections into dead-letter objects, then
land them with the intent/commit protocol of :mod:`shopstream.landing.manifest`. Rejections are also
produced to the dead-letter topic (keyed ``topic/partition/offset``) with their reason; one too large for
that topic goes by claim check (reason, source, size, lake key and a preview; the payload stays in the
lake's dead-letter object). Kafka offsets are committed only after the objects are durable and the
manifest committed; on assignment a partition resumes from the offset recorded with the manifest.

No message can stop the landing: every value gets a row or a dead letter with a reason. What can stop it
is the lake or the dead-letter path being down: then :class:`LandingStopped` says so, nothing of the
batch is committed, and the next start lands the batch again.

Every valid row also gets ``partition_max_event_time``, the largest event time landed before it in its
partition (:mod:`shopstream.events.lateness`: silver's late rule); the clock is committed with the offset.
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

from shopstream.events.columnar import validate_columns
from shopstream.events.lateness import MAX_CLOCK_SKEW_S, NO_TIME, max_before
from shopstream.events.producer import ReliableSender, make_producer
from shopstream.events.validation import Rejection, validate_batch_rowwise
from shopstream.landing import manifest
from shopstream.landing.writer import LakeObject, deadletter_objects, event_objects
from shopstream.settings import Settings
from shopstream.stack.s3 import ObjectExists, minio_client, put_if_absent, s3_client

log = logging.getLogger("shopstream.landing")

PREVIEW_CHARS = 200  # of a claim-checked payload, in its dead-letter record


class LandingStopped(RuntimeError):
    """The lake or the dead-letter path failed: the batch was not committed and lands again on restart."""


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
    validator: str = "columnar"  # or "rowwise": the previous per-message validator (bench/landing.py compares)


@dataclass
class LandingStats:
    """What a landing run did; ``summary()`` is the text a person reads."""

    messages: int = 0
    valid: int = 0
    rejected: int = 0
    by_reason: Counter = field(default_factory=Counter)
    oversized: int = 0  # dead letters sent to the topic by claim check
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
            + (f" ({self.oversized} too large for the topic: sent by claim check)" if self.oversized else "")
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
        # room for the largest dead-letter record plus its key and headers
        self.producer = ReliableSender(lambda: make_producer(
            settings, **{"message.max.bytes": k.deadletter_max_bytes + 65_536}))
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
        self._clocks: dict[int, int] = {}  # partition -> largest event time landed (epoch us)
        self._stopped = False

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
            try:
                self.producer.flush(10)
            except KafkaException as e:  # the batch that needed it was not committed; say so, do not mask it
                log.warning("dead-letter producer could not flush on close: %s", e)
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
        clocks = manifest.stored_clocks(self.db, self.group, self.topic)
        for p in partitions:
            p.offset = stored.get(p.partition, OFFSET_STORED)
            self._clocks[p.partition] = clocks.get(p.partition, NO_TIME)
        self._assigned.update(ids)
        self._assigned_at = time.monotonic()
        consumer.assign(partitions)
        log.info("assigned partitions %s (offsets %s)", ids, {p.partition: p.offset for p in partitions})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if not self._stopped:  # after LandingStopped the buffer was dropped: nothing to land on the way out
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
        """Land everything buffered: intent, objects, dead letters, manifest + offsets, Kafka commit.

        On :class:`LandingStopped` the buffer is dropped (nothing of it was committed; the next start reads
        it again from the committed offsets) and the service refuses to go on.
        """
        if not self._buffered:
            return
        if self._stopped:
            raise LandingStopped("the landing stopped after an earlier failure: start it again")
        try:
            self._land_buffer()
        except LandingStopped:
            self._stopped = True
            self._buf, self._buffered, self._buf_since = {}, 0, None
            raise

    def _land_buffer(self) -> None:
        objects: list[LakeObject] = []
        rejected: list[tuple[Rejection, LakeObject]] = []
        intents: dict[int, tuple[int, int, list[str]]] = {}
        next_offsets: dict[int, int] = {}
        clocks: dict[int, int] = {}
        n_msgs = n_valid = 0
        for p, buf in self._buf.items():
            if not buf.offsets:
                continue
            first, last = buf.offsets[0], buf.offsets[-1]
            if self.config.validator == "rowwise":
                res = validate_batch_rowwise(zip(buf.values, repeat(self.topic), repeat(p), buf.offsets),
                                             max_bytes=self.settings.kafka.max_event_bytes)
            else:
                res = validate_columns(buf.values, self.topic, p, buf.offsets, self.settings.kafka.max_event_bytes)
            valid = with_arrival_time(res.valid, buf.offsets, buf.timestamps)
            valid, clocks[p] = with_partition_clock(valid, self._clocks.get(p, NO_TIME))
            objs = event_objects(valid, self.topic, p, first, last)
            if res.rejected:
                ts = dict(zip(buf.offsets, buf.timestamps, strict=True))
                [dead] = deadletter_objects(res.rejected, ts, self.topic, p, first, last)
                objs.append(dead)
                rejected += [(r, dead) for r in res.rejected]
            objects += objs
            intents[p] = (first, last, [o.key for o in objs])
            next_offsets[p] = last + 1
            n_msgs += len(buf.offsets)
            n_valid += res.valid.num_rows

        landed = manifest.landed_keys(self.db, [o.key for o in objects])
        if landed:  # before the intent: recovery must never remove an object the manifest holds
            raise RepeatedOffsets(self.topic, [(o, landed[o.key]) for o in objects if o.key in landed])
        manifest.begin(self.db, self.group, self.topic, intents)
        try:
            self._upload(objects)
        except Exception as e:  # noqa: BLE001 - any failure of the lake stops the batch uncommitted
            raise LandingStopped(
                f"the lake ({self.settings.s3.endpoint_url}, bucket {self.bucket}) refused the batch's objects: "
                f"{type(e).__name__}: {e}. Nothing was committed: the batch lands again at the next start."
            ) from e
        self._dead_letter(rejected)
        manifest.commit(self.db, self.group, self.topic, next_offsets, objects,
                        {p: c for p, c in clocks.items() if c != NO_TIME})
        self._clocks.update(clocks)
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
        s.by_reason.update(r.reason_code for r, _ in rejected)
        s.oversized += sum(o.oversized for o in objects)
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

    def _dead_letter(self, rejected: list[tuple[Rejection, LakeObject]]) -> None:
        """Produce every rejection to the dead-letter topic and wait for the broker's acks.

        A record over ``SHOPSTREAM_KAFKA__DEADLETTER_MAX_BYTES`` goes by claim check (counted in its lake
        object's ``oversized``). If the topic cannot take the records, :class:`LandingStopped` says why.
        """
        if not rejected:
            return
        k = self.settings.kafka
        for r, obj in rejected:
            key = f"{r.topic}/{r.partition}/{r.offset}".encode()
            value, oversized = deadletter_record(r, obj.key, k.deadletter_max_bytes)
            headers = [("reason", r.reason_code.encode())] + ([("claim_check", b"true")] if oversized else [])
            obj.oversized += oversized
            try:
                self.producer.produce(k.invalid_topic, key, value, headers=headers)
            except (KafkaException, BufferError) as e:
                self._dead_letter_down(e)
        try:
            self.producer.flush(60)  # raises if not delivered: the batch is then not committed
        except KafkaException as e:
            self._dead_letter_down(e)

    def _dead_letter_down(self, e: Exception) -> None:
        raise LandingStopped(
            f"the dead-letter topic {self.settings.kafka.invalid_topic!r} at {self.settings.kafka.bootstrap_servers} "
            f"did not take the batch's dead letters: {e}. Nothing was committed: the batch lands again at the next "
            "start. If the broker refused a record as too large, set SHOPSTREAM_KAFKA__DEADLETTER_MAX_BYTES below "
            "the topic's max.message.bytes (larger dead letters then go by claim check)."
        ) from e

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


def with_partition_clock(valid: pa.Table, start: int) -> tuple[pa.Table, int]:
    """Add ``partition_max_event_time`` (largest event time landed before each row in its partition).

    ``valid`` holds one partition's rows in offset order, with ``src_timestamp``; ``start`` is the
    partition's clock before them. Clock-skewed rows (silver rejects them) do not move the clock. Returns
    the table and the clock after it.
    """
    t_us = valid.column("event_time").cast(pa.int64()).to_numpy()
    arrival_us = valid.column("src_timestamp").cast(pa.int64()).to_numpy() * 1000
    # a message without a timestamp (-1, old message format) cannot be clock-skewed
    counts = (t_us <= arrival_us + MAX_CLOCK_SKEW_S * 1_000_000) | (arrival_us <= 0)
    before, end = max_before(t_us, counts, start)
    arr = pa.array(before, pa.int64(), mask=before == NO_TIME).cast(pa.timestamp("us", tz="UTC"))
    return valid.append_column(pa.field("partition_max_event_time", pa.timestamp("us", tz="UTC")), arr), end


def deadletter_record(r: Rejection, lake_key: str, max_bytes: int) -> tuple[bytes, bool]:
    """The dead-letter topic's JSON record of a rejection, and whether it went by claim check.

    The payload travels as text (``payload_encoding`` ``utf-8``), as base64 when it is not UTF-8, or is
    null for a tombstone. A record over ``max_bytes`` keeps reason, source, size, lake key and a preview
    of ``PREVIEW_CHARS`` characters, and says ``claim_check: true``: the payload is only in the lake.
    """
    import base64

    payload = r.payload
    record: dict = {
        "reason": r.reason_code, "detail": r.detail, "src_topic": r.topic, "src_partition": r.partition,
        "src_offset": r.offset, "size": None if payload is None else len(payload), "lake_key": lake_key,
        "claim_check": False,
    }
    if payload is None:
        return orjson.dumps({**record, "payload": None, "payload_encoding": None}), False
    try:
        text, encoding = payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(payload).decode(), "base64"
    value = orjson.dumps({**record, "payload": text, "payload_encoding": encoding})
    if len(value) <= max_bytes:
        return value, False
    preview = payload[:PREVIEW_CHARS * 4].decode("utf-8", errors="replace")[:PREVIEW_CHARS]
    return orjson.dumps({**record, "claim_check": True, "payload": None, "payload_encoding": None,
                         "preview": preview}), True


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
