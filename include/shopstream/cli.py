"""The ``shopstream`` command: run the embedded stack and the pipeline."""

from __future__ import annotations

import shlex
import sys
import time
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
def up(service: Annotated[list[str] | None, typer.Argument(help="Only these services (default: all).")] = None) -> None:
    """Start the embedded stack (PostgreSQL, S3, broker, MLflow, Airflow) and wait until healthy."""
    from shopstream.stack.base import StackError
    from shopstream.stack.supervisor import Stack

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
    """Health, address, PIDs and memory of each service."""
    from shopstream.stack.supervisor import Stack

    stack = Stack(_settings())
    rows = _print_status(stack)
    if any(r.state != "healthy" for r in rows):
        raise typer.Exit(1)


def _print_status(stack) -> list:
    rows = stack.status()
    table = Table(title="shopstream stack")
    for col in ("service", "state", "address", "pids", "memory", "details"):
        table.add_column(col)
    colour = {"healthy": "green", "unhealthy": "red", "stopped": "yellow"}
    for r in rows:
        table.add_row(
            r.name, f"[{colour[r.state]}]{r.state}[/]", r.address, " ".join(map(str, r.pids)) or "-",
            _human(r.rss_bytes), r.problem or r.details,
        )
    total = sum(r.rss_bytes for r in rows)
    table.caption = f"total memory {_human(total)}"
    console.print(table)
    return rows


def _print_logins(s: Settings) -> None:
    console.print(
        f"Airflow UI  {s.airflow.base_url}  (login {s.airflow.admin_user} / "
        f"{s.airflow.admin_password.get_secret_value()})\n"
        f"MLflow UI   {s.mlflow.uri}\n"
        f"S3 endpoint {s.s3.endpoint_url}  (lake bucket {s.s3.lake_bucket})\n"
        f"Kafka       {s.kafka.bootstrap_servers}\n"
        f"Warehouse   postgresql://{s.postgres.user}@{s.postgres.host}:{s.postgres.port}/{s.postgres.warehouse_db}"
    )


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
def demo() -> None:
    """Start the stack, run the pipeline end to end through Airflow, print a summary."""
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
    client.wait_for_dag("shopstream_smoke")
    client.unpause("shopstream_smoke")
    run_id = client.trigger("shopstream_smoke")
    result = _wait_with_progress(client, "shopstream_smoke", run_id, 600)
    console.rule("summary")
    console.print(f"pipeline: shopstream_smoke {result.state} in {time.monotonic() - t0:.0f}s  ({result.url})")
    _print_logins(s)
    console.print("Stop with `shopstream down` (data stays in "
                  f"{s.state_dir}); `shopstream status` shows health and memory.")
    if result.state != "success":
        raise typer.Exit(1)


def main() -> None:
    try:
        app()
    except SettingsError as e:
        console.print(f"[red]{e}[/red]")
        sys.exit(2)


if __name__ == "__main__":
    main()
