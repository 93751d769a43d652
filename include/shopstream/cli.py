"""The ``shopstream`` command: run the embedded stack and the pipeline."""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from shopstream.settings import Settings, SettingsError, load_settings

app = typer.Typer(help="shopstream: e-commerce events from Kafka to a warehouse, models and dashboards.",
                  no_args_is_help=True, add_completion=False)
console = Console(width=None if sys.stdout.isatty() else 160)


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None


def _human(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB" if n else "-"


@app.command()
def up(service: Annotated[list[str] | None, typer.Argument(help="Only these services (default: all).")] = None,
       cluster: Annotated[bool, typer.Option("--cluster", help="The cluster profile (SHOPSTREAM_CLUSTER__ENABLED=true): "
                                             "a Spark standalone master and workers for the DAGs' Spark jobs, "
                                             "Airflow's CeleryExecutor with celery workers."
                                             )] = False) -> None:
    """Start the embedded stack (PostgreSQL, S3, broker, MLflow, Airflow) and wait until healthy."""
    import os

    from shopstream.stack.base import StackError
    from shopstream.stack.supervisor import Stack

    if cluster:
        os.environ["SHOPSTREAM_CLUSTER__ENABLED"] = "true"
    s = _settings()
    stack = Stack(s, only=service or None)
    t0 = time.monotonic()
    try:
        with console.status("starting") as st:
            stack.up(on_start=lambda name: st.update(f"starting {name} ..."))
    except StackError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(1) from None
    console.print(f"[green]stack up in {time.monotonic() - t0:.0f}s[/green] (state in {s.state_dir})")
    _print_status(stack)
    _print_logins(s)


@app.command()
def down() -> None:
    """Stop every process of the embedded stack (data stays in the state directory)."""
    from shopstream.stack.supervisor import Stack

    stack = Stack(_settings())
    stack.down(on_stop=lambda name, stopped: console.print(f"{name}: {'stopped' if stopped else 'not running'}"))
    left = stack.all_pids()
    if left:
        console.print(f"[red]still running: {sorted(left)}[/red]")
        raise typer.Exit(1)


@app.command()
def status() -> None:
    """Health, address, PIDs and memory of each service; per-partition consumer lag (exit 1 if a consumer is stuck)."""
    from shopstream.stack.supervisor import Stack

    s = _settings()
    stack = Stack(s)
    rows = _print_status(stack)
    states = {r.name: r.state for r in rows}
    past_end = False
    if states.get("postgres") == "healthy" and states.get("broker") == "healthy":
        past_end = _print_stream_metrics(s, features=states.get("redis") == "healthy")
    if past_end or any(r.state != "healthy" for r in rows):
        raise typer.Exit(1)


def _print_stream_metrics(s: Settings, features: bool = False) -> bool:
    """Per-partition lag of the landing group (and the feature-store consumer), events landed and rejected.

    True if a group's offset is past its partition's log end (flagged in red).
    """
    import psycopg

    from shopstream.landing import manifest
    from shopstream.landing.service import lag

    groups = []
    try:
        groups.append((f"landing group {s.kafka.landing_group}", lag(s)))
    except Exception as e:  # noqa: BLE001 - metrics are informative only
        console.print(f"[yellow]landing lag unavailable: {e}[/yellow]")
    if features:
        try:
            groups.append((f"feature-store group {s.serving.consumer_group}", _features_lag(s)))
        except Exception as e:  # noqa: BLE001
            console.print(f"[yellow]feature-store lag unavailable: {e}[/yellow]")
    past_end = False
    for title, rows in groups:
        table = Table(title=f"{title} on {s.kafka.raw_topic}")
        for col in ("partition", "log end", "committed", "lag", ""):
            table.add_column(col, justify="right" if col else "left")
        for r in rows:
            flag = "[red]PAST LOG END: the consumer stops[/red]" if r.past_end else ""
            past_end |= r.past_end
            table.add_row(str(r.partition), f"{r.end:,}", "-" if r.committed is None else f"{r.committed:,}",
                          f"{r.lag:,}", flag)
        table.caption = f"total lag {sum(max(r.lag, 0) for r in rows):,}" if rows else "topic not created yet"
        console.print(table)
    with psycopg.connect(s.postgres.dsn(), autocommit=True) as conn:
        manifest.ensure_schema(conn)
        totals = manifest.totals(conn)
    reasons = ", ".join(f"{k}={v:,}" for k, v in totals["rejected"].items()) or "none"
    console.print(
        f"stream: landed {totals['events']:,} events in {totals['event_objects']:,} objects; "
        f"rejected {sum(totals['rejected'].values()):,} ({reasons}); "
        f"oversized={totals['oversized']:,} (dead letters too large for {s.kafka.invalid_topic}: claim check, "
        f"payload in s3://{s.s3.lake_bucket}/deadletter/)"
    )
    _print_freshness(s)
    if past_end:
        console.print("[red]A committed offset is past its partition's log end: the broker's log went backwards. "
                      "See docs/operations.md, section \"A consumer stops: committed offset past the log end\".[/red]")
    return past_end


def freshness_rows(s: Settings, limit: int = 5) -> list[tuple]:
    """The last data runs' event-to-gold freshness (``dq.freshness``), newest first."""
    import psycopg

    from shopstream.warehouse.ddl import ensure_schemas

    with psycopg.connect(s.postgres.dsn(), autocommit=True) as conn:
        ensure_schemas(conn, only=("dq",))
        return conn.execute(
            "select run_id, events, gold_at, median_s, worst_s, landed_median_s from dq.freshness "
            "order by gold_at desc limit %s", (limit,)).fetchall()


def _print_freshness(s: Settings) -> None:
    rows = freshness_rows(s)
    if not rows:
        console.print("freshness: no data run has brought events into gold yet")
        return
    table = Table(title="freshness: Kafka arrival to gold, per data run (dq.freshness)")
    for col in ("run", "events", "gold at (UTC)", "median", "worst", "landed to gold (median)"):
        table.add_column(col, justify="left" if col in ("run", "gold at (UTC)") else "right")
    for run_id, events, gold_at, median_s, worst_s, landed_s in rows:
        table.add_row(run_id, f"{events:,}", f"{gold_at:%Y-%m-%d %H:%M:%S}", _seconds(median_s), _seconds(worst_s),
                      _seconds(landed_s))
    table.caption = "arrival is the Kafka timestamp: a replay that stamps historical times shows their age"
    console.print(table)


def _seconds(s: float) -> str:
    return f"{s:.1f}s" if s < 120 else f"{s / 60:.1f}min" if s < 7200 else f"{s / 3600:.1f}h" if s < 172800 \
        else f"{s / 86400:.0f}d"


def _features_lag(s: Settings) -> list:
    from shopstream.landing.service import group_lag
    from shopstream.serving.feature_store import Keys, connect

    client = connect(s)
    try:
        stored = client.hgetall(Keys(s.redis.key_prefix).offsets(s.serving.consumer_group, s.kafka.raw_topic))
    finally:
        client.close()
    return group_lag(s, s.kafka.raw_topic, {int(p): int(o) for p, o in stored.items()}, s.serving.consumer_group)


def _print_status(stack) -> list:
    rows = stack.status()
    table = Table(title="shopstream stack")
    for col in ("service", "state", "address", "pids", "memory", "details"):
        table.add_column(col)
    colour = {"healthy": "green", "unhealthy": "red", "stopped": "yellow"}
    for r in rows:
        table.add_row(
            r.name, f"[{colour[r.state]}]{r.state}[/]", r.address, " ".join(map(str, r.pids)) or "-",
            _human(r.memory_bytes), r.problem or r.details,
        )
    total = sum(r.memory_bytes for r in rows)
    table.caption = f"total memory {_human(total)} (PSS: shared pages counted once)"
    console.print(table)
    return rows


def _print_logins(s: Settings) -> None:
    console.print(
        f"Airflow UI  {s.airflow.ui_url}  (login {s.airflow.admin_user} / "
        f"{s.airflow.admin_password.get_secret_value()})\n"
        f"MLflow UI   {s.mlflow.uri}\n"
        f"S3 endpoint {s.s3.endpoint_url}  (lake bucket {s.s3.lake_bucket})\n"
        f"Kafka       {s.kafka.bootstrap_servers}\n"
        + (f"Spark UI    {s.spark.ui_url}  (the data DAG's Spark jobs)\n" if s.spark.mode == "connect" else "")
        + f"Warehouse   postgresql://{s.postgres.user}@{s.postgres.host}:{s.postgres.port}/{s.postgres.warehouse_db}"
    )
    from shopstream.dashboards import summary_lines

    console.print("\n".join(summary_lines(s)), highlight=False, markup=False)


@app.command()
def logs(
    service: Annotated[str, typer.Argument(help="Process name: postgres, s3, broker, mlflow, airflow-scheduler ...")],
    lines: Annotated[int, typer.Option("--lines", "-n")] = 60,
) -> None:
    """Print the last lines of a service's log."""
    from shopstream.stack.supervisor import Stack

    stack = Stack(_settings())
    procs = {p.spec.name: p for svc in stack.services for p in svc.processes()}
    matches = [p for name, p in procs.items() if name == service or name.startswith(f"{service}-")]
    if not matches:
        console.print(f"[red]no process {service!r}; known: {', '.join(procs)}[/red]")
        raise typer.Exit(2)
    for p in matches:
        console.rule(str(p.log_file))
        console.print(p.tail(lines), markup=False, highlight=False)


@app.command()
def env(fmt: Annotated[str, typer.Option("--format", help="shell (export lines) or dotenv.")] = "shell") -> None:
    """Print the environment the settings render (SHOPSTREAM_*, AIRFLOW__*, AIRFLOW_CONN_*, AWS_*)."""
    s = _settings()
    rendered = {**s.export_env(), **s.airflow_env()}
    for k, v in sorted(rendered.items()):
        print(f"export {k}={shlex.quote(v)}" if fmt == "shell" else f"{k}={v}")


def _truth_path(s: Settings, out: Path | None) -> Path:
    return out or s.state_dir / "truth" / "latest.json"


@app.command()
def generate(
    events: Annotated[int, typer.Option(help="Number of messages (all kinds).")] = 100_000,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same bytes.")] = 42,
    days: Annotated[float, typer.Option(help="Days of event time the stream spans.")] = 7.0,
    invalid_rate: Annotated[float, typer.Option(help="Share of invalid records.")] = 0.10,
    duplicate_rate: Annotated[float, typer.Option(help="Share of exact re-sends.")] = 0.02,
    late_rate: Annotated[float, typer.Option(help="Share of events produced hours late.")] = 0.02,
    out: Annotated[Path | None, typer.Option(help="Write the raw messages as JSON lines here.")] = None,
    truth_out: Annotated[Path | None, typer.Option(help="Where to write the truth summary.")] = None,
) -> None:
    """Generate a realistic event stream with faults; write its truth summary (and the messages)."""
    from shopstream.events.generator import EventStream, GeneratorConfig

    s = _settings()
    stream = EventStream(GeneratorConfig(n_events=events, seed=seed, days=days, invalid_rate=invalid_rate,
                                         duplicate_rate=duplicate_rate, late_rate=late_rate))
    n = 0
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "wb") as f:
            for _key, value in stream:
                f.write(value.replace(b"\n", b" ") + b"\n")
                n += 1
    else:
        for _ in stream:
            n += 1
    path = _write_truth(stream, _truth_path(s, truth_out))
    console.print(f"generated {n:,} messages" + (f" into {out}" if out else "") + f"; truth in {path} "
                  f"(each cart-add's purchase probability in {path.with_suffix('.cart_adds.parquet').name})")
    _print_truth(stream.truth)


def _write_truth(stream, path: Path) -> Path:
    """The truth summary (JSON) and, beside it, each cart-add's true purchase probability (Parquet)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(stream.truth.to_json())
    stream.cart_add_truth().to_parquet(path.with_suffix(".cart_adds.parquet"), index=False)
    return path


def _print_truth(truth) -> None:
    console.print(
        f"  valid {truth.valid_messages:,} (unique {truth.unique_events:,}, duplicates {truth.duplicates:,}, "
        f"late {truth.late_events:,}); invalid {truth.invalid:,} "
        f"({', '.join(f'{k}={v}' for k, v in truth.invalid_by_reason.items() if v)}); "
        f"purchases {truth.purchases:,}, revenue {truth.revenue}"
    )


@app.command()
def produce(
    events: Annotated[int, typer.Option(help="Generator: number of messages.")] = 100_000,
    seed: Annotated[int, typer.Option(help="Generator: random seed.")] = 42,
    days: Annotated[float, typer.Option(help="Generator: days of event time.")] = 7.0,
    file: Annotated[Path | None, typer.Option(help="Replay a Kaggle-format CSV, CSV.gz or Parquet file instead.")] = None,
    rate: Annotated[float | None, typer.Option(help="Messages per second (default: unlimited).")] = None,
    topic: Annotated[str | None, typer.Option(help="Target topic (default: SHOPSTREAM_KAFKA__RAW_TOPIC).")] = None,
    truth_out: Annotated[Path | None, typer.Option(help="Generator: where to write the truth summary.")] = None,
    start: Annotated[datetime | None, typer.Option(help="Generator: first event time (UTC; default 2019-10-01).",
                                                   formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"])] = None,
) -> None:
    """Produce events to the raw topic, from the generator or a Kaggle-format file."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from shopstream.events.producer import produce as produce_messages

    s = _settings()
    stream = None
    if file:
        from shopstream.events.kaggle import iter_timed

        if not file.exists():
            console.print(f"[red]no such file: {file}[/red]")
            raise typer.Exit(2)
        messages = iter_timed(file)
        total = None
    else:
        from shopstream.events.generator import EventStream, GeneratorConfig

        config = GeneratorConfig(n_events=events, seed=seed, days=days)
        if start is not None:
            config = replace(config, start=start.replace(tzinfo=UTC) if start.tzinfo is None else start)
        stream = EventStream(config)
        messages = stream.timed()
        total = events
    with Progress(TextColumn("producing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("produce", total=total)
        stats = produce_messages(s, messages, topic=topic, rate_limit=rate,
                                 on_progress=lambda n: progress.update(task, completed=n))
    console.print(f"produced {stats.sent:,} messages to {topic or s.kafka.raw_topic} at "
                  f"{s.kafka.bootstrap_servers} in {stats.seconds:.1f}s ({stats.rate:,.0f} msg/s)")
    if stream is not None:
        path = _write_truth(stream, _truth_path(s, truth_out))
        console.print(f"truth summary in {path}, cart-add probabilities in {path.with_suffix('.cart_adds.parquet')}")
        _print_truth(stream.truth)


@app.command()
def land(
    until_idle: Annotated[bool, typer.Option(help="Stop once every partition is drained.")] = False,
    batch_size: Annotated[int, typer.Option(help="Messages per landed batch.")] = 100_000,
    max_interval: Annotated[float, typer.Option(help="Seconds before a partial batch is landed.")] = 10.0,
    idle_timeout: Annotated[float, typer.Option(help="--until-idle: seconds with nothing new before stopping.")] = 10.0,
    validator: Annotated[str, typer.Option(
        help="columnar, or rowwise: the previous per-message validator (same results; for comparison)")] = "columnar",
) -> None:
    """Consume the raw topic, validate, land Parquet in the lake and dead-letter the rest."""
    import logging

    from shopstream.landing.service import LandingConfig, LandingService, LandingStopped

    if validator not in ("columnar", "rowwise"):
        raise typer.BadParameter(f"{validator!r}: expected columnar or rowwise", param_hint="--validator")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    s = _settings()
    svc = LandingService(s, LandingConfig(batch_size=batch_size, max_interval_s=max_interval,
                                          idle_timeout_s=idle_timeout, validator=validator))
    svc.install_signal_handlers()
    import gc

    gc.freeze()  # a long-running loop: keep the start-up heap (imports, clients) out of every collection
    svc.on_batch = lambda st: console.print(
        f"batch {st.batches}: {st.messages:,} messages so far ({st.valid:,} valid, {st.rejected:,} rejected), "
        f"{st.objects + st.deadletter_objects} objects"
    )
    try:
        stats = svc.run(until_idle=until_idle)
    except LandingStopped as e:
        console.print(f"[red]landing stopped: {e}[/red]")
        console.print(svc.stats.summary(s))
        raise typer.Exit(1) from None
    finally:
        svc.close()
    console.print(stats.summary(s))


@app.command()
def features(
    until_idle: Annotated[bool, typer.Option(help="Stop once every partition is drained.")] = False,
    batch_size: Annotated[int | None, typer.Option(help="Events per Redis transaction.")] = None,
    max_interval: Annotated[float | None, typer.Option(help="Seconds before a partial batch is applied.")] = None,
    idle_timeout: Annotated[float, typer.Option(help="--until-idle: seconds with nothing new before stopping.")] = 10.0,
    topic: Annotated[str | None, typer.Option(help="Topic (default: SHOPSTREAM_KAFKA__RAW_TOPIC).")] = None,
    group: Annotated[str | None, typer.Option(help="Consumer group (default: SHOPSTREAM_SERVING__CONSUMER_GROUP).")] = None,
) -> None:
    """Keep the online feature store (Redis) up to date with the validated event stream."""
    import logging

    from shopstream.serving.consumer import ConsumerConfig, FeatureStoreConsumer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    s = _settings()
    cfg = ConsumerConfig.of(s, batch_size=batch_size, max_interval_s=max_interval, idle_timeout_s=idle_timeout)
    svc = FeatureStoreConsumer(s, cfg, topic=topic, group=group)
    svc.install_signal_handlers()
    try:
        stats = svc.run(until_idle=until_idle)
    finally:
        svc.close()
    console.print(stats.summary())


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default: SHOPSTREAM_SERVING__HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: SHOPSTREAM_SERVING__PORT).")] = None,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
) -> None:
    """Serve the purchase-intent API (POST /predict, /health, /ready, /metrics) on the champion model."""
    import logging

    from shopstream.serving.app import serve as run_api

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_api(_settings(), host=host, port=port, access_log=access_log)


@app.command("config-doc")
def config_doc() -> None:
    """Regenerate docs/configuration.md from the settings module."""
    from shopstream.configuration_doc import write

    console.print(f"wrote {write()}")


@app.command()
def trigger(
    dag_id: str,
    wait: Annotated[bool, typer.Option(help="Wait for the run to finish.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 1800,
) -> None:
    """Trigger a DAG through the Airflow REST API and wait for it."""
    from shopstream.airflow_api import AirflowClient

    client = AirflowClient(_settings())
    client.wait_for_dag(dag_id)
    client.unpause(dag_id)
    run_id = client.trigger(dag_id)
    console.print(f"triggered {dag_id} run {run_id}")
    if not wait:
        return
    result = _wait_with_progress(client, dag_id, run_id, timeout)
    if result.state != "success":
        raise typer.Exit(1)


def _wait_with_progress(client, dag_id: str, run_id: str, timeout: float):
    with console.status(f"{dag_id}: running") as st:
        def on_poll(state, tasks):
            done = sum(1 for v in tasks.values() if v in ("success", "skipped"))
            st.update(f"{dag_id}: {state} - {done}/{len(tasks)} tasks done")

        result = client.wait_for_run(dag_id, run_id, timeout, on_poll)
    colour = "green" if result.state == "success" else "red"
    console.print(f"[{colour}]{dag_id} {result.state}[/]  {result.url}")
    for task_id, state in sorted(result.tasks.items()):
        console.print(f"  {task_id}: {state}")
    return result


@app.command()
def demo(
    events: Annotated[int, typer.Option(help="Generated events to produce.")] = 200_000,
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 42,
) -> None:
    """Start the stack, produce events, run the pipeline end to end through Airflow, print a summary."""
    from shopstream.airflow_api import AirflowClient
    from shopstream.stack.base import StackError
    from shopstream.stack.supervisor import Stack

    s = _settings()
    t0 = time.monotonic()
    try:
        with console.status("starting the stack") as st:
            Stack(s).up(on_start=lambda name: st.update(f"starting {name} ..."))
    except StackError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(1) from None
    client = AirflowClient(s)
    results = [_run_dag(client, "shopstream_smoke", 600)]
    start, seed = _demo_window(s, seed)
    console.rule(f"producing {events:,} generated events"
                 + (f" from {start:%Y-%m-%d %H:00} (seed {seed}): a repeated demo continues after the data already in "
                    "the warehouse" if start else ""))
    produce(events=events, seed=seed, days=7.0, file=None, rate=None, topic=None, truth_out=None, start=start)
    results.append(_run_dag(client, "shopstream_data", 3600))
    if results[-1].state == "success":
        results.append(_run_training(client))
    console.rule("summary")
    _print_pipeline_summary(s, results)
    _print_champion(s)
    _print_serving(s)
    console.print(f"demo finished in {time.monotonic() - t0:.0f}s")
    _print_logins(s)
    console.print("Stop with `shopstream down` (data stays in "
                  f"{s.state_dir}); `shopstream status` shows health, memory and consumer lag.")
    if any(r.state != "success" for r in results):
        raise typer.Exit(1)


def _demo_window(s: Settings, seed: int) -> tuple[datetime | None, int]:
    """Where a demo's generated week starts, and its seed: the generator's default on an empty warehouse; after
    a previous demo, the hour after the last event time in bronze, with the seed moved by the hours between (the
    same week again would be all duplicates, and silver's duplicate-share check rightly fails such a run)."""
    import psycopg

    from shopstream.events.generator import GeneratorConfig

    try:
        with psycopg.connect(s.postgres.dsn()) as conn:
            (last,) = conn.execute("select max(event_time) from bronze.events").fetchone()
    except psycopg.errors.UndefinedTable:
        last = None
    return next_window(last, seed, GeneratorConfig().start)


def next_window(last: datetime | None, seed: int, base: datetime) -> tuple[datetime | None, int]:
    """The generator's start and seed after data whose last event time is ``last`` (None: no data yet)."""
    if last is None:
        return None, seed
    start = last.astimezone(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return start, seed + max(int((start - base).total_seconds() // 3600), 1)


def _run_dag(client, dag_id: str, timeout: float, conf: dict | None = None):
    client.wait_for_dag(dag_id)
    client.unpause(dag_id)
    return _wait_with_progress(client, dag_id, client.trigger(dag_id, conf), timeout)


def _run_training(client):
    """The gold asset starts shopstream_training: wait for that run, or trigger one if none comes."""
    client.wait_for_dag("shopstream_training")
    client.unpause("shopstream_training")
    run = client.wait_for_started_run("shopstream_training", timeout=30)
    if run:
        return _wait_with_progress(client, "shopstream_training", run["dag_run_id"], 3600)
    return _run_dag(client, "shopstream_training", 3600, conf={"force": True})


def _print_champion(s: Settings) -> None:
    from shopstream.training.pipeline import champion_summary

    try:
        champ = champion_summary(s)
    except Exception as e:  # noqa: BLE001 - the summary must not hide the rest
        console.print(f"[yellow]champion unavailable: {e}[/yellow]")
        return
    if not champ:
        console.print("[yellow]no champion model yet[/yellow]")
        return
    m = champ["metrics"]
    console.print(
        f"champion: {champ['model']} version {champ['version']}  PR-AUC {m.get('pr_auc', float('nan')):.3f}  "
        f"ROC-AUC {m.get('roc_auc', float('nan')):.3f}  log loss {m.get('log_loss', float('nan')):.3f}\n"
        f"  {champ['model_url']}"
        + (f"\n  runs: {champ['experiment_url']}" if champ.get("experiment_url") else "")
    )


def _print_serving(s: Settings) -> None:
    from shopstream.serving.demo import sample

    try:
        with console.status("starting the scoring API and catching up the online feature store"):
            lines = sample(s)
    except Exception as e:  # noqa: BLE001 - the summary must not hide the rest
        console.print(f"[yellow]scoring API unavailable: {e}[/yellow]")
        return
    console.print("\n".join(lines), markup=False, highlight=False)


def _print_pipeline_summary(s: Settings, results) -> None:
    import psycopg

    from shopstream.pipeline import layer_counts

    for r in results:
        colour = "green" if r.state == "success" else "red"
        console.print(f"[{colour}]{r.dag_id}: {r.state}[/]  {r.url}")
    counts = layer_counts(s)
    table = Table(title="warehouse")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, n in counts.items():
        table.add_row(name, f"{n:,}")
    console.print(table)
    with psycopg.connect(s.postgres.dsn()) as conn:
        try:
            dq = conn.execute(
                "select distinct on (suite) suite, success, evaluated, failed, report_url from dq.runs "
                "order by suite, finished_at desc").fetchall()
        except psycopg.errors.UndefinedTable:
            dq = []
    for suite, ok, evaluated, failed, url in dq:
        colour = "green" if ok else "red"
        console.print(f"data quality {suite}: [{colour}]{'passed' if ok else 'FAILED'}[/] "
                      f"({evaluated - failed}/{evaluated} expectations)  {url or ''}")
    _print_set_aside(s)


def _print_set_aside(s: Settings) -> None:
    """The shares of bronze rows silver set aside: the last silver run's, and over the whole warehouse."""
    import psycopg

    from shopstream.quality.store import format_shares, set_aside_shares

    with psycopg.connect(s.postgres.dsn()) as conn:
        try:
            last = conn.execute("select run_id from silver.runs where bronze_rows > 0 "
                                "order by processed_at desc limit 1").fetchone()
            total = conn.execute(
                "select sum(bronze_rows), sum(late_set_aside), sum(duplicates), sum(rejected) "
                "from silver.reconciliation").fetchone()
        except psycopg.errors.UndefinedTable:
            return
        shares = set_aside_shares(conn, [last[0]]).get(last[0]) if last else None
    if shares:
        console.print(f"silver set aside by run {shares['run_id']}: {format_shares(shares)}", highlight=False)
    if total and total[0]:
        b, late, dup, rej = (int(x) for x in total)
        console.print(f"silver set aside in all: late {late / b:.1%} ({late:,}), duplicates {dup / b:.1%} "
                      f"({dup:,}), rejected {rej / b:.1%} ({rej:,}) of {b:,} bronze rows; late events are in "
                      "silver.late_events (restate a range with the data DAG's restate_from/restate_to)",
                      highlight=False)


dashboards_app = typer.Typer(help="Superset dashboards kept as code (include/shopstream/dashboards/assets).",
                             no_args_is_help=True)
app.add_typer(dashboards_app, name="dashboards")


@dashboards_app.command("import")
def dashboards_import() -> None:
    """Create or overwrite the dashboards, charts, datasets and warehouse connection in Superset (by UUID)."""
    from shopstream.dashboards.importer import DashboardImportError, dashboard_url, import_dashboards

    s = _settings()
    try:
        res = import_dashboards(s)
    except DashboardImportError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(1) from None
    console.print(f"imported {len(res.dashboards)} dashboards, {res.charts} charts and {res.datasets} datasets "
                  f"into {s.superset.base_url} in {res.seconds:.1f}s")
    for d in res.dashboards:
        console.print(f"  {d.title:<22} {dashboard_url(s, d.slug)}", highlight=False)


@app.command()
def gate(
    version: Annotated[str | None, typer.Option(help="Model version to gate (default: the newest).")] = None,
    config: Annotated[Path | None, typer.Option(
        help="Gate config YAML (default: SHOPSTREAM_TRAINING__GATE_CONFIG or the packaged gate.yaml).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Decide and print only: no alias move, no tags.")] = False,
) -> None:
    """Promotion gate of the purchase-intent model: exit 0 when the version passes (and is champion), 1 when not."""
    from shopstream.training.gate import run_gate

    s = _settings()
    try:
        decision = run_gate(s, version, str(config) if config else None, apply=not dry_run)
    except Exception as e:  # noqa: BLE001 - exit 2 = could not decide (1 means: decided, failed)
        console.print(f"[red]gate could not decide: {type(e).__name__}: {e}[/red]")
        raise typer.Exit(2) from None
    console.print(decision.report(), markup=False, highlight=False)
    if dry_run:
        console.print("(dry run: nothing changed)")
    raise typer.Exit(0 if decision.passed else 1)


def main() -> None:
    try:
        app()
    except SettingsError as e:
        console.print(f"[red]{e}[/red]")
        sys.exit(2)


if __name__ == "__main__":
    main()
