"""The feature-store consumer (``shopstream features``): the validated event stream -> online state in Redis.

It reads the raw topic with its own consumer group (``SHOPSTREAM_SERVING__CONSUMER_GROUP``) and validates
each batch with :func:`shopstream.events.validation.validate_batch`, so it sees exactly the events the landing
service lands (invalid messages are the landing service's to dead-letter; here they are only counted). Then,
as silver does for the gold table, it drops events silver sets aside (late by :mod:`shopstream.events.lateness`'s
rule: more than ``SHOPSTREAM_PIPELINE__LATENESS_BOUND_S`` behind the largest earlier event time of their
partition, or stamped more than the allowed clock skew after their arrival) and re-sends (by event key), and
applies the rest with :func:`~shopstream.serving.feature_store.apply_events`. Each partition's clock is
recorded with its offset, so a restart classifies the events it reads again exactly as before. (Events silver
restates later, on request, are not replayed into the online state: they are history by then.)

Time order across partitions. Messages are keyed by session, so one user's sessions can sit on different
partitions, and a consumer catching up on a backlog can read one partition far ahead of another. Gold
orders a user's events by ``(event_time, event_key)``; to give the same features online, an event is only
applied once every partition still delivering has passed its event time (an event-time watermark: the
smallest "latest event time" over partitions not at their end). Events at the watermark itself wait too, so
events of the same second are applied together, in key order. A partition at its end does not hold the
others back, and an event waits at most ``SHOPSTREAM_SERVING__MAX_HOLD_S`` for a stalled partition.

Exactly once: a batch's state, dedupe keys, feature records and the partitions' next offsets are written in
one Redis transaction; on (re)assignment a partition resumes from the offset Redis holds (Kafka's commit is
a copy for lag tooling). Events read again after a crash are dropped by their dedupe keys. An offset past
its partition's log end (the broker's log went backwards) stops the consumer with an error naming it.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_STORED, Consumer, KafkaError, KafkaException, TopicPartition

from shopstream.events.lateness import MAX_CLOCK_SKEW_S, is_late, skewed  # noqa: F401 - MAX_CLOCK_SKEW_S re-exported
from shopstream.events.validation import validate_batch
from shopstream.landing.service import PositionGuard
from shopstream.serving.feature_store import (
    ApplyResult,
    Event,
    Keys,
    Ttls,
    apply_events,
    connect,
    events_from_table,
)
from shopstream.settings import Settings

log = logging.getLogger("shopstream.features")

_NEG_INF = -(2**63)
_POS_INF = 2**63


@dataclass
class ConsumerConfig:
    """Batching, ordering and stopping behaviour of one consumer run."""

    batch_size: int = 5000
    max_interval_s: float = 0.2
    max_hold_s: float = 10.0
    max_pending: int = 200_000        # held-back events beyond this are applied oldest first
    idle_timeout_s: float = 10.0      # --until-idle: stop after this long with nothing new
    assign_timeout_s: float = 60.0    # --until-idle: fail if no partition is assigned by then
    poll_batch: int = 5000
    end_check_s: float = 30.0         # idle this long: check that no position is past its partition's log end

    @classmethod
    def of(cls, settings: Settings, **overrides) -> ConsumerConfig:
        s = settings.serving
        base = {"batch_size": s.batch_size, "max_interval_s": s.max_interval_s, "max_hold_s": s.max_hold_s}
        return cls(**{**base, **{k: v for k, v in overrides.items() if v is not None}})


@dataclass
class ConsumerStats:
    messages: int = 0
    valid: int = 0
    invalid: int = 0
    late: int = 0
    skewed: int = 0
    duplicates: int = 0
    applied: int = 0
    carts_logged: int = 0
    batches: int = 0
    retries: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def add(self, r: ApplyResult) -> None:
        self.applied += r.applied
        self.duplicates += r.duplicates
        self.carts_logged += r.carts_logged
        self.retries += r.retries
        self.batches += 1

    def summary(self) -> str:
        rate = self.messages / self.elapsed if self.elapsed > 0 else 0.0
        return (f"feature store: {self.messages:,} messages ({rate:,.0f} msg/s): {self.applied:,} events applied "
                f"({self.carts_logged:,} cart-adds), {self.duplicates:,} re-sends dropped, {self.late:,} late and "
                f"{self.skewed:,} clock-skewed set aside, {self.invalid:,} invalid skipped; {self.batches} batches")


@dataclass
class _Pending:
    event: Event
    partition: int
    offset: int
    since: float
    clock: int | None = None  # the partition's clock before this event (recorded if reading resumes here)


def watermark(assigned: set[int], at_end: set[int], latest: dict[int, int], drained: bool = False) -> int:
    """Events strictly before this event time (us) can be applied: no partition still reading can precede them.

    ``latest`` is each partition's latest event time read; partitions at their end (``at_end``) do not hold
    the others back; a partition that has delivered nothing yet holds everything back.
    """
    active = assigned - at_end
    if drained or not active:
        return _POS_INF
    return min(latest.get(p, _NEG_INF) for p in active)


class FeatureStoreConsumer:
    """Consume the raw topic into the online feature store; one instance per process."""

    def __init__(self, settings: Settings, config: ConsumerConfig | None = None, topic: str | None = None,
                 group: str | None = None, client=None,
                 on_batch: Callable[[ConsumerStats], None] | None = None) -> None:
        self.settings = settings
        self.config = config or ConsumerConfig.of(settings)
        self.topic = topic or settings.kafka.raw_topic
        self.group = group or settings.serving.consumer_group
        self.redis = client or connect(settings)
        self.keys = Keys(settings.redis.key_prefix)
        self.ttls = Ttls.of(settings)
        self.offsets_key = self.keys.offsets(self.group, self.topic)
        self.clocks_key = self.keys.clocks(self.group, self.topic)
        self.bound_s = settings.pipeline.lateness_bound_s
        self.on_batch = on_batch
        self.consumer = Consumer(settings.kafka.stream_consumer_config(
            self.group, **{"session.timeout.ms": 10000, "queued.max.messages.kbytes": 128 * 1024}))
        self.stats = ConsumerStats()
        self._stopping = threading.Event()
        self._assigned: set[int] = set()
        self._eof: set[int] = set()
        self._raw: list[tuple[bytes | None, str, int, int]] = []
        self._arrival: dict[tuple[int, int], int] = {}
        self._raw_since: float | None = None
        self._pending: list[_Pending] = []
        self._high: dict[int, int] = {}          # partition -> latest event time read (us)
        self._clock: dict[int, int] = {}         # partition -> lateness clock: largest unskewed event time (us)
        self._next: dict[int, int] = {}          # partition -> offset after the last message read
        self._written: dict[int, int] = {}        # offsets last recorded
        self._written_clocks: dict[int, int] = {}  # and the clocks recorded with them
        self._last_flush = time.monotonic()
        self._assigned_at = 0.0
        self._positions = PositionGuard(settings, self.topic, self.group, f"Redis ({self.offsets_key})",
                                        self.config.end_check_s)

    # ----------------------------------------------------------------- lifecycle
    def request_stop(self, *_: object) -> None:
        """Apply what is ready, record offsets and leave (SIGTERM/SIGINT handler)."""
        self._stopping.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def close(self) -> None:
        try:
            self.consumer.close()
        finally:
            self.redis.close()

    # ----------------------------------------------------------------- rebalance
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        stored = {int(p): int(off) for p, off in self.redis.hgetall(self.offsets_key).items()}
        clocks = self.redis.hgetall(self.clocks_key)
        if not self._positions.assigned(consumer, partitions, stored):
            return  # an offset is past its log end: nothing is assigned, run() raises
        for p in partitions:
            p.offset = stored.get(p.partition, OFFSET_STORED)
            if str(p.partition) in clocks:
                self._clock[p.partition] = int(clocks[str(p.partition)])
            else:
                self._clock.pop(p.partition, None)
        self._assigned.update(p.partition for p in partitions)
        self._assigned_at = time.monotonic()
        consumer.assign(partitions)
        log.info("assigned partitions %s (offsets %s)", [p.partition for p in partitions],
                 {p.partition: p.offset for p in partitions})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.flush()
        gone = {p.partition for p in partitions}
        self._pending = [x for x in self._pending if x.partition not in gone]
        self._raw = [m for m in self._raw if m[2] not in gone]
        self._assigned -= gone
        self._eof -= gone
        for p in gone:
            self._high.pop(p, None)
            self._next.pop(p, None)
            self._clock.pop(p, None)

    # ----------------------------------------------------------------- main loop
    def run(self, until_idle: bool = False) -> ConsumerStats:
        """Consume and apply until stopped (or, with ``until_idle``, until every partition is drained)."""
        cfg = self.config
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        last_msg = started = time.monotonic()
        try:
            while not self._stopping.is_set():
                msgs = self.consumer.consume(num_messages=cfg.poll_batch, timeout=0.1)
                now = time.monotonic()
                self._positions.next.update(self._next)
                self._positions.check(now, last_msg, self._assigned)  # raises OffsetPastLogEnd
                for m in msgs:
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            self._eof.add(m.partition())
                            continue
                        if err.fatal():
                            raise KafkaException(err)
                        log.warning("consumer error: %s", err)
                        continue
                    p, off = m.partition(), m.offset()
                    self._raw.append((m.value(), self.topic, p, off))
                    self._arrival[(p, off)] = m.timestamp()[1]
                    self._next[p] = off + 1
                    self._eof.discard(p)
                if msgs:
                    last_msg = now
                    if self._raw_since is None and self._raw:
                        self._raw_since = now
                drained = bool(self._assigned) and self._assigned <= self._eof
                if (len(self._raw) >= cfg.batch_size
                        or ((self._raw or self._pending) and now - self._last_flush >= cfg.max_interval_s)
                        or (until_idle and drained and (self._raw or self._pending))):
                    self.flush(drained=until_idle and drained)
                if until_idle:
                    if drained and not self._raw and not self._pending:
                        break
                    if not self._assigned and now - started > cfg.assign_timeout_s:
                        raise RuntimeError(
                            f"no partition of {self.topic!r} was assigned to group {self.group!r} within "
                            f"{cfg.assign_timeout_s:.0f}s: is the topic there and the broker reachable?")
                    if self._assigned and now - max(last_msg, self._assigned_at) > cfg.idle_timeout_s:
                        self.flush(drained=True)
                        self._positions.check(now, last_msg, self._assigned, force=not drained)
                        break
            self.flush(drained=until_idle)
        finally:
            self.stats.finished = time.monotonic()
        return self.stats

    # ----------------------------------------------------------------- one flush
    def _validate(self) -> None:
        """Buffered raw messages -> pending on-time, valid events (stats for the rest)."""
        if not self._raw:
            return
        now = time.monotonic()
        res = validate_batch(self._raw, max_bytes=self.settings.kafka.max_event_bytes)
        s = self.stats
        s.messages += len(self._raw)
        s.invalid += len(res.rejected)
        s.valid += res.valid.num_rows
        events = events_from_table(res.valid)
        parts = res.valid.column("src_partition").to_pylist()
        offs = res.valid.column("src_offset").to_pylist()
        for e, p, off in zip(events, parts, offs, strict=True):
            if e.t_us > self._high.get(p, _NEG_INF):
                self._high[p] = e.t_us
            arrival = self._arrival.get((p, off), -1)
            if arrival is not None and arrival > 0 and skewed(e.t_us, arrival):
                s.skewed += 1
                continue
            before = self._clock.get(p)
            if before is None or e.t_us > before:
                self._clock[p] = e.t_us
            if is_late(e.t_us, before, self.bound_s):
                s.late += 1
                continue
            self._pending.append(_Pending(e, p, off, now, before))
        self._raw = []
        self._arrival = {}
        self._raw_since = None

    def watermark(self, drained: bool = False) -> int:
        return watermark(self._assigned, self._eof, self._high, drained)

    def flush(self, drained: bool = False) -> None:
        """Validate what was read; apply the events the watermark releases; record offsets."""
        self._validate()
        self._last_flush = now = time.monotonic()
        mark = self.watermark(drained)
        hold = self.config.max_hold_s
        ready = [x for x in self._pending if x.event.t_us < mark or now - x.since >= hold]
        held = [x for x in self._pending if not (x.event.t_us < mark or now - x.since >= hold)]
        if len(held) > self.config.max_pending:
            held.sort(key=lambda x: (x.event.t_us, x.event.event_key))
            over = len(held) - self.config.max_pending
            ready += held[:over]
            held = held[over:]
            log.warning("released %d held-back events early (more than %d waiting for a slow partition)",
                        over, self.config.max_pending)
        self._pending = held
        offsets = dict(self._next)
        clocks = dict(self._clock)
        for x in held:   # a held event's offset is the next to read for its partition, with its clock
            if x.offset < offsets.get(x.partition, _POS_INF):
                offsets[x.partition] = x.offset
                clocks[x.partition] = x.clock
        clocks = {p: c for p, c in clocks.items() if c is not None and p in offsets}
        if not ready and offsets == self._written and clocks == self._written_clocks:
            return
        size = self.config.batch_size
        ready.sort(key=lambda x: (x.event.t_us, x.event.event_key))
        chunks = [ready[i:i + size] for i in range(0, len(ready), size)] or [[]]
        for n, chunk in enumerate(chunks):
            last = n == len(chunks) - 1
            result = apply_events(self.redis, [x.event for x in chunk], self.keys, self.ttls,
                                  offsets=(self.offsets_key, offsets) if last else None,
                                  clocks=(self.clocks_key, clocks) if last else None)
            if chunk:
                self.stats.add(result)
        self._written = offsets
        self._written_clocks = clocks
        if offsets:
            try:
                self.consumer.commit(offsets=[TopicPartition(self.topic, p, o) for p, o in offsets.items()],
                                     asynchronous=False)
            except KafkaException as e:   # Redis holds the truth; Kafka's copy is for lag tooling
                log.warning("Kafka offset commit failed (Redis has the offsets): %s", e)
        if ready and self.on_batch:
            self.on_batch(self.stats)


def run_once(settings: Settings, topic: str | None = None, group: str | None = None, client=None,
             **config) -> ConsumerStats:
    """Catch the feature store up with the topic and return (``--until-idle``)."""
    c = FeatureStoreConsumer(settings, ConsumerConfig.of(settings, **config), topic=topic, group=group,
                             client=client)
    try:
        return c.run(until_idle=True)
    finally:
        c.close()
