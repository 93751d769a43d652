"""Produce raw event messages to Kafka: idempotent, keyed by session, optionally rate-limited."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from confluent_kafka import TIMESTAMP_CREATE_TIME, KafkaException, Producer

from shopstream.settings import Settings


@dataclass
class ProduceStats:
    """Counts of one produce run."""

    sent: int = 0
    delivered: int = 0
    failed: int = 0
    restarts: int = 0  # producers replaced after a fatal error (messages re-sent, none lost or doubled)
    seconds: float = 0.0
    first_error: str | None = None

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


def make_producer(settings: Settings, **overrides) -> Producer:
    """An idempotent producer tuned for throughput (batches of up to 1 MiB, 20 ms linger)."""
    config = {
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 20,
        "batch.size": 1_048_576,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "partitioner": "murmur2_random",  # same key -> same partition as the Java client
        # one request in flight per broker: the embedded broker (Tansu 0.6) loses track of idempotent
        # sequence numbers with several (OUT_OF_ORDER_SEQUENCE_NUMBER under load); costs ~10% here
        "max.in.flight.requests.per.connection": 1,
        "delivery.report.only.error": True,  # only failures call back (ReliableSender re-sends those)
        **overrides,
    }
    return Producer(settings.kafka.client_config(**config))


Message = tuple[bytes | None, bytes] | tuple[bytes | None, bytes, int | None] | tuple


class ReliableSender:
    """Idempotent sends that survive a fatal producer error without losing or duplicating messages.

    A fatal idempotence error (the embedded broker sometimes loses track of sequence numbers under load)
    makes librdkafka fail the rejected batch and purge everything queued after it, none of which the
    broker stored; their delivery reports carry key, value, timestamp and headers. The sender then
    starts a new producer (new producer id) and sends exactly those messages again. Any other delivery
    failure raises.
    """

    def __init__(self, factory: Callable[[], Producer], max_restarts: int = 10) -> None:
        self.factory = factory
        self.producer = factory()
        self.max_restarts = max_restarts
        self.restarts = 0
        self.failed: list[tuple] = []

    def _on_delivery(self, err, msg) -> None:
        if err is not None:
            self.failed.append((err, msg.topic(), msg.key(), msg.value(), msg.timestamp(), msg.headers()))

    def produce(self, topic: str, key: bytes | None, value: bytes, timestamp: int | None = None,
                headers: list | None = None) -> None:
        """Queue one message (blocks briefly while the local queue is full)."""
        kwargs: dict = {"timestamp": timestamp} if timestamp else {}
        if headers:
            kwargs["headers"] = headers
        while True:
            try:
                self.producer.produce(topic, value=value, key=key, on_delivery=self._on_delivery, **kwargs)
                return
            except BufferError:  # local queue full: let deliveries drain
                self.producer.poll(0.05)
            except KafkaException as e:
                err = e.args[0]
                if not (err.fatal() or err.code() in _RECOVERABLE):
                    raise
                self._recover()

    def poll(self) -> None:
        self.producer.poll(0)

    def flush(self, timeout: float = 120) -> None:
        """Wait until every message is acknowledged (recovering from fatal errors); raise otherwise."""
        while True:
            remaining = self.producer.flush(timeout)
            if remaining:
                raise KafkaException(f"{remaining} message(s) still queued after {timeout:.0f} s")
            if not self.failed:
                return
            self._recover()

    def _recover(self) -> None:
        self.producer.flush(30)  # collect the delivery reports of everything purged
        failed, self.failed = self.failed, []
        errors = [f[0] for f in failed]
        if errors and not all(e.fatal() or e.code() in _RECOVERABLE for e in errors):
            bad = next(e for e in errors if not (e.fatal() or e.code() in _RECOVERABLE))
            raise KafkaException(f"{len(failed)} message(s) failed; first error: {bad}")
        if self.restarts >= self.max_restarts:
            raise KafkaException(f"producer failed {self.restarts} times; last error: {errors[:1]}")
        self.restarts += 1
        self.producer = self.factory()
        for _err, topic, key, value, (ts_type, ts), headers in failed:
            self.produce(topic, key, value, ts if ts_type == TIMESTAMP_CREATE_TIME else None, headers)


def _recoverable_codes() -> set:
    from confluent_kafka import KafkaError

    return {KafkaError._FATAL, KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, KafkaError._PURGE_QUEUE,
            KafkaError._PURGE_INFLIGHT}


_RECOVERABLE = _recoverable_codes()


def produce(
    settings: Settings,
    messages: Iterable[Message],
    topic: str | None = None,
    rate_limit: float | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ProduceStats:
    """Send ``(key, value)`` or ``(key, value, timestamp_ms)`` messages; wait for every delivery.

    A timestamp becomes the message's Kafka timestamp (its arrival time: see
    :meth:`shopstream.events.generator.EventStream.timed`); without one the client's clock is used.
    ``rate_limit`` caps messages per second (None: as fast as the broker takes them). Raises if any
    message could not be delivered.
    """
    topic = topic or settings.kafka.raw_topic
    sender = ReliableSender(lambda: make_producer(settings))
    stats = ProduceStats()
    t0 = time.monotonic()
    for msg in messages:
        sender.produce(topic, msg[0], msg[1], msg[2] if len(msg) > 2 else None)
        stats.sent += 1
        if stats.sent % 1000 == 0:
            sender.poll()
            if rate_limit:
                ahead = stats.sent / rate_limit - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
            if on_progress and stats.sent % 10_000 == 0:
                on_progress(stats.sent)
    sender.flush()
    stats.delivered = stats.sent
    stats.restarts = sender.restarts
    stats.seconds = time.monotonic() - t0
    if on_progress:
        on_progress(stats.sent)
    return stats
