"""Produce raw event messages to Kafka: idempotent, keyed by session, optionally rate-limited."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

from confluent_kafka import KafkaError, KafkaException, Producer

from shopstream.settings import Settings

log = logging.getLogger("shopstream.producer")


@dataclass
class ProduceStats:
    """Counts of one produce run."""

    sent: int = 0
    delivered: int = 0
    failed: int = 0
    restarts: int = 0  # producers replaced after a fatal error (unacknowledged messages re-sent)
    resent: int = 0  # messages sent again by those restarts (some may be stored twice: at-least-once)
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
        "delivery.report.only.error": True,  # failures only: ReliableSender re-sends those
        **overrides,
    }
    return Producer(settings.kafka.client_config(**config))


Message = tuple[bytes | None, bytes] | tuple[bytes | None, bytes, int | None] | tuple
#: a message kept until acknowledged: (topic, key, value, timestamp ms or None, headers or None)
_Pending = tuple[str, bytes | None, bytes, int | None, list | None]

#: delivery errors after which a new producer (new producer id) re-sends what was not proven stored; the
#: embedded broker (Tansu 0.6) answers concurrent idempotent producers with the last three
_RECOVERABLE = {KafkaError._FATAL, KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT,
                KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, KafkaError.PRODUCER_FENCED,
                KafkaError.INVALID_PRODUCER_EPOCH}


class ReliableSender:
    """Idempotent sends that survive a fatal producer error: nothing is lost, re-sends may duplicate.

    Every message is kept in a pending buffer under a sequence number until a flush proves it stored.
    Delivery reports come back for failures only (``delivery.report.only.error``: a report per stored
    message would cost about as much as the send), through a closure over the sequence number, so
    nothing ever reads a confluent-kafka ``Message`` (after a fatal error its accessors can fail with
    ``SystemError``). When a flush returns with no failure reported, everything pending is stored and the
    buffer is emptied; a flush every ``checkpoint`` messages bounds its size.

    A fatal idempotence error (the embedded broker, Tansu 0.6, mixes up the sequence numbers or ids of
    idempotent producers that run at the same time) or a purge makes the sender drain the dead producer (purging what it still holds, so every message
    gets a report), start a new producer (new producer id) and send the failed messages again from the
    buffer, in their original order. A message that was in flight when the producer died may have been
    stored anyway, so it can be stored twice, at two offsets: across such a restart the producer is
    at-least-once (silver deduplicates by ``event_key``). Any other delivery failure raises.
    """

    def __init__(self, factory: Callable[[], Producer], max_restarts: int = 20, checkpoint: int = 100_000) -> None:
        self.factory = factory
        self.producer = factory()
        self.max_restarts = max_restarts
        self.checkpoint = checkpoint
        self.restarts = 0
        self.resent = 0  # messages sent again after restarts
        self._pending: dict[int, _Pending] = {}  # seq -> message, since the last clean flush
        self._failed: dict[int, KafkaError] = {}  # seq -> error reported by the current producer
        self._seq = 0
        self._report = self._on_delivery
        self._lost_report = False  # a report raised instead of reaching us: the drain cannot be trusted

    @property
    def pending(self) -> int:
        """Messages not yet proven stored by a flush."""
        return len(self._pending)

    def _on_delivery(self, seq: int, err: KafkaError | None, _msg: object) -> None:
        # never touch _msg: after a fatal error its accessors raise SystemError
        if err is not None and seq in self._pending:
            self._failed[seq] = err

    def produce(self, topic: str, key: bytes | None, value: bytes, timestamp: int | None = None,
                headers: list | None = None) -> None:
        """Queue one message (blocks briefly while the local queue is full)."""
        seq = self._seq
        self._seq += 1
        entry = self._pending[seq] = (topic, key, value, timestamp, headers)
        if not self._send(seq, entry):
            self._recover()
        elif len(self._pending) >= self.checkpoint:
            self.flush()

    def _send(self, seq: int, entry: _Pending) -> bool:
        """Hand one message to the current producer; if that producer is dead, mark it failed, False."""
        topic, key, value, timestamp, headers = entry
        kwargs: dict = {"timestamp": timestamp} if timestamp else {}
        if headers:
            kwargs["headers"] = headers
        while True:
            try:
                self.producer.produce(topic, value, key, on_delivery=partial(self._report, seq), **kwargs)
                return True
            except BufferError:  # local queue full: let deliveries drain
                self._served(self.producer.poll, 0.05)
                if self._failed:
                    self._failed[seq] = KafkaError(KafkaError._FATAL, "not sent: the producer failed")
                    return False
            except KafkaException as e:
                err = e.args[0]
                if not (err.fatal() or err.code() in _RECOVERABLE):
                    raise
                self._failed[seq] = err
                return False

    def poll(self) -> None:
        """Serve delivery reports; restart and re-send if the producer died."""
        self._served(self.producer.poll, 0)
        if self._failed:
            self._recover()

    def flush(self, timeout: float = 120) -> None:
        """Wait until every message is stored (recovering from fatal errors); raise otherwise."""
        while True:
            remaining = self._serve(timeout)
            if self._failed:
                self._recover()
                continue
            if remaining:
                raise KafkaException(f"{remaining} message(s) still queued after {timeout:.0f} s")
            self._pending.clear()  # every message was reported and none failed: all are stored
            return

    def _serve(self, timeout: float) -> int:
        """Flush: serve delivery reports until none is queued or ``timeout``; return how many remain.

        confluent-kafka builds a ``Message`` for each failure report before calling back, and for some
        failed messages (after a fatal error) that leaves a Python exception set: our callback still runs
        and records the failure, then the flush stops with ``SystemError``. Such a report counts as
        served, and the flush goes on.
        """
        deadline = time.monotonic() + timeout
        while True:
            ok, remaining = self._served(self.producer.flush, max(deadline - time.monotonic(), 0))
            if ok:
                return remaining
            if self._lost_report or time.monotonic() >= deadline:
                return len(self.producer)

    def _served(self, call: Callable[[float], int], timeout: float) -> tuple[bool, int]:
        """``poll`` or ``flush`` the producer; (True, its result), or (False, 0) when a report raised.

        ``SystemError``: a failure report our callback already recorded (see :meth:`_serve`). A fatal or
        recoverable ``KafkaException`` instead of a report: some message's fate is unknown, so the producer
        counts as failed and everything not proven stored is sent again (:meth:`_recover`).
        """
        try:
            return True, call(timeout)
        except SystemError:
            return False, 0
        except KafkaException as e:
            err = e.args[0] if e.args and isinstance(e.args[0], KafkaError) else None
            if err is None or not (err.fatal() or err.code() in _RECOVERABLE):
                raise
            self._lost_report = True
            self._failed.setdefault(-1, err)  # -1: no message of ours; marks the producer dead
            return False, 0

    def _drain(self) -> bool:
        """Get a report for every message of the dead producer; True if it answered for all."""
        try:
            self._serve(5)  # what the broker still answers
            self.producer.purge()  # the rest fails with _PURGE_QUEUE / _PURGE_INFLIGHT
            return self._serve(10) == 0
        except Exception as e:  # noqa: BLE001 - it is dead; whatever it did not report is sent again
            log.warning("draining the failed producer: %s: re-sending everything not proven stored", e)
            return False

    def _recover(self) -> None:
        """Replace a dead producer and send every message not proven stored again, in order."""
        while True:
            complete = self._drain() and not self._lost_report
            bad = [e for e in self._failed.values() if not (e.fatal() or e.code() in _RECOVERABLE)]
            if bad:
                raise KafkaException(f"{len(self._failed)} message(s) failed; first error: {bad[0]}")
            first = next(iter(self._failed.values()), "producer unusable")
            if self.restarts >= self.max_restarts:
                raise KafkaException(f"producer failed {self.restarts} times; last error: {first}")
            failed = self._failed
            # with a report for every message, the unreported ones are stored; otherwise send all again
            backlog = [e for seq, e in self._pending.items() if seq in failed] if complete else list(
                self._pending.values())
            log.warning("producer failed (%s): restarting, re-sending %d message(s)", first, len(backlog))
            self.restarts += 1
            self.resent += len(backlog)
            self._pending, self._failed, self._lost_report = {}, {}, False
            self.producer = self.factory()
            alive = True
            for entry in backlog:
                seq = self._seq
                self._seq += 1
                self._pending[seq] = entry
                if not alive:  # the new producer died too: the rest goes in the next round
                    self._failed[seq] = KafkaError(KafkaError._FATAL, "not sent: the producer failed")
                else:
                    alive = self._send(seq, entry)
            if alive:
                return


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
    stats.resent = sender.resent
    stats.seconds = time.monotonic() - t0
    if on_progress:
        on_progress(stats.sent)
    return stats
