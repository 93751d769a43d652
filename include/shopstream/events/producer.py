"""Produce raw event messages to Kafka: idempotent, keyed by session, optionally rate-limited."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from confluent_kafka import KafkaException, Producer

from shopstream.settings import Settings


@dataclass
class ProduceStats:
    """Counts of one produce run."""

    sent: int = 0
    delivered: int = 0
    failed: int = 0
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
        **overrides,
    }
    return Producer(settings.kafka.client_config(**config))


def produce(
    settings: Settings,
    messages: Iterable[tuple[bytes | None, bytes] | tuple[bytes | None, bytes, int | None]],
    topic: str | None = None,
    rate_limit: float | None = None,
    on_progress: Callable[[int], None] | None = None,
    progress_every: int = 10_000,
) -> ProduceStats:
    """Send ``(key, value)`` or ``(key, value, timestamp_ms)`` messages; wait for every delivery.

    A timestamp becomes the message's Kafka timestamp (its arrival time: see
    :meth:`shopstream.events.generator.EventStream.timed`); without one the client's clock is used.
    ``rate_limit`` caps messages per second (None: as fast as the broker takes them). Raises if any
    message was not delivered.
    """
    topic = topic or settings.kafka.raw_topic
    producer = make_producer(settings)
    stats = ProduceStats()

    def on_delivery(err, _msg) -> None:
        if err is None:
            stats.delivered += 1
        else:
            stats.failed += 1
            if stats.first_error is None:
                stats.first_error = str(err)

    t0 = time.monotonic()
    for msg in messages:
        key, value = msg[0], msg[1]
        ts = msg[2] if len(msg) > 2 else None
        while True:
            try:
                if ts:
                    producer.produce(topic, value=value, key=key, timestamp=ts, on_delivery=on_delivery)
                else:
                    producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
                break
            except BufferError:  # local queue full: let deliveries drain
                producer.poll(0.05)
        stats.sent += 1
        if stats.sent % 1000 == 0:
            producer.poll(0)
            if rate_limit:
                ahead = stats.sent / rate_limit - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
        if on_progress and stats.sent % progress_every == 0:
            on_progress(stats.sent)
    remaining = producer.flush(120)
    stats.seconds = time.monotonic() - t0
    if on_progress:
        on_progress(stats.sent)
    if remaining or stats.failed:
        raise KafkaException(
            f"{stats.failed} message(s) failed and {remaining} were still queued after the flush to {topic!r}; "
            f"first error: {stats.first_error}"
        )
    return stats
