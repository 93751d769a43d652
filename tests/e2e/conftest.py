"""The end-to-end data set, shared by the e2e modules: one run of the data DAG over generated events, and the
training run its gold update starts. Package-scoped: the browser test (which runs first) looks at the pages
over the same data the pipeline test checks; both are torn down after the last e2e test."""

from __future__ import annotations

import pytest

from shopstream.airflow_api import AirflowClient
from shopstream.events.generator import generate
from shopstream.events.producer import produce
from shopstream.training import tracking


@pytest.fixture(scope="package")
def data_run(stack, stack_settings):
    """30,000 generated events produced, then one run of the data DAG through the REST API.

    The training DAG is unpaused first, so the gold feature asset that run updates starts it.
    """
    stream = generate(30_000, seed=21, days=3)
    produce(stack_settings, stream.timed())
    client = AirflowClient(stack_settings)
    client.wait_for_dag("shopstream_training")
    client.unpause("shopstream_training")
    try:
        result = client.run_dag("shopstream_data", timeout=1800)
        assert result.state == "success", result.tasks
        yield stream.truth, result, client
    finally:
        for dag_id in ("shopstream_data", "shopstream_training"):  # no runs the tests did not ask for
            client.request("PATCH", f"/dags/{dag_id}", json={"is_paused": True})


@pytest.fixture(scope="package")
def training_run(data_run, stack_settings):
    """The training run the data run's gold update started; afterwards the registered model is removed again,
    so later tests start without a champion."""
    _, data, client = data_run
    run = client.wait_for_started_run("shopstream_training", timeout=120, run_type="asset_triggered")
    assert run is not None, "the gold feature update did not start shopstream_training"
    result = client.wait_for_run("shopstream_training", run["dag_run_id"], timeout=2400)
    client.request("PATCH", "/dags/shopstream_training", json={"is_paused": True})
    yield run, result
    tracking.client(stack_settings).delete_registered_model(stack_settings.mlflow.registered_model)
