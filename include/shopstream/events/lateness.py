"""Event-time lateness: the one definition silver, the generator's truth and the feature store share.

A stream's *watermark*, as Spark Structured Streaming and Flink define it, is the largest event time
seen so far minus an allowed delay (the lateness bound); an event whose time is below the watermark is
late. shopstream keeps one watermark per Kafka partition and walks each partition in offset order:

* ``max_before`` of a message is the largest event time of the valid events before it in its partition
  (none for the first one);
* its *lateness* is ``max_before - event_time`` (zero when it is not behind), and it is **late** when
  ``event_time < max_before - bound``, i.e. lateness strictly greater than the bound;
* an event stamped more than :data:`MAX_CLOCK_SKEW_S` after its message's Kafka timestamp has a broken
  clock: silver rejects it and it does not move the partition's clock (one event from 2099 would
  otherwise make every later event late).

So lateness depends only on the order of the events, never on when they reached the broker: a history
replayed today by a client that lets the broker stamp its messages lands like a live stream, and a
stream whose partition runs hours behind its own newest event still sets the straggler aside. The landing
service computes ``max_before`` while it lands (the column ``partition_max_event_time``, its state
committed with the partition's offset), the feature-store consumer computes it the same way from the
same topic, and the generator's truth uses :func:`partition_for` to follow each event to its partition.
"""

from __future__ import annotations

import numpy as np

MAX_CLOCK_SKEW_S = 300
#: "no event seen yet" in arrays of epoch microseconds
NO_TIME = np.iinfo(np.int64).min


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash of a key (unsigned 32 bit), as the Java client, librdkafka and kafka-python compute it."""
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = length & ~3
    extra = length % 4
    if extra >= 3:
        h ^= data[tail + 2] << 16
    if extra >= 2:
        h ^= data[tail + 1] << 8
    if extra >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for a keyed message (``murmur2_random`` in librdkafka)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def skewed(event_us: int, arrival_ms: int) -> bool:
    """True when the event is stamped more than the allowed clock skew after its message's arrival."""
    return event_us > arrival_ms * 1000 + MAX_CLOCK_SKEW_S * 1_000_000


def lateness_s(event_us: int, max_before_us: int | None) -> int:
    """Whole seconds (floored) the event is behind the largest earlier event time of its partition; >= 0."""
    if max_before_us is None or max_before_us == NO_TIME or max_before_us <= event_us:
        return 0
    return (max_before_us - event_us) // 1_000_000


def is_late(event_us: int, max_before_us: int | None, bound_s: int) -> bool:
    """Below the watermark: ``event_time < max_before - bound`` (strict, as in Spark and Flink)."""
    if max_before_us is None or max_before_us == NO_TIME:
        return False
    return event_us < max_before_us - bound_s * 1_000_000


def max_before(event_us: np.ndarray, counts: np.ndarray, start: int = NO_TIME) -> tuple[np.ndarray, int]:
    """For events of one partition in offset order: each one's ``max_before`` and the clock after them.

    ``counts`` marks the events that move the clock (False for clock-skewed ones); ``start`` is the clock
    before the first event (:data:`NO_TIME` when the partition has none yet). Vectorised running maximum.
    """
    n = len(event_us)
    if n == 0:
        return np.zeros(0, dtype=np.int64), start
    moved = np.where(counts, event_us.astype(np.int64), NO_TIME)
    running = np.maximum.accumulate(np.concatenate([np.asarray([start], dtype=np.int64), moved]))
    return running[:-1], int(running[-1])


class PartitionClocks:
    """Per-partition ``max_before`` for events read one at a time in offset order (the scalar form)."""

    def __init__(self, start: dict[int, int] | None = None) -> None:
        self.clock: dict[int, int] = dict(start or {})

    def observe(self, partition: int, event_us: int, counts: bool = True) -> int | None:
        """The event's ``max_before`` (None for the partition's first event); then advance the clock."""
        before = self.clock.get(partition)
        if counts and (before is None or event_us > before):
            self.clock[partition] = event_us
        return before
