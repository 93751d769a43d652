"""Benchmark: the model against the generator's oracle, and whether tuning on Ray pays for itself.

Data: ``ml.cart_features`` rows of generated streams (:mod:`shopstream.training.generated`: the gold rows of the
stream, computed through the shared feature definition without running the pipeline), each with the
probability the generator drew its outcome from. Cached as Parquet (``--cache``). Needs no running stack.

1. **Quality** at each ``--cart-adds`` size, on the same test rows (the most recent 15 %): the tuned and
   calibrated model (what training registers), its raw booster, the oracle (the true probabilities) and the
   observable ceiling (the oracle's logit without the per-user effect no event shows, averaged over that
   effect): PR-AUC, ROC-AUC, log loss, Brier, ECE; reliability curves logged to MLflow (``--mlflow``, a local
   SQLite store by default) and saved under ``docs/benchmarks/``.
2. **Tuning** on the largest size, the same ``--trials``: Ray Tune (OptunaSearch + ASHA) started in the run
   (as before: ``ray.init`` counted), Ray Tune on the long-lived head (started once beforehand, as the stack
   does; connecting counted), the same configs trained one after another (the baseline), and the sequential
   search the DAG uses below the crossover (Optuna + successive halving, no Ray). Test PR-AUC of each winner.
3. **Crossover**: Ray (long-lived head) against the sequential search on the most recent rows of the largest
   table, at ``--crossover`` training-row counts.

    python bench/training.py [--cart-adds 100000,1000000] [--trials 16] [--crossover 5000,20000,80000,300000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, write_section  # noqa: E402

from shopstream.settings import REPO_ROOT, load_settings  # noqa: E402
from shopstream.training import evaluate  # noqa: E402
from shopstream.training.dataset import categories_of, feature_spec_from_columns, time_split, xy  # noqa: E402
from shopstream.training.generated import (  # noqa: E402
    EVENTS_PER_CART_ADD,
    TABLE_COLUMNS,
    generated_cart_features,
)
from shopstream.training.train import fit_final  # noqa: E402
from shopstream.training.tune import (  # noqa: E402
    TuneData,
    TuneResult,
    make_spec,
    run_ray_tune,
    run_sequential,
)

SEED, DAYS = 42, 30.0
TEXT = {"event_key", "user_session", "category_l1", "category_l2", "brand"}
SPEC = feature_spec_from_columns([(c, "text" if c in TEXT else "numeric") for c in TABLE_COLUMNS])
PLOTS = REPO_ROOT / "docs" / "benchmarks"


def load_table(cart_adds: int, cache: Path):
    """The generated feature table of about ``cart_adds`` cart-adds (seed 42, 30 days), cached."""
    import pandas as pd

    n_events = round(cart_adds * EVENTS_PER_CART_ADD)
    path = cache / f"cart-features-{n_events}-seed{SEED}-days{DAYS:g}.parquet"
    if path.exists():
        return pd.read_parquet(path)
    t0 = time.monotonic()
    print(f"generating {n_events:,} events -> feature rows ...", flush=True)
    df = generated_cart_features(n_events, seed=SEED, days=DAYS)
    cache.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path.with_suffix(".tmp"), index=False)
    path.with_suffix(".tmp").rename(path)
    print(f"  {len(df):,} cart-adds in {time.monotonic() - t0:.0f} s, cached in {path}", flush=True)
    return df


def prepare(df, settings):
    split = time_split(df, settings.training.valid_share, settings.training.test_share)
    cats = categories_of(split.train, SPEC)
    data = TuneData(*xy(split.train, SPEC, cats), *xy(split.valid, SPEC, cats))
    return split, data


def observable_ceiling(test) -> np.ndarray:
    """P(purchase) given everything but the per-user effect: E over that effect of sigmoid(logit)."""
    z = (test["purchase_logit"] - test["user_effect"]).to_numpy()
    sd = float(test["user_effect"].std())
    nodes, weights = np.polynomial.hermite_e.hermegauss(24)
    weights = weights / weights.sum()
    return (weights[None, :] / (1 + np.exp(-(z[:, None] + sd * nodes[None, :])))).sum(axis=1)


def _scores(settings, split, config, space):
    final = fit_final(settings, split, SPEC, config, space)
    return final.y_test, final.p_test


# ------------------------------------------------------------------------------------------ tuning runs
def ray_cold(settings, data, spec, storage: Path) -> tuple[TuneResult | None, str]:
    """Ray started inside the run (the old way): ray.init counted."""
    from shopstream.training.ray_runtime import local_ray

    t0 = time.monotonic()
    try:
        with local_ray(settings, reuse=False) as session:
            result = run_ray_tune(data, spec, storage / "cold")
    except Exception as e:  # noqa: BLE001 - reported in the table
        return None, f"{type(e).__name__}: {str(e)[:200]}"
    result.startup_s, result.ray = session.startup_s, session.kind
    result.wall_s = time.monotonic() - t0
    return result, ""


def ray_warm(settings, data, spec, storage: Path, label: str = "warm") -> tuple[TuneResult | None, str]:
    """Ray Tune on the long-lived head (must be running): connecting counted."""
    from shopstream.training.ray_runtime import local_ray

    t0 = time.monotonic()
    try:
        with local_ray(settings) as session:
            if session.kind != "long-lived":
                raise RuntimeError(f"expected the long-lived head, got a {session.kind} Ray")
            result = run_ray_tune(data, spec, storage / label)
    except Exception as e:  # noqa: BLE001 - reported in the table
        return None, f"{type(e).__name__}: {str(e)[:200]}"
    result.startup_s, result.ray = session.startup_s, session.kind
    result.wall_s = time.monotonic() - t0
    return result, ""


def sequential_search(settings, data, spec) -> TuneResult:
    from shopstream.training.sequential import run_search

    return run_search(data, spec, nthread=settings.ray.num_cpus)


def fmt(x: float, digits: int = 4) -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{digits}f}"


# ------------------------------------------------------------------------------------------ sections
def quality_section(settings, size: int, df, best_config: dict, space, mlflow_uri: str, how: str,
                    artifacts: str | None = None) -> tuple[str, dict]:
    import mlflow

    split, _ = prepare(df, settings)
    final = fit_final(settings, split, SPEC, best_config, space)
    test = split.test
    refs = {
        "oracle (the generator's probability)": test["purchase_probability"].to_numpy(),
        "observable ceiling (no per-user effect)": observable_ceiling(test),
    }
    rows = {
        f"model: tuned, {final.calibration['method']} calibration (served)": final.p_test,
        "model: raw booster": final.raw_test,
        **refs,
    }
    y = final.y_test
    m = {name: evaluate.classification_metrics(y, p, 0.5) for name, p in rows.items()}
    oracle = m["oracle (the generator's probability)"]
    ceiling = m["observable ceiling (no per-user effect)"]
    model = m[next(iter(rows))]
    table = ["| scores on the same test rows | PR-AUC | ROC-AUC | log loss | Brier | ECE |", "|---|---|---|---|---|---|"]
    for name, v in m.items():
        table.append(f"| {name} | {fmt(v['pr_auc'])} | {fmt(v['roc_auc'])} | {fmt(v['log_loss'])} | "
                     f"{fmt(v['brier'])} | {fmt(v['ece'])} |")

    def verdict(ref: dict) -> str:
        ok = (model["pr_auc"] >= 0.98 * ref["pr_auc"], model["roc_auc"] >= 0.98 * ref["roc_auc"],
              model["log_loss"] <= ref["log_loss"] + 0.01)
        return (f"PR-AUC {model['pr_auc'] / ref['pr_auc']:.1%} ({'holds' if ok[0] else 'misses'} >= 98 %), "
                f"ROC-AUC {model['roc_auc'] / ref['roc_auc']:.1%} ({'holds' if ok[1] else 'misses'}), "
                f"log loss {model['log_loss'] - ref['log_loss']:+.4f} ({'holds' if ok[2] else 'misses'} <= +0.01)")

    PLOTS.mkdir(parents=True, exist_ok=True)
    tag = f"{len(df) // 1000}k"
    with tempfile.TemporaryDirectory() as tmp:
        files = evaluate.plot_files(y, final.p_test, {}, Path(tmp), title=f"(test, {len(test):,} rows)",
                                    references={"raw booster": final.raw_test, **refs})
        reliability = PLOTS / f"training-reliability-{tag}.png"
        shutil.copy(files[2], reliability)
        mlflow.set_tracking_uri(mlflow_uri)
        client = mlflow.MlflowClient(mlflow_uri)
        name = "shopstream-bench-training"
        exp = client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp else client.create_experiment(name, artifact_location=artifacts)
        mlflow.set_experiment(experiment_id=exp_id)
        with mlflow.start_run(run_name=f"oracle-{tag}") as run:
            mlflow.log_params({"cart_adds": len(df), "calibration": final.calibration["method"], **best_config})
            for name, v in m.items():
                key = name.split(" ")[0].replace(":", "") + ("_raw" if "raw" in name else "")
                mlflow.log_metrics({f"{key}_{k}": float(v[k]) for k in ("pr_auc", "roc_auc", "log_loss", "brier", "ece")})
            for f in files[:3]:
                mlflow.log_artifact(str(f), artifact_path="plots")
            run_id = run.info.run_id
    body = f"""### {len(df):,} cart-adds ({size:,} asked): model against the oracle

Split {len(split.train):,} / {len(split.valid):,} / {len(test):,} (train / valid / test, by time), test positive
rate {y.mean():.3f}; tuned config from {how}; calibration on the validation rows: `{final.calibration['method']}`
(cross-fitted log loss {final.calibration.get('cross_fit_log_loss', {})}).

{chr(10).join(table)}

Against the oracle: {verdict(oracle)}.
Against the observable ceiling: {verdict(ceiling)}.
Reliability curve: [`docs/benchmarks/{reliability.name}`](benchmarks/{reliability.name}) (MLflow run `{run_id}` at
`{mlflow_uri}`).
"""
    return body, {"model": model, "oracle": oracle, "ceiling": ceiling}


def tuning_rows(settings, split, results: dict[str, tuple[TuneResult | None, str]], space, base_wall: float) -> list[str]:
    table = ["| variant | trials | boosting rounds | Ray start/connect s | wall s (all counted) | vs same configs in "
             "sequence | best valid PR-AUC | test PR-AUC |", "|---|---|---|---|---|---|---|---|"]
    for name, (r, err) in results.items():
        if r is None:
            table.append(f"| {name} | - | - | - | failed: {err} | - | - | - |")
            continue
        test = evaluate.classification_metrics(*_scores(settings, split, r.best_config, space), 0.5)["pr_auc"]
        table.append(f"| {name} | {len(r.trials)} | {sum(t.rounds for t in r.trials):,} | {r.startup_s:.1f} | "
                     f"{r.wall_s:.1f} | {base_wall / r.wall_s:.2f}x faster | {r.best_valid_pr_auc:.4f} | {test:.4f} |")
    return table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cart-adds", default="100000,1000000", help="sizes (about this many cart-adds each)")
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--crossover", default="5000,20000,80000,300000", help="training rows of the crossover runs")
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                    / "shopstream" / "bench")
    ap.add_argument("--mlflow", default="", help="MLflow tracking URI (default: SQLite in the cache dir)")
    ap.add_argument("--sections", default="quality,tuning,crossover", help="which parts to run")
    ap.add_argument("--no-write", action="store_true", help="print only; do not touch docs/benchmarks.md")
    args = ap.parse_args()
    sections = set(args.sections.split(","))
    sizes = [int(x) for x in args.cart_adds.split(",") if x]
    crossover = [int(x) for x in args.crossover.split(",") if x]
    mlflow_uri = args.mlflow or f"sqlite:///{args.cache / 'mlflow.db'}"
    args.cache.mkdir(parents=True, exist_ok=True)

    from shopstream.stack.base import free_port

    tmp = Path(tempfile.mkdtemp(prefix="bench-training-"))
    os.environ["SHOPSTREAM_RAY__PORT"] = str(free_port())
    settings = load_settings(state_dir=tmp)
    spec = make_spec(settings, trials=args.trials)
    space = spec.search_space
    tables = {size: load_table(size, args.cache) for size in sizes}
    big = tables[sizes[-1]]
    split, data = prepare(big, settings)
    storage = tmp / "ray_results"
    load_before = os.getloadavg()

    results: dict[str, tuple[TuneResult | None, str]] = {}
    cross: list[str] = []
    first_win = None
    same = None
    head, head_s, head_err = None, 0.0, ""
    if sections & {"tuning", "crossover"}:
        from shopstream.stack.ray_head import RayService

        t0 = time.monotonic()
        try:
            head = RayService(settings)
            head.start()                  # never raises: a head that did not start is logged
            head_s = time.monotonic() - t0
            if head.check() is not None:
                raise RuntimeError(head.check())
        except Exception as e:  # noqa: BLE001 - reported
            head, head_err = None, f"the long-lived head did not start: {type(e).__name__}: {str(e)[:160]}"
            print(head_err, flush=True)
    try:
        if "tuning" in sections:          # 2. tuning on the largest set
            print(f"tuning on {len(data.y_train):,} training rows, {args.trials} trials ...", flush=True)
            cold = "Ray Tune, Ray started in the run (as before)"
            results[cold] = ray_cold(settings, data, spec, storage)
            print("  cold", results[cold][0] is not None, results[cold][1], flush=True)
            seq_name = "sequential search: Optuna + successive halving, no Ray"
            results[seq_name] = (sequential_search(settings, data, spec), "")
            print("  sequential search", results[seq_name][0].wall_s, flush=True)
            configs = [t.config for t in (results[cold][0] or results[seq_name][0]).trials]
            t0 = time.monotonic()
            same = run_sequential(data, spec, configs, nthread=settings.ray.num_cpus)
            same.wall_s = time.monotonic() - t0
            results["same configs one after another, no Ray, no pruning (baseline)"] = (same, "")
            print("  same configs", same.wall_s, flush=True)
            warm = "Ray Tune on the long-lived head (connect counted)"
            results[warm] = ray_warm(settings, data, spec, storage) if head else (None, head_err)
            print("  warm", results[warm][0] is not None, results[warm][1], flush=True)
        if "crossover" in sections:       # 3. crossover
            cross = ["| training rows | sequential search s | Ray (long-lived) s | Ray / sequential | sequential "
                     "best valid PR-AUC | Ray best valid PR-AUC |", "|---|---|---|---|---|---|"]
            for n in crossover:
                sub = big.tail(int(n / (1 - settings.training.valid_share - settings.training.test_share)))
                _, d = prepare(sub, settings)
                seq = sequential_search(settings, d, spec)
                ray_r, err = ray_warm(settings, d, spec, storage, f"cross-{n}") if head else (None, head_err)
                if ray_r is None:
                    cross.append(f"| {len(d.y_train):,} | {seq.wall_s:.1f} | failed: {err} | - | "
                                 f"{seq.best_valid_pr_auc:.4f} | - |")
                    continue
                ratio = ray_r.wall_s / seq.wall_s
                if ratio < 1 and first_win is None:
                    first_win = len(d.y_train)
                cross.append(f"| {len(d.y_train):,} | {seq.wall_s:.1f} | {ray_r.wall_s:.1f} | {ratio:.2f} | "
                             f"{seq.best_valid_pr_auc:.4f} | {ray_r.best_valid_pr_auc:.4f} |")
                print("  crossover", n, seq.wall_s, ray_r.wall_s, flush=True)
    finally:
        if head is not None:
            head.stop()
    ok = {k: v for k, v in results.items() if v[0] is not None}

    quality = []
    if "quality" in sections:             # 1. quality at each size, with the config the DAG would have tuned
        for size in sizes:
            df = tables[size]
            pick = next((k for k in ("Ray Tune on the long-lived head (connect counted)",
                                     "sequential search: Optuna + successive halving, no Ray") if k in ok), None)
            if size == sizes[-1] and pick:
                config, how = ok[pick][0].best_config, pick
            else:
                _, d = prepare(df, settings)
                config, how = sequential_search(settings, d, spec).best_config, "the sequential search"
            body, _ = quality_section(settings, size, df, config, space, mlflow_uri, how,
                                      None if args.mlflow else (args.cache / "mlartifacts").resolve().as_uri())
            quality.append(body)
            print(body, flush=True)

    parts = [f"""## Training: the model against the oracle, and tuning that pays (`bench/training.py`)

{machine()}; load average before the run {load_before[0]:.1f}, {load_before[1]:.1f}, \
{load_before[2]:.1f} (the cores are shared with other work: read the ratios of one run, not absolute seconds).
Data: generated streams (seed {SEED}, {DAYS:g} days) turned into `ml.cart_features` rows by
`shopstream.training.generated` (the gold rows of the stream through the shared feature definition, without
the pipeline), each with the probability the generator drew its outcome from.
""", *quality]
    if results and same is not None:
        warm_r = ok.get("Ray Tune on the long-lived head (connect counted)", (None,))[0]
        speed = (f"On {len(data.y_train):,} training rows the long-lived Ray ran the {args.trials} trials "
                 f"{same.wall_s / warm_r.wall_s:.2f}x faster than the same configs one after another (connecting "
                 f"counted; the head itself started once in {head_s:.0f} s, as the stack does)" if warm_r else
                 f"Ray did not run in this benchmark ({head_err or 'see the table'})")
        parts.append(f"""### Tuning on {len(data.y_train):,} training rows ({len(big):,} cart-adds), {args.trials} trials

{chr(10).join(tuning_rows(settings, split, results, space, same.wall_s))}

{speed}. Ray and ASHA win by running two 1-thread trials at once and stopping weak trials at their milestones
(every {space.report_every} rounds, grace {space.grace_period}, reduction factor {space.reduction_factor}).
""")
    if cross:
        parts.append(f"""### Crossover: Ray (long-lived head) against the sequential search, most recent rows of the same table

{chr(10).join(cross)}

Ray first wins at {f'{first_win:,}' if first_win else 'none of these'} training rows on this 2-core machine;
`SHOPSTREAM_TRAINING__RAY_MIN_ROWS` (default {settings.training.ray_min_rows:,}) is where the DAG switches from
the sequential search to Ray.
""")
    body = "\n".join(parts)
    print(body)
    if not args.no_write:
        print(f"wrote {write_section('training', body)}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
