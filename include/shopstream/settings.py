"""One typed settings object for the whole platform.

Every host, port, credential, bucket, topic and path is read here, from environment variables and an
optional ``.env`` file, with embedded defaults that run the whole stack on one machine. Variable names
are ``SHOPSTREAM_<SECTION>__<FIELD>`` (for example ``SHOPSTREAM_POSTGRES__PORT``); the docker-compose
deployment sets the same names, so the code has one path whatever it talks to.

The settings render the configuration of the other tools: Airflow connections (``AIRFLOW_CONN_*``) and
``AIRFLOW__*`` options, MLflow's and boto's S3 variables, and the Kafka client configuration.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "SHOPSTREAM_"
PLACEHOLDER_PREFIX = "change-me"  # what .env.example puts where a secret belongs
FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
PRELOADING_EXECUTOR = "shopstream.airflow_executor.PreloadingLocalExecutor"
REPO_ROOT = Path(__file__).resolve().parents[2]


class SettingsError(RuntimeError):
    """A setting is missing or invalid; the message names the variable and what is wrong."""


class PostgresSettings(BaseModel):
    """The PostgreSQL server: warehouse, Airflow metadata, MLflow store and Superset metadata."""

    host: str = Field("127.0.0.1", description="PostgreSQL host")
    port: int = Field(15432, ge=1, le=65535, description="PostgreSQL port")
    user: str = Field("shopstream", description="login role of the warehouse (and of any database whose own role is empty)")
    password: SecretStr = Field(SecretStr("shopstream"), description="password of that role")
    warehouse_db: str = Field("warehouse", description="database of the bronze/silver/gold/ml/ops/dq schemas")
    airflow_db: str = Field("airflow", description="Airflow metadata database")
    mlflow_db: str = Field("mlflow", description="MLflow backend store database")
    superset_db: str = Field("superset", description="Superset metadata database")
    airflow_user: str = Field("", description="role of the Airflow database only (docker-compose); empty = `user`")
    airflow_password: SecretStr = Field(SecretStr(""), description="its password; empty = `password`")
    mlflow_user: str = Field("", description="role of the MLflow database only (docker-compose); empty = `user`")
    mlflow_password: SecretStr = Field(SecretStr(""), description="its password; empty = `password`")
    superset_user: str = Field("", description="role of the Superset database only (docker-compose); empty = `user`")
    superset_password: SecretStr = Field(SecretStr(""), description="its password; empty = `password`")
    bin_dir: str = Field("/usr/lib/postgresql/15/bin", description="embedded stack: directory of initdb and postgres")
    os_user: str = Field("postgres", description="embedded stack: OS user the server runs as when started by root")

    def login(self, db: str | None = None) -> tuple[str, str]:
        """(role, password) for database ``db``: its own role where one is set, else ``user``."""
        own = {self.airflow_db: (self.airflow_user, self.airflow_password),
               self.mlflow_db: (self.mlflow_user, self.mlflow_password),
               self.superset_db: (self.superset_user, self.superset_password)}.get(db or self.warehouse_db)
        if own and own[0]:
            return own[0], (own[1].get_secret_value() or self.password.get_secret_value())
        return self.user, self.password.get_secret_value()

    def url(self, db: str, driver: str = "postgresql+psycopg") -> str:
        """SQLAlchemy URL for database ``db`` (with that database's role)."""
        user, pw = self.login(db)
        return f"{driver}://{quote(user, safe='')}:{quote(pw, safe='')}@{self.host}:{self.port}/{db}"

    def dsn(self, db: str | None = None) -> str:
        """libpq connection string (psycopg) for database ``db`` (the warehouse by default)."""
        user, pw = self.login(db)
        return f"host={self.host} port={self.port} user={user} password={pw} dbname={db or self.warehouse_db}"


class S3Settings(BaseModel):
    """The S3 endpoint: MinIO in docker-compose, a disk-backed stand-in in the embedded stack."""

    endpoint_url: str = Field("http://127.0.0.1:19000", description="S3 endpoint (MinIO, or the embedded SeaweedFS)")
    access_key: str = Field(
        "shopstream", description="S3 access key (the embedded SeaweedFS accepts only this key and its secret)"
    )
    secret_key: SecretStr = Field(SecretStr("shopstream-s3-secret"), description="S3 secret key")
    region: str = Field("us-east-1", description="S3 region name")
    lake_bucket: str = Field("shopstream-lake", description="bucket of landed events, dead letters and DQ reports")
    mlflow_bucket: str = Field("shopstream-mlflow", description="bucket of MLflow artifacts")
    broker_bucket: str = Field("shopstream-broker", description="embedded stack: bucket of the Tansu broker's storage")

    @field_validator("endpoint_url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")

    @property
    def secure(self) -> bool:
        return self.endpoint_url.startswith("https://")

    @property
    def netloc(self) -> str:
        return self.endpoint_url.split("://", 1)[1]

    def buckets(self) -> list[str]:
        return [self.lake_bucket, self.mlflow_bucket, self.broker_bucket]


class KafkaSettings(BaseModel):
    """The Kafka-protocol broker and the topics of the stream."""

    bootstrap_servers: str = Field("127.0.0.1:19092", description="Kafka bootstrap servers (comma-separated)")
    raw_topic: str = Field("events.raw", description="topic of raw events from producers")
    invalid_topic: str = Field("events.invalid", description="dead-letter topic of rejected events")
    landed_topic: str = Field("events.landed", description="notifications of landed batches (starts the data DAG)")
    landing_group: str = Field("shopstream-landing", description="consumer group of the landing service")
    airflow_group: str = Field("shopstream-airflow", description="consumer group of Airflow's Kafka tasks")
    partitions: int = Field(4, ge=1, description="partitions of topics created by the stack")
    max_event_bytes: int = Field(
        1_048_576, ge=1024,
        description="largest message value validated as an event; a larger one is dead-lettered as too_large unparsed",
    )
    deadletter_max_bytes: int = Field(
        1_000_000, ge=4096,
        description="largest dead-letter record sent to the dead-letter topic (keep it below the topic's "
                    "max.message.bytes); a larger one goes by claim check: reason, source, size, lake key and a "
                    "preview on the topic, the payload only in the lake's dead-letter object",
    )

    @property
    def port(self) -> int:
        return int(self.bootstrap_servers.split(",")[0].rsplit(":", 1)[1])

    @property
    def host(self) -> str:
        return self.bootstrap_servers.split(",")[0].rsplit(":", 1)[0]

    def client_config(self, **extra: Any) -> dict[str, Any]:
        """confluent-kafka configuration for this broker."""
        return {"bootstrap.servers": self.bootstrap_servers, **extra}

    def stream_consumer_config(self, group: str, **extra: Any) -> dict[str, Any]:
        """A consumer of a long-running service: its own offsets (no auto commit), from the earliest message,
        end-of-partition events (for --until-idle), a fast group join and fetches the embedded broker can encode."""
        return self.client_config(**{
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
            # a joining member waits about half of this for the group to settle (Tansu 0.6 and Kafka's
            # initial rebalance delay); 6 s is Kafka's minimum and heartbeats run in the background
            "session.timeout.ms": 6000,
            # larger fetches overflow the embedded broker's response encoding (Tansu 0.6: SansIo Overflow)
            "fetch.max.bytes": 8 * 2**20,
            "max.partition.fetch.bytes": 2 * 2**20,
            **extra,
        })


class MlflowSettings(BaseModel):
    """The MLflow tracking server and model registry."""

    host: str = Field("127.0.0.1", description="MLflow server host")
    port: int = Field(15000, ge=1, le=65535, description="MLflow server port")
    tracking_uri: str = Field("", description="tracking URI; http://<host>:<port> when empty")
    experiment: str = Field("shopstream-purchase-intent", description="experiment of training runs")
    registered_model: str = Field("shopstream-purchase-intent", description="registered model name")
    auth_enabled: bool = Field(
        False, description="the server runs MLflow's basic-auth app (docker-compose); the embedded stack's server "
        "has no login and listens on loopback only"
    )
    username: str = Field("", description="MLflow login of shopstream's clients (with `auth_enabled`: the admin it creates)")
    password: SecretStr = Field(SecretStr(""), description="password of that login")
    flask_secret_key: SecretStr = Field(SecretStr(""), description="with `auth_enabled`: the basic-auth app's CSRF secret")

    @property
    def uri(self) -> str:
        return self.tracking_uri or f"http://{self.host}:{self.port}"

    def client_env(self) -> dict[str, str]:
        """``MLFLOW_TRACKING_USERNAME``/``PASSWORD`` when a login is set (MLflow clients read them)."""
        if not self.username:
            return {}
        return {"MLFLOW_TRACKING_USERNAME": self.username, "MLFLOW_TRACKING_PASSWORD": self.password.get_secret_value()}


class AirflowSettings(BaseModel):
    """Airflow 3: API server address, admin login and executor sizing."""

    host: str = Field("127.0.0.1", description="Airflow api-server host")
    port: int = Field(18080, ge=1, le=65535, description="Airflow api-server port (UI and REST API)")
    admin_user: str = Field("admin", description="Airflow admin login")
    admin_password: SecretStr = Field(SecretStr("admin"), description="Airflow admin password")
    auth_manager: Literal["simple", "fab"] = Field(
        "simple", description="simple: SimpleAuthManager, a development login (the embedded stack, loopback only); "
        "fab: Flask AppBuilder users and roles (docker-compose)"
    )
    admin_email: str = Field("admin@example.com", description="with the fab auth manager: e-mail of the admin user")
    parallelism: int = Field(4, ge=1, description="LocalExecutor worker processes (CeleryExecutor: tasks per celery worker)")
    executor: Literal["LocalExecutor", "CeleryExecutor"] = Field(
        "LocalExecutor", description="LocalExecutor: tasks run beside the scheduler; CeleryExecutor: on celery workers, "
        "with Redis (SHOPSTREAM_REDIS__*) as broker and the Airflow database as result backend (docker-compose and "
        "the cluster profile)")
    celery_broker_db: int = Field(4, ge=0, le=15, description="CeleryExecutor: Redis database of Celery's broker")
    celery_workers: int = Field(1, ge=1, description="embedded stack with CeleryExecutor: `airflow celery worker` "
                                                     "processes")
    preload_modules: str = Field(
        "great_expectations",
        description="comma-separated modules the scheduler imports before it forks the LocalExecutor's workers, so "
                    "every task process (forked from a worker) starts with them imported: a check task does not pay "
                    "the Great Expectations import (7-28 s on two loaded cores). Needs the fork start method; a module "
                    "that fails to import is logged and skipped; edits to a preloaded module reach the tasks at the "
                    "scheduler's next start. LocalExecutor only; empty: Airflow's plain LocalExecutor",
    )
    dags_paused_at_creation: bool = Field(False, description="new DAGs start paused (the tests unpause what they run)")
    worker_log_port: int = Field(18793, ge=1, le=65535, description="port of the worker log server")
    trigger_log_port: int = Field(18794, ge=1, le=65535, description="port of the triggerer log server")
    home: str = Field("", description="AIRFLOW_HOME; <state_dir>/airflow when empty")
    dags_folder: str = Field("", description="DAGs folder; <repo>/dags when empty")
    plugins_folder: str = Field("", description="plugins folder; <repo>/plugins when empty")
    public_url: str = Field(
        "", description="URL a browser reaches the Airflow UI at (Airflow's base_url and the Data quality report "
        "links), e.g. http://127.0.0.1:18080 when `host` is a container name; http://<host>:<port> when empty")
    scheduler_health_port: int = Field(
        0, ge=0, le=65535, description="port of the scheduler's /health server on loopback (docker-compose health "
        "check); 0 = off")

    @property
    def base_url(self) -> str:
        """Where the other processes reach the api-server (REST API, execution API)."""
        return f"http://{self.host}:{self.port}"

    @property
    def ui_url(self) -> str:
        """Where a browser reaches the UI: ``public_url``, else ``base_url``."""
        return self.public_url.rstrip("/") or self.base_url


class SparkSettings(BaseModel):
    """Spark: how the data DAG's jobs run, the master URL and the JDBC driver jar."""

    mode: Literal["connect", "submit"] = Field(
        "connect",
        description="connect: the data DAG's Spark tasks run on the long-lived Spark Connect server the stack "
                    "starts (SHOPSTREAM_SPARK__CONNECT_HOST/PORT); submit: each task runs spark-submit (a new "
                    "driver JVM and session per task)",
    )
    master: str = Field("local[*]", description="Spark master URL of the Connect server and of spark-submit "
                                                "(local[*] or spark://host:7077)")
    connect_host: str = Field("127.0.0.1", description="Spark Connect server host (mode connect)")
    connect_port: int = Field(15002, ge=1, le=65535, description="Spark Connect server port (mode connect)")
    ui_port: int = Field(14040, ge=1, le=65535, description="Spark UI of the Spark Connect server (mode connect): "
                                                            "the jobs, stages and SQL of the data DAG's Spark tasks")
    jdbc_jar: str = Field("/usr/share/java/postgresql.jar", description="PostgreSQL JDBC driver jar")
    driver_memory: str = Field("2g", description="spark.driver.memory")
    shuffle_partitions: int = Field(8, ge=1, description="spark.sql.shuffle.partitions (small data, few cores)")
    read_partitions: int = Field(
        4, ge=1, description="parallel JDBC reads of a job's PostgreSQL input (one per hash bucket of a key)"
    )

    @property
    def connect_url(self) -> str:
        return f"sc://{self.connect_host}:{self.connect_port}"

    @property
    def ui_url(self) -> str:
        """The Spark Connect server's Spark UI (its REST API is under ``/api/v1``)."""
        return f"http://{self.connect_host}:{self.ui_port}"


class PipelineSettings(BaseModel):
    """The batch pipeline's rules."""

    lateness_bound_s: int = Field(
        3 * 3600, ge=0,
        description="silver sets an event aside as late when it is more than this many seconds behind the largest "
                    "earlier event time of its Kafka partition (the event-time watermark, docs/pipeline.md)",
    )
    set_aside_warning_share: float = Field(
        0.05, ge=0, le=1,
        description="silver's checks warn when a run's share of late, duplicate or silver-rejected rows is above this",
    )
    set_aside_critical_share: float = Field(
        0.25, ge=0, le=1,
        description="silver's checks fail the run (gold is not built) when one of those shares is above this",
    )
    schedule: str = Field(
        "@hourly", description="schedule of the data DAG (it also runs when new data lands); empty: only then"
    )
    land_in_dag: bool = Field(
        True, description="the data DAG drains the raw topic itself (false where a landing service runs)"
    )


class SupersetSettings(BaseModel):
    """Superset: web server address, admin login, and the warehouse connection its dashboards use."""

    enabled: bool = Field(True, description="embedded stack: start Superset and import the dashboards")
    host: str = Field("127.0.0.1", description="Superset web server host")
    port: int = Field(18088, ge=1, le=65535, description="Superset web server port")
    admin_user: str = Field("admin", description="Superset admin login")
    admin_password: SecretStr = Field(SecretStr("admin"), description="Superset admin password")
    admin_email: str = Field("admin@example.com", description="e-mail of the Superset admin user")
    secret_key: SecretStr = Field(
        SecretStr(""), description="Flask SECRET_KEY; generated once into <state_dir>/superset/secret_key when empty"
    )
    venv: str = Field("", description="embedded stack: Superset's own virtualenv; <repo>/.venv-superset when empty")
    threads: int = Field(4, ge=1, description="embedded stack: gunicorn threads of the single Superset worker")
    database_name: str = Field("shopstream warehouse", description="name of the warehouse connection in Superset")

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


class TrainingSettings(BaseModel):
    """Training of the purchase-intent model: schedule, data window and split, tuning budget, gate."""

    schedule: str = Field(
        "0 2 * * *", description="cron (UTC) of the nightly training and degradation check (it also runs when "
                                 "gold features change); empty: only then")
    window_days: int = Field(30, ge=1, description="days of ml.cart_features, back from the newest row, to train on")
    valid_share: float = Field(0.15, gt=0, lt=0.5, description="share of the window (by time) for validation")
    test_share: float = Field(0.15, gt=0, lt=0.5, description="share of the window (most recent) held out for the test")
    min_rows: int = Field(1000, ge=10, description="data check: fewest rows the window must hold")
    min_class_rows: int = Field(20, ge=1, description="data check: fewest positives and negatives in each split")
    trials: int = Field(16, ge=1, description="Ray Tune trials per training run (the DAG form can override)")
    search_space: str = Field("", description="search space YAML; include/shopstream/training/search_space.yaml when empty")
    gate_config: str = Field("", description="gate thresholds YAML; include/shopstream/training/gate.yaml when empty")
    degradation_share: float = Field(
        0.10, gt=0, lt=1,
        description="retrain when the champion's PR-AUC on the newest data is this share below its registered value",
    )
    degradation_days: float = Field(3.0, gt=0, description="days of the newest labelled rows the degradation check scores")
    refresh_hours: float = Field(
        20.0, ge=0, description="a run retrains when the champion is older than this (else only if degraded or forced)"
    )
    seed: int = Field(42, description="seed of the search and the models")
    tune_timeout_s: int = Field(3600, ge=60, description="wall-time budget of a tuning run (local or Ray job): no "
                                "trial starts after it, and the best trials so far are kept")
    tune_backend: Literal["auto", "ray", "sequential"] = Field(
        "auto", description="local tuning: on Ray, sequentially in the task (Optuna, no Ray), or auto: by "
                            "RAY_MIN_ROWS")
    ray_min_rows: int = Field(
        1_000_000, ge=0, description="auto backend: tune on Ray from this many training rows on, sequentially below "
                                   "(the crossover measured by bench/training.py)")
    calibration: Literal["auto", "isotonic", "platt", "none"] = Field(
        "auto", description="calibration of the final model on the validation split; auto: isotonic or Platt, "
                            "whichever cross-fits better (none if neither beats the raw scores)")


class RaySettings(BaseModel):
    """Ray for the Tune trials: a local Ray inside the task, or a cluster's Jobs API when an address is set."""

    address: str = Field(
        "", description="Ray Jobs API (dashboard) URL, e.g. http://ray-head:8265; empty = local Ray in the task"
    )
    auth_token: SecretStr = Field(SecretStr(""), description="token of a cluster with RAY_AUTH_MODE=token (Bearer header)")
    num_cpus: int = Field(2, ge=1, description="local Ray: CPUs it may use")
    cpus_per_trial: int = Field(1, ge=1, description="CPUs (and XGBoost threads) per trial")
    temp_dir: str = Field("", description="local Ray: temp dir; /tmp/ray-<hash of state dir> when empty (short socket paths)")
    poll_interval_s: float = Field(15.0, gt=0, description="cluster: seconds between Ray job status polls (in the triggerer)")
    embedded: bool = Field(True, description="embedded stack: run one long-lived local Ray head that tuning runs "
                                             "connect to (instead of starting a Ray per run)")
    port: int = Field(16382, ge=1, le=65535, description="embedded stack: GCS port of the long-lived local Ray head")


class RedisSettings(BaseModel):
    """Redis: the online feature store of the serving path (Debian's redis-server in the embedded stack)."""

    enabled: bool = Field(True, description="embedded stack: start redis-server (the online feature store)")
    host: str = Field("127.0.0.1", description="Redis host")
    port: int = Field(16379, ge=1, le=65535, description="Redis port")
    db: int = Field(0, ge=0, le=15, description="database number of the online feature store")
    password: SecretStr = Field(SecretStr(""), description="Redis password (AUTH); empty = none (the embedded server)")
    key_prefix: str = Field("ss:", description="prefix of every online feature-store key")

    def url(self) -> str:
        """redis:// URL of the feature-store database."""
        pw = self.password.get_secret_value()
        auth = f":{quote(pw, safe='')}@" if pw else ""
        return f"redis://{auth}{self.host}:{self.port}/{self.db}"


class ServingSettings(BaseModel):
    """The online purchase-intent API (`shopstream serve`) and its feature-store consumer (`shopstream features`)."""

    enabled: bool = Field(
        True, description="embedded stack: start the API and the feature-store consumer (only once a champion exists)"
    )
    host: str = Field("127.0.0.1", description="API host")
    port: int = Field(18000, ge=1, le=65535, description="API port")
    reload_interval_s: float = Field(10.0, gt=0, description="seconds between polls of the `champion` alias")
    max_batch: int = Field(1000, ge=1, description="most events in one POST /predict batch")
    booster_fast_path: bool = Field(
        True,
        description="score with the logged model's booster directly when, on a probe set checked at load, it gives "
        "exactly the pyfunc's probabilities (else the pyfunc's predict)",
    )
    session_ttl_s: int = Field(
        2 * 86400, ge=60, description="a session's online features expire this long after its last event"
    )
    user_ttl_s: int = Field(
        90 * 86400, ge=60,
        description="a user's online features expire this long after their last event (then they start fresh)",
    )
    dedupe_ttl_s: int = Field(86400, ge=60, description="how long an applied event key is kept to drop re-sends")
    feature_log_ttl_s: int = Field(
        3600, ge=60, description="how long the features of each applied cart-add (as of that event) are kept"
    )
    consumer_group: str = Field("shopstream-features", description="consumer group of the feature-store consumer")
    api_key: SecretStr = Field(
        SecretStr(""),
        description="when set, POST /predict and GET /model need it in the X-API-Key header; empty = no key "
        "(the embedded stack, which listens on loopback only)",
    )
    batch_size: int = Field(5000, ge=1, description="feature-store consumer: most events per Redis transaction")
    max_interval_s: float = Field(0.2, gt=0, description="feature-store consumer: longest a partial batch waits")
    max_hold_s: float = Field(
        10.0, ge=0,
        description="feature-store consumer: longest an event waits for the other partitions (time order)",
    )

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


class ClusterSettings(BaseModel):
    """The cluster profile of the embedded stack (`shopstream up --cluster`): docker-compose's multi-process
    topology on one machine, from the same packages and settings (docs/deploy.md, "Scaling out")."""

    enabled: bool = Field(
        False, description="run the cluster profile: a Spark standalone master and workers (SPARK__MASTER points at "
        "it unless set) next to the other services")
    spark_master_port: int = Field(17077, ge=1, le=65535, description="cluster profile: Spark master RPC port")
    spark_ui_port: int = Field(18090, ge=1, le=65535, description="cluster profile: Spark master web UI and JSON API")
    spark_workers: int = Field(1, ge=1, description="cluster profile: Spark standalone workers")
    spark_worker_cores: int = Field(2, ge=1, description="cluster profile: cores each Spark worker offers")
    spark_worker_memory: str = Field("1g", description="cluster profile: memory each Spark worker offers its executors")

    @property
    def spark_master_url(self) -> str:
        return f"spark://127.0.0.1:{self.spark_master_port}"


class Settings(BaseSettings):
    """All of shopstream's configuration. Read it with :func:`get_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    state_dir: Path = Field(REPO_ROOT / ".shopstream", description="embedded stack: all state (git-ignored)")
    postgres: PostgresSettings = PostgresSettings()
    s3: S3Settings = S3Settings()
    kafka: KafkaSettings = KafkaSettings()
    mlflow: MlflowSettings = MlflowSettings()
    airflow: AirflowSettings = AirflowSettings()
    spark: SparkSettings = SparkSettings()
    training: TrainingSettings = TrainingSettings()
    ray: RaySettings = RaySettings()
    pipeline: PipelineSettings = PipelineSettings()
    superset: SupersetSettings = SupersetSettings()
    redis: RedisSettings = RedisSettings()
    serving: ServingSettings = ServingSettings()
    cluster: ClusterSettings = ClusterSettings()

    @model_validator(mode="after")
    def _cluster_profile(self) -> Settings:
        """The cluster profile points what was not set explicitly at its own services."""
        if self.cluster.enabled and "master" not in self.spark.model_fields_set:
            self.spark = self.spark.model_copy(update={"master": self.cluster.spark_master_url})
        if self.cluster.enabled and "executor" not in self.airflow.model_fields_set:
            self.airflow = self.airflow.model_copy(update={"executor": "CeleryExecutor"})
        if self.airflow.executor == "CeleryExecutor" and self.redis.host in ("127.0.0.1", "localhost") \
                and not self.redis.enabled:
            raise ValueError("SHOPSTREAM_AIRFLOW__EXECUTOR=CeleryExecutor needs Redis as its broker, but "
                             "SHOPSTREAM_REDIS__ENABLED=false leaves the embedded redis-server out")
        return self

    # ----------------------------------------------------------------- derived paths
    @property
    def airflow_home(self) -> Path:
        return Path(self.airflow.home) if self.airflow.home else self.state_dir / "airflow"

    @property
    def dags_folder(self) -> Path:
        return Path(self.airflow.dags_folder) if self.airflow.dags_folder else REPO_ROOT / "dags"

    @property
    def plugins_folder(self) -> Path:
        return Path(self.airflow.plugins_folder) if self.airflow.plugins_folder else REPO_ROOT / "plugins"

    # ----------------------------------------------------------------- rendered config
    def s3_env(self) -> dict[str, str]:
        """AWS/MLflow variables that point boto3, MLflow and Tansu at the S3 endpoint."""
        return {
            "AWS_ACCESS_KEY_ID": self.s3.access_key,
            "AWS_SECRET_ACCESS_KEY": self.s3.secret_key.get_secret_value(),
            "AWS_DEFAULT_REGION": self.s3.region,
            "AWS_ENDPOINT_URL_S3": self.s3.endpoint_url,
            "MLFLOW_S3_ENDPOINT_URL": self.s3.endpoint_url,
        }

    def airflow_connections(self) -> dict[str, str]:
        """``AIRFLOW_CONN_*`` variables (JSON form) for every service the DAGs use."""
        pg = self.postgres
        conns = {
            "shopstream_warehouse": {
                "conn_type": "postgres",
                "host": pg.host,
                "port": pg.port,
                "login": pg.user,
                "password": pg.password.get_secret_value(),
                "schema": pg.warehouse_db,
            },
            "shopstream_s3": {
                "conn_type": "aws",
                "login": self.s3.access_key,
                "password": self.s3.secret_key.get_secret_value(),
                "extra": {"endpoint_url": self.s3.endpoint_url, "region_name": self.s3.region},
            },
            "shopstream_kafka": {
                "conn_type": "kafka",
                "extra": self.kafka.client_config(),
            },
            "shopstream_kafka_consumer": {
                "conn_type": "kafka",
                "extra": self.kafka.client_config(**{
                    "group.id": self.kafka.airflow_group,
                    "auto.offset.reset": "earliest",
                    "enable.auto.commit": False,
                    "session.timeout.ms": 6000,
                }),
            },
            "shopstream_mlflow": {
                "conn_type": "http",
                "host": self.mlflow.uri,
            },
            "shopstream_spark": {
                "conn_type": "spark",
                "host": self.spark.master,
            },
            "shopstream_spark_connect": {
                "conn_type": "spark_connect",
                "host": self.spark.connect_host,
                "port": self.spark.connect_port,
            },
        }
        return {f"AIRFLOW_CONN_{cid.upper()}": json.dumps(c) for cid, c in conns.items()}

    def airflow_env(self) -> dict[str, str]:
        """Everything an Airflow process (server, scheduler, task) needs in its environment."""
        a = self.airflow
        env = {
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(self.plugins_folder),
            "AIRFLOW__CORE__EXECUTOR": (PRELOADING_EXECUTOR if a.executor == "LocalExecutor" and a.preload_modules.strip()
                                        else a.executor),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PARALLELISM": str(a.parallelism),
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(a.parallelism),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": str(a.dags_paused_at_creation),
            **self._auth_manager_env(),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{a.base_url}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.postgres.url(
                self.postgres.airflow_db, "postgresql+psycopg2"
            ),
            "AIRFLOW__API__HOST": a.host,
            "AIRFLOW__API__PORT": str(a.port),
            "AIRFLOW__API__BASE_URL": a.ui_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(a.worker_log_port),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(a.trigger_log_port),
            **self._scheduler_health_env(),
            **self._celery_env(),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "MLFLOW_TRACKING_URI": self.mlflow.uri,
            "NO_PROXY": "*",
        }
        env.update(self.airflow_connections())
        env.update(self.s3_env())
        env.update(self.mlflow.client_env())
        return env

    def celery_broker_url(self) -> str:
        """Celery's broker: database ``celery_broker_db`` of the Redis in ``SHOPSTREAM_REDIS__*``."""
        return self.redis.model_copy(update={"db": self.airflow.celery_broker_db}).url()

    def _celery_env(self) -> dict[str, str]:
        if self.airflow.executor != "CeleryExecutor":
            return {}
        return {
            "AIRFLOW__CELERY__BROKER_URL": self.celery_broker_url(),
            # task states: the Airflow database (SQLAlchemy URL with Celery's db+ prefix)
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.postgres.url(self.postgres.airflow_db, "postgresql"),
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.airflow.parallelism),
            # a task still running this long is handed to another worker (Airflow's default, set to keep it quiet)
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "86400",
        }

    def _scheduler_health_env(self) -> dict[str, str]:
        port = self.airflow.scheduler_health_port
        if not port:
            return {"AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False"}
        return {"AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(port)}

    def _auth_manager_env(self) -> dict[str, str]:
        a = self.airflow
        if a.auth_manager == "fab":
            return {"AIRFLOW__CORE__AUTH_MANAGER": FAB_AUTH_MANAGER}
        return {
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{a.admin_user}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(
                self.airflow_home / "simple_auth_manager_passwords.json"
            ),
        }

    def export_env(self) -> dict[str, str]:
        """The ``SHOPSTREAM_*`` variables that reproduce these settings in a child process."""
        out: dict[str, str] = {f"{ENV_PREFIX}STATE_DIR": str(self.state_dir)}
        for section in SECTIONS:
            model: BaseModel = getattr(self, section)
            for name in type(model).model_fields:
                value = getattr(model, name)
                if isinstance(value, SecretStr):
                    value = value.get_secret_value()
                out[f"{ENV_PREFIX}{section.upper()}__{name.upper()}"] = str(value)
        return out

    def spark_env(self) -> dict[str, str]:
        """SPARK_HOME (pip's pyspark) and the Python of this environment for spark-submit and workers."""
        import importlib.util
        import sys

        env = {"PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
        if self.spark.master.startswith("spark://127.0.0.1:"):
            env["SPARK_LOCAL_IP"] = "127.0.0.1"   # a loopback cluster: drivers and executors on loopback too
        spec = importlib.util.find_spec("pyspark")
        if spec and spec.origin and not os.environ.get("SPARK_HOME"):
            env["SPARK_HOME"] = str(Path(spec.origin).parent)
        return env

    def service_env(self) -> dict[str, str]:
        """Full environment for a child process of the stack (settings + rendered tool config)."""
        env = inherited_env()
        env.update(self.export_env())
        env.update(self.airflow_env())
        env.update(self.spark_env())
        import sys

        venv_bin = str(Path(sys.executable).parent)
        if not env.get("PATH", "").startswith(venv_bin):
            env["PATH"] = f"{venv_bin}:{env.get('PATH', '')}"  # spark-submit, airflow, shopstream
        return env


SECTIONS = ("postgres", "s3", "kafka", "mlflow", "airflow", "spark", "pipeline", "superset", "training", "ray",
            "redis", "serving", "cluster")


def setting_fields() -> list[tuple[str, Any, str]]:
    """Every setting as (environment variable, default, description), in declaration order."""
    root = Settings.model_fields["state_dir"]
    out: list[tuple[str, Any, str]] = [(f"{ENV_PREFIX}STATE_DIR", "<repo>/.shopstream", root.description or "")]
    for section in SECTIONS:
        model = Settings.model_fields[section].annotation
        for name, f in model.model_fields.items():
            default = f.default.get_secret_value() if isinstance(f.default, SecretStr) else f.default
            out.append((f"{ENV_PREFIX}{section.upper()}__{name.upper()}", default, f.description or ""))
    return out


def _format_validation_error(err: ValidationError) -> str:
    lines = ["Invalid shopstream settings:"]
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        var = ENV_PREFIX + "__".join(p.upper() for p in loc)
        lines.append(f"  {var}: {e['msg']} (got {e.get('input')!r})")
    lines.append("Fix the environment variable or the .env file and start again.")
    return "\n".join(lines)


#: ``SHOPSTREAM_*`` variables that are not settings but are read elsewhere (the test fixtures)
NOT_SETTINGS = frozenset({"SHOPSTREAM_KEEP_TEST_STATE"})


def unknown_variables(env_file: str | Path | None = ".env") -> list[str]:
    """A line per ``SHOPSTREAM_*`` variable (environment or ``env_file``) that names no setting, with the
    closest known name: a typo must not silently leave the default in force."""
    import difflib

    from dotenv import dotenv_values

    known = {name for name, _, _ in setting_fields()}
    found = {k: "environment" for k in os.environ if k.upper().startswith(ENV_PREFIX)}
    if env_file and Path(env_file).is_file():
        for k in dotenv_values(env_file):
            if k.upper().startswith(ENV_PREFIX):
                found.setdefault(k, f"{Path(env_file).resolve()}")
    lines = []
    for name, source in sorted(found.items()):
        upper = name.upper()
        if upper in known or upper in NOT_SETTINGS:
            continue
        # compare the part after the prefix: the shared prefix would make every name look close
        close = difflib.get_close_matches(upper.removeprefix(ENV_PREFIX), [k.removeprefix(ENV_PREFIX) for k in known],
                                          n=1, cutoff=0.6)
        hint = f"did you mean {ENV_PREFIX}{close[0]}?" if close else "no setting has a similar name"
        lines.append(f"  {name} (from the {source}): unknown setting; {hint}")
    return lines


def placeholders(settings: Settings) -> list[str]:
    """Settings still holding a ``change-me`` placeholder of .env.example, as environment variable names."""
    out = []
    for section in SECTIONS:
        for name, value in getattr(settings, section):
            text = value.get_secret_value() if isinstance(value, SecretStr) else value
            if isinstance(text, str) and text.startswith(PLACEHOLDER_PREFIX):
                out.append(f"{ENV_PREFIX}{section.upper()}__{name.upper()}")
    return out


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment and ``.env``; raise :class:`SettingsError` naming a bad one
    (an invalid value, a ``SHOPSTREAM_*`` variable that is no setting, with the closest known name, or a
    placeholder copied from .env.example: it is no password)."""
    unknown = unknown_variables()
    if unknown:
        raise SettingsError("\n".join([
            "Unknown shopstream settings (a typo would otherwise leave the default in force):", *unknown,
            "Fix or remove the variable (environment or .env file) and start again; every setting is listed in "
            "docs/configuration.md.",
        ]))
    try:
        settings = Settings(**overrides)
    except ValidationError as err:
        raise SettingsError(_format_validation_error(err)) from None
    found = placeholders(settings)
    if found:
        raise SettingsError(
            "Invalid shopstream settings: these still hold the change-me placeholders of .env.example:\n  "
            + "\n  ".join(found) + "\nPut real secrets in .env (e.g. `openssl rand -hex 24`) and start again."
        )
    return settings


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once)."""
    return load_settings()


#: variables that point clients at an S3 endpoint or an MLflow server. A process that starts a stack may carry
#: another stack's values (``training.tracking.configure`` sets them for in-process MLflow): a child of the
#: stack gets this stack's values from the settings, never inherited ones.
CLIENT_POINTER_PREFIXES = ("AWS_", "MLFLOW_S3_ENDPOINT_URL", "MLFLOW_TRACKING_", "MLFLOW_REGISTRY_URI")


def inherited_env() -> dict[str, str]:
    """This process's environment without the client pointers (``AWS_*``, MLflow URI and login) a child must not get."""
    return {k: v for k, v in os.environ.items() if not k.startswith(CLIENT_POINTER_PREFIXES)}


@contextmanager
def environment(env: dict[str, str]) -> Iterator[Settings]:
    """Set ``env`` in ``os.environ`` and yield settings read from it; restore the old values afterwards.

    For processes that start a private stack (tests, benchmarks): the services it starts inherit ``env``.
    """
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    get_settings.cache_clear()
    try:
        yield load_settings()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings.cache_clear()
