"""Settings: defaults, env overrides, and clear errors naming the bad variable."""

from __future__ import annotations

import json

import pytest

from shopstream.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    import os

    for k in list(os.environ):
        if k.startswith("SHOPSTREAM_"):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_cover_every_service():
    s = load_settings()
    assert s.postgres.port == 15432
    assert s.kafka.bootstrap_servers.startswith("127.0.0.1:")
    assert s.s3.endpoint_url.startswith("http://")
    assert s.mlflow.uri == f"http://{s.mlflow.host}:{s.mlflow.port}"
    assert s.state_dir.name == ".shopstream"


def test_env_overrides_nested_fields(monkeypatch):
    monkeypatch.setenv("SHOPSTREAM_POSTGRES__PORT", "25432")
    monkeypatch.setenv("SHOPSTREAM_KAFKA__RAW_TOPIC", "raw.v2")
    s = load_settings()
    assert s.postgres.port == 25432
    assert s.kafka.raw_topic == "raw.v2"


def test_dotenv_file_is_read(tmp_path):
    (tmp_path / ".env").write_text("SHOPSTREAM_S3__LAKE_BUCKET=my-lake\n")
    assert load_settings().s3.lake_bucket == "my-lake"


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("SHOPSTREAM_POSTGRES__PORT", "not-a-port"),
        ("SHOPSTREAM_POSTGRES__PORT", "70000"),
        ("SHOPSTREAM_S3__ENDPOINT_URL", "minio:9000"),
        ("SHOPSTREAM_AIRFLOW__PARALLELISM", "0"),
    ],
)
def test_bad_setting_fails_naming_the_variable(monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as exc:
        load_settings()
    assert var in str(exc.value)


def test_airflow_connections_are_rendered_as_json():
    s = load_settings()
    conns = s.airflow_connections()
    wh = json.loads(conns["AIRFLOW_CONN_SHOPSTREAM_WAREHOUSE"])
    assert wh["conn_type"] == "postgres" and wh["port"] == s.postgres.port
    s3 = json.loads(conns["AIRFLOW_CONN_SHOPSTREAM_S3"])
    assert s3["extra"]["endpoint_url"] == s.s3.endpoint_url
    kafka = json.loads(conns["AIRFLOW_CONN_SHOPSTREAM_KAFKA_CONSUMER"])
    assert kafka["extra"]["bootstrap.servers"] == s.kafka.bootstrap_servers
    assert kafka["extra"]["group.id"]


def test_export_env_round_trips(monkeypatch):
    monkeypatch.setenv("SHOPSTREAM_MLFLOW__PORT", "15999")
    exported = load_settings().export_env()
    for k, v in exported.items():
        monkeypatch.setenv(k, v)
    again = load_settings()
    assert again.mlflow.port == 15999
    assert again.export_env() == exported


def test_airflow_env_points_at_settings():
    s = load_settings()
    env = s.airflow_env()
    assert env["AIRFLOW__API__PORT"] == str(s.airflow.port)
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith(f":{s.postgres.port}/{s.postgres.airflow_db}")
    assert env["AIRFLOW__CORE__EXECUTOR"] == "shopstream.airflow_executor.PreloadingLocalExecutor"
    assert "great_expectations" in s.airflow.preload_modules.split(",")


def test_no_preload_modules_render_the_plain_local_executor(monkeypatch):
    monkeypatch.setenv("SHOPSTREAM_AIRFLOW__PRELOAD_MODULES", " ")
    assert load_settings().airflow_env()["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"


def test_configuration_doc_is_current():
    from shopstream.configuration_doc import DOC_PATH, render

    assert DOC_PATH.read_text() == render(), "docs/configuration.md is stale: run `shopstream config-doc`"


def test_unknown_variable_stops_the_start_naming_the_closest_setting(monkeypatch):
    monkeypatch.setenv("SHOPSTREAM_KAFKA__BOOTSTRAP_SERVER", "10.0.0.1:9092")
    with pytest.raises(SettingsError) as exc:
        load_settings()
    assert "SHOPSTREAM_KAFKA__BOOTSTRAP_SERVER (from the environment): unknown setting; " \
           "did you mean SHOPSTREAM_KAFKA__BOOTSTRAP_SERVERS?" in str(exc.value)


def test_unknown_variable_in_the_dotenv_file_is_named_with_the_file(tmp_path):
    (tmp_path / ".env").write_text("SHOPSTREAM_S3__LAKE_BUCKET=ok\nSHOPSTREAM_PIPELINE__LATENESS_BOUND=60\n")
    with pytest.raises(SettingsError) as exc:
        load_settings()
    msg = str(exc.value)
    assert f"SHOPSTREAM_PIPELINE__LATENESS_BOUND (from the {tmp_path / '.env'})" in msg
    assert "did you mean SHOPSTREAM_PIPELINE__LATENESS_BOUND_S?" in msg
    assert "LAKE_BUCKET" not in msg


def test_a_variable_far_from_any_setting_is_still_refused(monkeypatch):
    monkeypatch.setenv("SHOPSTREAM_XYZZY", "1")
    with pytest.raises(SettingsError, match="SHOPSTREAM_XYZZY .*no setting has a similar name"):
        load_settings()


def test_cluster_profile_points_spark_and_airflow_at_its_services(monkeypatch):
    """With the profile on, what was not set explicitly goes to its own master and the CeleryExecutor; an
    explicit master or executor wins; children started with export_env() see the same."""
    monkeypatch.setenv("SHOPSTREAM_CLUSTER__ENABLED", "true")
    monkeypatch.setenv("SHOPSTREAM_CLUSTER__SPARK_MASTER_PORT", "17177")
    s = load_settings()
    assert s.spark.master == "spark://127.0.0.1:17177" and s.airflow.executor == "CeleryExecutor"
    env = s.airflow_env()
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"] == f"redis://127.0.0.1:{s.redis.port}/{s.airflow.celery_broker_db}"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+" + s.postgres.url(s.postgres.airflow_db, "postgresql")
    assert s.spark_env()["SPARK_LOCAL_IP"] == "127.0.0.1"
    for key, value in s.export_env().items():
        monkeypatch.setenv(key, value)
    assert load_settings().spark.master == s.spark.master
    monkeypatch.setenv("SHOPSTREAM_SPARK__MASTER", "spark://spark-master:7077")
    monkeypatch.setenv("SHOPSTREAM_AIRFLOW__EXECUTOR", "LocalExecutor")
    s = load_settings()
    assert s.spark.master == "spark://spark-master:7077" and "SPARK_LOCAL_IP" not in s.spark_env()
    assert "AIRFLOW__CELERY__BROKER_URL" not in s.airflow_env()


def test_celery_without_its_broker_fails_at_start(monkeypatch):
    monkeypatch.setenv("SHOPSTREAM_AIRFLOW__EXECUTOR", "CeleryExecutor")
    monkeypatch.setenv("SHOPSTREAM_REDIS__ENABLED", "false")
    with pytest.raises(SettingsError, match="SHOPSTREAM_REDIS__ENABLED"):
        load_settings()


def test_public_url_is_what_a_browser_gets(monkeypatch):
    monkeypatch.setenv("SHOPSTREAM_AIRFLOW__HOST", "airflow-apiserver")
    monkeypatch.setenv("SHOPSTREAM_AIRFLOW__PUBLIC_URL", "https://airflow.example.com/")
    s = load_settings()
    assert s.airflow.ui_url == "https://airflow.example.com"
    assert s.airflow_env()["AIRFLOW__API__BASE_URL"] == "https://airflow.example.com"
    assert s.airflow_env()["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:18080/execution/"
