"""Degradation and the retrain decision (pure logic)."""

from __future__ import annotations

from shopstream.training.degradation import DegradationReport, assess, retrain_decision


def test_assess_flags_a_drop_beyond_the_share():
    degraded, msg = assess(0.60, 0.50, share=0.10)
    assert degraded and "16.7% below its registered 0.6000" in msg
    ok, msg = assess(0.60, 0.55, share=0.10)
    assert not ok and "floor 0.5400" in msg
    assert not assess(0.60, 0.70, share=0.10)[0]


def test_retrain_when_forced_or_without_champion():
    assert retrain_decision(DegradationReport("3", champion_age_hours=1), 20, force=True) == (True, "requested (force)")
    assert retrain_decision(DegradationReport(None), 20, force=False) == (True, "no champion yet")


def test_retrain_when_degraded():
    r = DegradationReport("3", 0.6, 0.4, degraded=True, champion_age_hours=1, message="dropped")
    retrain, reason = retrain_decision(r, 20, force=False)
    assert retrain and "degraded" in reason and "dropped" in reason


def test_retrain_when_champion_is_old():
    r = DegradationReport("3", 0.6, 0.6, degraded=False, champion_age_hours=30)
    retrain, reason = retrain_decision(r, 20, force=False)
    assert retrain and "scheduled refresh" in reason


def test_no_retrain_for_a_healthy_recent_champion():
    r = DegradationReport("3", 0.6, 0.61, degraded=False, champion_age_hours=2, message="fine")
    retrain, reason = retrain_decision(r, 20, force=False)
    assert not retrain and "healthy" in reason


def test_unknown_degradation_falls_back_to_age():
    r = DegradationReport("3", degraded=None, champion_age_hours=2, message="cannot check")
    assert retrain_decision(r, 20, force=False)[0] is False
    assert retrain_decision(r, 1, force=False)[0] is True
