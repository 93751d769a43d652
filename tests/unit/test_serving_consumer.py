"""The feature-store consumer's rules: silver's lateness (one definition), and the event-time watermark across
partitions."""

from __future__ import annotations

from shopstream.serving.consumer import MAX_CLOCK_SKEW_S, ConsumerConfig, is_late, skewed, watermark
from shopstream.settings import load_settings

S = 1_000_000  # microseconds per second


def test_lateness_rules_are_silvers():
    """The consumer and silver use the same module's rules: one definition of late and of clock skew."""
    from shopstream.events import lateness
    from shopstream.warehouse import silver

    assert MAX_CLOCK_SKEW_S == silver.MAX_CLOCK_SKEW_S == lateness.MAX_CLOCK_SKEW_S
    assert is_late is lateness.is_late and skewed is lateness.skewed


def test_watermark_is_the_slowest_partition_still_reading():
    latest = {0: 50 * S, 1: 20 * S, 2: 90 * S}
    assert watermark({0, 1, 2}, set(), latest) == 20 * S
    assert watermark({0, 1, 2}, {1}, latest) == 50 * S          # a partition at its end holds nobody back
    assert watermark({0, 1, 2, 3}, set(), latest) < 0           # one that delivered nothing yet holds all back
    assert watermark({0, 1, 2}, {0, 1, 2}, latest) > 2**62      # all at their end: everything goes
    assert watermark({0, 1}, set(), latest, drained=True) > 2**62
    assert watermark(set(), set(), {}) > 2**62


def test_config_comes_from_settings_with_overrides():
    s = load_settings(serving={"batch_size": 123, "max_hold_s": 4.5})
    cfg = ConsumerConfig.of(s, max_interval_s=None, idle_timeout_s=3.0)
    assert (cfg.batch_size, cfg.max_hold_s, cfg.max_interval_s, cfg.idle_timeout_s) == (123, 4.5, 0.2, 3.0)
