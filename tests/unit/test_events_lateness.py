"""Event-time lateness: Kafka's partitioner, the per-partition clock (vectorised and scalar), the late rule."""

from __future__ import annotations

import random

import numpy as np
from kafka.partitioner.default import murmur2 as kafka_python_murmur2

from shopstream.events.lateness import (
    MAX_CLOCK_SKEW_S,
    NO_TIME,
    PartitionClocks,
    is_late,
    lateness_s,
    max_before,
    murmur2,
    partition_for,
    skewed,
)

S = 1_000_000
H = 3600 * S


def test_murmur2_is_kafkas():
    # the Java client's test vectors (signed in Java) and kafka-python's implementation
    assert murmur2(b"21") == -973932308 & 0xFFFFFFFF
    assert murmur2(b"foobar") == -790332482 & 0xFFFFFFFF
    assert murmur2(b"abc") == 479470107
    rng = random.Random(1)
    for n in range(0, 80):
        key = bytes(rng.randrange(256) for _ in range(n))
        assert murmur2(key) == kafka_python_murmur2(key)
    assert 0 <= partition_for(b"8187d148-3c41-46d4-b0c0-9c08cd9dc564", 4) < 4


def test_late_means_below_the_watermark_strictly():
    t = 1_570_000_000 * S
    assert not is_late(t, None, 3 * 3600)                      # a partition's first event
    assert not is_late(t, t + 3 * H, 3 * 3600)                 # exactly the bound behind: on time
    assert is_late(t, t + 3 * H + 1, 3 * 3600)                 # one microsecond more: late
    assert not is_late(t + 5 * H, t, 3 * 3600)                 # ahead of the partition: on time
    assert lateness_s(t, t + 3 * H + 999_999) == 3 * 3600      # floored whole seconds
    assert lateness_s(t, None) == lateness_s(t, NO_TIME) == lateness_s(t + S, t) == 0


def test_a_clock_skewed_event_is_flagged():
    arrival_ms = 1_570_000_000_000
    assert not skewed(arrival_ms * 1000 + MAX_CLOCK_SKEW_S * S, arrival_ms)
    assert skewed(arrival_ms * 1000 + MAX_CLOCK_SKEW_S * S + 1, arrival_ms)


def test_vectorised_clock_equals_the_scalar_one():
    rng = np.random.default_rng(3)
    times = (1_570_000_000 + rng.integers(-20_000, 20_000, 500)) * S
    counts = rng.random(500) > 0.1
    for start in (NO_TIME, 1_570_010_000 * S):
        before, end = max_before(times, counts, start)
        clocks = PartitionClocks({} if start == NO_TIME else {0: start})
        scalar = [clocks.observe(0, int(t), bool(c)) for t, c in zip(times, counts, strict=True)]
        assert [NO_TIME if x is None else x for x in scalar] == before.tolist()
        assert end == clocks.clock[0]
    empty, end = max_before(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool), 7)
    assert len(empty) == 0 and end == 7


def test_replayed_history_in_order_is_never_late_and_a_straggler_is():
    """Years-old history read today: lateness comes from the events' own order, not from when they arrived."""
    base = 1_570_000_000 * S
    times = np.array([base + i * 60 * S for i in range(300)] + [base + 10 * 60 * S], dtype=np.int64)
    before, _ = max_before(times, np.ones(len(times), dtype=bool))
    late = [is_late(int(t), int(b), 3 * 3600) for t, b in zip(times, before, strict=True)]
    assert late == [False] * 300 + [True]   # the straggler is 4 h 49 min behind its partition
