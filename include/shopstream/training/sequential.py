"""Tuning without Ray: the same search, one trial after another in this process.

What Ray Tune does with OptunaSearch + ASHA, done with Optuna alone: a TPE sampler with the same seed samples
the same search space, and a successive-halving pruner with ASHA's grace period and reduction factor stops a
trial at a milestone (every ``report_every`` rounds) when it is not among the best of the trials that reached
it. Each model gets all of ``SHOPSTREAM_RAY__NUM_CPUS`` threads. No process start, no scheduling: on small
data this beats Ray (see :func:`shopstream.training.tune.choose_backend`). The result has the shape of a Ray
run's (:class:`shopstream.training.tune.TuneResult`, backend ``sequential``), so it is logged the same way.
"""

from __future__ import annotations

import math
import time

from shopstream.training.tune import Progress, TrialResult, TuneData, TuneResult, TuneSpec, _finish, fit


class _Pruning(Progress):
    """Reports each milestone to the Optuna trial; stops training when the pruner says so."""

    def __init__(self, trial, every: int, max_rounds: int) -> None:
        super().__init__(every, max_rounds)
        self.trial = trial
        self.pruned = False

    def report(self, rounds: int) -> bool:
        self.trial.report(self.best[0], rounds)
        self.pruned = self.trial.should_prune()
        return self.pruned


def run_search(data: TuneData, spec: TuneSpec, nthread: int | None = None) -> TuneResult:
    """Tune ``spec.trials`` trials in sequence; no new trial starts once ``spec.timeout_s`` has passed."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = spec.search_space
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=spec.seed),
        pruner=optuna.pruners.SuccessiveHalvingPruner(
            min_resource=min(space.grace_period, space.max_rounds), reduction_factor=space.reduction_factor),
    )
    distributions = space.optuna_space()
    trials: list[TrialResult] = []
    t0 = time.monotonic()
    for number in range(spec.trials):
        if number and time.monotonic() - t0 > spec.timeout_s:     # the first trial always runs
            break
        trial = study.ask(distributions)
        t1 = time.monotonic()
        progress = _Pruning(trial, space.report_every, space.max_rounds)
        params = space.xgb_params(dict(trial.params), nthread=nthread or spec.cpus_per_trial, seed=spec.seed)
        try:
            fit(params, data, space.max_rounds, space.early_stopping_rounds, callbacks=[progress.callback])
        except Exception as e:  # noqa: BLE001 - one failing config does not end the search
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            trials.append(TrialResult(number, dict(trial.params), math.nan, math.nan, 0, len(progress.history),
                                      time.monotonic() - t1, "FAILED", f"{type(e).__name__}: {e}"[:500]))
            continue
        auc, it, ll = progress.best
        if progress.pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, auc)
        every = space.report_every
        rounds = len(progress.history)
        marks = [r for r in range(every, rounds + 1, every)] + ([rounds] if rounds % every else [])
        trials.append(TrialResult(number, dict(trial.params), auc, ll, it, rounds, time.monotonic() - t1,
                                  history=[progress.history[r - 1] for r in marks], history_rounds=marks))
    return _finish(trials, time.monotonic() - t0, "sequential", spec)
