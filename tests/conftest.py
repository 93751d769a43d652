"""Shared pytest fixtures: the real embedded stack (the library is installed editable by `make install`).

The session fixtures start the real services (PostgreSQL, S3 endpoint, broker, MLflow, Airflow, ...) on
free ports under a temp dir, once per session, and stop them by PID at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from shopstream.settings import Settings, environment
from shopstream.stack.base import free_port
from shopstream.stack.supervisor import Stack


def _test_env(state_dir: Path) -> dict[str, str]:
    return {
        "SHOPSTREAM_STATE_DIR": str(state_dir),
        "SHOPSTREAM_POSTGRES__PORT": str(free_port()),
        "SHOPSTREAM_S3__ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "SHOPSTREAM_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "SHOPSTREAM_MLFLOW__PORT": str(free_port()),
        "SHOPSTREAM_AIRFLOW__PORT": str(free_port()),
        "SHOPSTREAM_AIRFLOW__WORKER_LOG_PORT": str(free_port()),
        "SHOPSTREAM_AIRFLOW__TRIGGER_LOG_PORT": str(free_port()),
        "SHOPSTREAM_AIRFLOW__ADMIN_PASSWORD": "test-admin-pw",
        # no runs the tests did not ask for: DAGs start paused, the data and training DAGs have no time schedule
        "SHOPSTREAM_AIRFLOW__DAGS_PAUSED_AT_CREATION": "true",
        "SHOPSTREAM_PIPELINE__SCHEDULE": "",
        "SHOPSTREAM_TRAINING__SCHEDULE": "",
        "SHOPSTREAM_TRAINING__TRIALS": "4",   # runs the tests start themselves (asset-triggered) stay small
        "SHOPSTREAM_SUPERSET__PORT": str(free_port()),
        "SHOPSTREAM_REDIS__PORT": str(free_port()),
        "SHOPSTREAM_SERVING__PORT": str(free_port()),
        # serving starts only with a champion, which a fresh test stack lacks; tests start their own instances
        "SHOPSTREAM_SERVING__ENABLED": "false",
        # the tests' tables are far below RAY_MIN_ROWS (tuning runs sequentially), so no long-lived Ray head;
        # tests/integration/test_training.py starts one for the test of that path
        "SHOPSTREAM_RAY__EMBEDDED": "false",
        "SHOPSTREAM_RAY__PORT": str(free_port()),
        "SHOPSTREAM_SPARK__CONNECT_PORT": str(free_port()),
        "SHOPSTREAM_SPARK__UI_PORT": str(free_port()),
        "SHOPSTREAM_SUPERSET__ADMIN_PASSWORD": "test-superset-pw",
    }


@pytest.fixture(scope="session")
def stack_settings() -> Iterator[Settings]:
    """Settings of a private stack: a temp state dir (world-traversable for the postgres user), free ports."""
    state_dir = Path(tempfile.mkdtemp(prefix="shopstream-test-"))
    state_dir.chmod(0o755)
    try:
        with environment(_test_env(state_dir)) as settings:
            yield settings
    finally:
        if os.environ.get("SHOPSTREAM_KEEP_TEST_STATE") != "1":
            shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def stack(stack_settings: Settings) -> Iterator[Stack]:
    """The whole embedded stack, started once per session and stopped by PID at the end."""
    st = Stack(stack_settings)
    try:
        st.up()
        yield st
    finally:
        st.down()
