"""docker-compose.yaml, .env.example and docker/: static checks (no Docker engine needed).

The compose file must validate against the Compose Specification schema, pin every image, give every
long-running service a health check and a memory limit (all limits together within 16 GiB), publish
unique host ports, keep credentials in .env, pass shopstream containers only settings the settings
module reads, and build the shopstream image from the project's own lock. The serving path (features,
serving) must use the redis service on a database Superset does not use, and training the Ray cluster.

Logins (the stack can be exposed): Airflow with the FAB auth manager, MLflow with its basic-auth app, the
scoring API with a key, the change-me placeholders of .env.example refused at start (by the secrets-check
job, run here with /bin/sh, and by the settings module), and one PostgreSQL role per service.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
SCHEMA_FILE = REPO_ROOT.parent / "shared" / "compose-spec.json"
AIRFLOW_DOCKERFILE = "docker/airflow/Dockerfile"
MEMORY_BUDGET = 16 * 1024**3

if str(REPO_ROOT / "include") not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / "include"))

# $$ (a literal $ for the container's shell), ${NAME}, ${NAME:-default}, ${NAME?err}, ... and $NAME.
_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|_AUTH$")
_REQUIRED_REF = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]*\}$")
_SIZE = re.compile(r"^(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>[kmgt]?)b?$", re.IGNORECASE)


# ----------------------------------------------------------------------------- helpers
def _walk_strings(node: Any):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _walk_strings(key)
            yield from _walk_strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk_strings(item)


def _referenced(text: str) -> set[str]:
    return {m["braced"] or m["named"] for m in _VAR.finditer(text) if not m["escaped"]}


def _interpolate(text: str, env: dict[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        if m["escaped"]:
            return "$"
        name = m["braced"] or m["named"]
        op, arg = m["op"] or "", m["arg"] or ""
        value = env.get(name)
        is_set = value is not None and (value != "" or ":" not in op)
        if op.endswith("-"):
            return value if is_set else arg
        if op.endswith("?"):
            if not is_set:
                raise AssertionError(f"required variable {name} is unset: {arg}")
            return value
        if op.endswith("+"):
            return arg if is_set else ""
        return value or ""

    return _VAR.sub(sub, text)


def _interpolate_tree(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return _interpolate(node, env)
    if isinstance(node, dict):
        return {k: _interpolate_tree(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate_tree(v, env) for v in node]
    return node


def _parse_env_file(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
        env[key.strip()] = value.strip()
    return env


def _environment(service: dict) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return {k: (v if sep else None) for k, sep, v in (item.partition("=") for item in env)}
    return {k: (None if v is None else str(v)) for k, v in env.items()}


def _bytes(size: str | int) -> int:
    if isinstance(size, int):
        return size
    m = _SIZE.match(size.strip())
    assert m, f"unreadable memory size {size!r}"
    factor = 1024 ** " kmgt".index(m["unit"].lower() or " ")
    return int(float(m["num"]) * factor)


def _memory_limit(service: dict) -> str | int | None:
    limit = service.get("mem_limit")
    if limit is None:
        limit = (((service.get("deploy") or {}).get("resources") or {}).get("limits") or {}).get("memory")
    return limit


def _is_one_shot(service: dict) -> bool:
    return str(service.get("restart", "no")) == "no"


def _host_ports(service: dict) -> list[tuple[str, int]]:
    out = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            if port.get("published"):
                out.append((str(port.get("host_ip", "0.0.0.0")), int(port["published"])))
            continue
        parts = str(port).split("/")[0].split(":")
        if len(parts) == 3:
            out.append((parts[0], int(parts[1])))
        elif len(parts) == 2:
            out.append(("0.0.0.0", int(parts[0])))
    return out


def _dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        keyword, _, args = buf.strip().partition(" ")
        out.append((keyword.upper(), args.strip()))
        buf = ""
    return out


def _image_tag(image: str) -> str | None:
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def _lock_version(package: str) -> str:
    for line in (REPO_ROOT / "requirements.txt").read_text().splitlines():
        if line.lower().startswith(f"{package}=="):
            return line.split("==", 1)[1].strip()
    raise AssertionError(f"{package} is not pinned in requirements.txt")


def _setting_names() -> set[str]:
    from shopstream.settings import ENV_PREFIX, Settings

    names: set[str] = set()
    for field, info in Settings.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names.update(f"{ENV_PREFIX}{field.upper()}__{sub.upper()}" for sub in annotation.model_fields)
        else:
            names.add(f"{ENV_PREFIX}{field.upper()}")
    return names


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return _parse_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def env_filled(env_example) -> dict[str, str]:
    """.env as a person makes it from .env.example: every change-me placeholder replaced by a secret."""
    return {k: (f"s3cret-{i:02d}-{k.lower()}" if v.startswith("change-me") else v)
            for i, (k, v) in enumerate(env_example.items())}


@pytest.fixture(scope="module")
def compose(raw, env_filled) -> dict:
    """The compose file as docker compose would see it with .env made from .env.example."""
    return _interpolate_tree(raw, env_filled)


@pytest.fixture(scope="module")
def compose_placeholders(raw, env_example) -> dict:
    """The compose file with .env copied from .env.example unchanged (placeholders left in)."""
    return _interpolate_tree(raw, env_example)


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict]:
    return compose["services"]


# ----------------------------------------------------------------------------- tests
def test_validates_against_the_compose_spec_schema(compose):
    if not SCHEMA_FILE.exists():
        pytest.skip(f"Compose Specification schema not found at {SCHEMA_FILE}; cannot validate")
    import json

    import jsonschema

    schema = json.loads(SCHEMA_FILE.read_text())
    validator_cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    validator = validator_cls(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_every_image_is_pinned(services):
    for name, svc in services.items():
        image = svc.get("image")
        assert image or svc.get("build"), f"{name}: neither image nor build"
        if image:
            tag = _image_tag(image)
            assert tag or "@sha256:" in image, f"{name}: image {image!r} has no tag"
            assert tag != "latest", f"{name}: image {image!r} uses :latest"


def test_dockerfile_base_images_are_pinned():
    dockerfiles = sorted((REPO_ROOT / "docker").glob("*/Dockerfile"))
    assert dockerfiles
    for path in dockerfiles:
        stages: set[str] = set()
        for keyword, args in _dockerfile_instructions(path):
            if keyword != "FROM":
                continue
            words = [w for w in args.split() if not w.startswith("--")]
            image = words[0]
            if len(words) >= 3 and words[1].upper() == "AS":
                stages.add(words[2])
            if image in stages or image == "scratch":
                continue
            tag = _image_tag(image)
            assert tag and tag != "latest" and "$" not in image, f"{path}: FROM {image} is not pinned"


def test_base_images_match_the_lock():
    def base_images(dockerfile: str) -> list[str]:
        path = REPO_ROOT / dockerfile
        return [a.split()[0] for k, a in _dockerfile_instructions(path) if k == "FROM"]

    airflow = _lock_version("apache-airflow")
    assert f"apache/airflow:{airflow}-python3.11" in base_images(AIRFLOW_DOCKERFILE)
    pyspark = _lock_version("pyspark")
    assert any(i.startswith(f"apache/spark:{pyspark}-") for i in base_images("docker/spark/Dockerfile"))
    ray = _lock_version("ray")
    assert any(i.startswith(f"rayproject/ray:{ray}-py311") for i in base_images("docker/ray/Dockerfile"))


def test_long_running_services_have_healthchecks(services):
    for name, svc in services.items():
        if _is_one_shot(svc):
            continue
        check = svc.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name}: long-running without healthcheck"


def test_depends_on_waits_for_health_or_completion(services):
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on must use the long form with a condition"
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            expected = "service_completed_successfully" if _is_one_shot(services[dep]) else "service_healthy"
            assert spec.get("condition") == expected, f"{name} -> {dep}: condition should be {expected}"


def test_every_referenced_variable_is_in_env_example(raw, env_example):
    referenced = set().union(*(_referenced(s) for s in _walk_strings(raw)))
    missing = sorted(referenced - env_example.keys())
    assert not missing, f"referenced in docker-compose.yaml but not in .env.example: {missing}"


def test_env_example_names_only_known_settings(env_example):
    unknown = sorted(k for k in env_example if k.startswith("SHOPSTREAM_") and k not in _setting_names())
    assert not unknown, f".env.example names settings the settings module does not read: {unknown}"


def test_shopstream_variables_are_settings(services):
    valid = _setting_names()
    assert "SHOPSTREAM_STATE_DIR" in valid and "SHOPSTREAM_POSTGRES__HOST" in valid
    for name, svc in services.items():
        unknown = sorted(k for k in _environment(svc) if k.startswith("SHOPSTREAM_") and k not in valid)
        assert not unknown, f"{name}: not settings of shopstream.settings.Settings: {unknown}"


def test_shopstream_containers_get_only_settings(services):
    """Processes from the shopstream image get SHOPSTREAM_* only; the rest is rendered from them."""
    for name, svc in services.items():
        if (svc.get("build") or {}).get("dockerfile") != AIRFLOW_DOCKERFILE:
            continue
        others = sorted(k for k in _environment(svc) if not k.startswith("SHOPSTREAM_"))
        assert not others, f"{name}: set these through the settings module instead: {others}"
        hosts = _environment(svc)
        assert hosts["SHOPSTREAM_POSTGRES__HOST"] == "postgres"
        assert hosts["SHOPSTREAM_S3__ENDPOINT_URL"] == "http://minio:9000"
        assert hosts["SHOPSTREAM_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:9092"


def test_no_credential_literals(raw):
    for name, svc in raw["services"].items():
        for key, value in _environment(svc).items():
            if _SECRET_NAME.search(key):
                assert value and _REQUIRED_REF.match(value), (
                    f"{name}: {key} must come from .env as ${{VAR:?message}}, got {value!r}"
                )


def test_host_ports_are_unique_and_loopback(services):
    seen: dict[int, str] = {}
    for name, svc in services.items():
        for host_ip, port in _host_ports(svc):
            assert port not in seen, f"host port {port} published by both {seen[port]} and {name}"
            assert host_ip == "127.0.0.1", f"{name}: port {port} published on {host_ip}"
            seen[port] = name
    assert len(seen) >= 5


def test_memory_limits_fit_a_16_gb_laptop(services):
    total = 0
    for name, svc in services.items():
        limit = _memory_limit(svc)
        assert limit is not None, f"{name}: no mem_limit / deploy.resources.limits.memory"
        total += _bytes(limit)
    assert total <= MEMORY_BUDGET, f"memory limits add up to {total / 1024**3:.2f} GiB (> 16 GiB)"


def test_state_lives_in_named_volumes(compose, services):
    declared = set(compose.get("volumes") or {})
    for name, svc in services.items():
        for mount in svc.get("volumes") or []:
            source, _, rest = (mount if isinstance(mount, str) else f"{mount['source']}:").partition(":")
            if source.startswith((".", "/")):
                assert rest.endswith(":ro"), f"{name}: bind mount {mount!r} must be read-only"
                assert (REPO_ROOT / source).exists(), f"{name}: {source} does not exist in the repo"
                if "docker-entrypoint-initdb.d" in rest:  # sourced, not run, unless executable
                    assert os.access(REPO_ROOT / source, os.X_OK), f"{source} must be executable"
            else:
                assert source in declared, f"{name}: volume {source!r} is not declared"


def test_airflow_image_installs_the_project_lock(services):
    builds = [
        s["build"]
        for s in services.values()
        if (s.get("build") or {}).get("dockerfile") == AIRFLOW_DOCKERFILE
    ]
    assert builds, f"no service builds {AIRFLOW_DOCKERFILE}"
    for build in builds:
        assert (REPO_ROOT / build.get("context", ".")).resolve() == REPO_ROOT
    instructions = _dockerfile_instructions(REPO_ROOT / AIRFLOW_DOCKERFILE)
    copied: list[str] = []
    for keyword, args in instructions:
        words = [w for w in args.split() if not w.startswith("--")]
        if keyword == "COPY" and "requirements.txt" in words[:-1]:
            dest = words[-1]
            copied.append(
                dest if dest.endswith("requirements.txt") else f"{dest.rstrip('/')}/requirements.txt"
            )
    assert copied, "the Dockerfile does not COPY requirements.txt from the repository root"
    installs = [
        args
        for keyword, args in instructions
        if keyword == "RUN" and "pip install" in args and any(f"-r {dest}" in args for dest in copied)
    ]
    assert installs, "the Dockerfile does not `pip install -r` the copied requirements.txt"
    assert any(
        keyword == "RUN" and "--no-deps" in args and "/opt/shopstream" in args
        for keyword, args in instructions
    )


def test_one_shot_jobs_create_topics_and_buckets(raw):
    """kafka-init creates every topic the settings name; minio-init the lake and MLflow buckets."""
    from shopstream.settings import KafkaSettings

    svcs = raw["services"]
    topics = [f"SHOPSTREAM_KAFKA__{f.upper()}" for f in KafkaSettings.model_fields if f.endswith("_topic")]
    assert "SHOPSTREAM_KAFKA__RAW_TOPIC" in topics and "SHOPSTREAM_KAFKA__INVALID_TOPIC" in topics
    script = "\n".join(svcs["kafka-init"]["command"])
    for var in topics:
        assert f"$${{{var}}}" in script and var in _environment(svcs["kafka-init"]), f"kafka-init: {var}"
    script = "\n".join(svcs["minio-init"]["command"])
    for var in ("SHOPSTREAM_S3__LAKE_BUCKET", "SHOPSTREAM_S3__MLFLOW_BUCKET"):
        assert f"$${{{var}}}" in script and var in _environment(svcs["minio-init"]), f"minio-init: {var}"
    assert svcs["producer"].get("profiles") == ["demo"]


def test_settings_render_the_container_view(services, monkeypatch, tmp_path):
    """The airflow-scheduler environment loads and renders Airflow config pointing at service names."""
    from shopstream.settings import load_settings

    for key in [k for k in os.environ if k.startswith("SHOPSTREAM_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no .env: only the container environment
    for key, value in _environment(services["airflow-scheduler"]).items():
        monkeypatch.setenv(key, value or "")
    env = load_settings().airflow_env()
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert "@postgres:5432/airflow" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/shopstream/dags"
    assert env["AIRFLOW_HOME"] == "/opt/airflow"
    assert '"spark://spark-master:7077"' in env["AIRFLOW_CONN_SHOPSTREAM_SPARK"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"   # tasks on the airflow-worker services


# ----------------------------------------------------------------------------- serving path and Ray
def _command_flag(command: list[str], flag: str) -> str:
    for i, word in enumerate(command):
        if word == flag:
            return command[i + 1]
        if word.startswith(f"{flag}="):
            return word.split("=", 1)[1]
    raise AssertionError(f"{flag} not in {command}")


def _container_port(service: dict) -> int:
    (port,) = service["ports"]
    return int(str(port).split(":")[-1])


def test_serving_path_runs_the_shopstream_commands(services):
    """features and serving run the CLI commands, with real health checks, on the names the settings give."""
    import importlib.util

    from shopstream.serving.app import create_app
    from shopstream.settings import load_settings

    features, serving = services["features"], services["serving"]
    assert features["command"] == ["shopstream", "features"]
    assert serving["command"][:2] == ["shopstream", "serve"]
    # Binding differs from the name others use: all interfaces, by flag, not by SHOPSTREAM_SERVING__HOST.
    assert _command_flag(serving["command"], "--host") == "0.0.0.0"
    env = _environment(serving)
    assert env["SHOPSTREAM_SERVING__HOST"] == serving["hostname"] == "serving"
    port = int(env["SHOPSTREAM_SERVING__PORT"])
    assert _container_port(serving) == port
    paths = {route.path for route in create_app(load_settings()).routes}
    test = serving["healthcheck"]["test"]
    assert test[-1] == f"http://localhost:{port}/health" and "/health" in paths, test
    # Before the first champion the API runs and answers /health: no restart loop, and start_period
    # covers loading a champion from MLflow.
    assert serving["restart"] == "unless-stopped"
    assert int(serving["healthcheck"]["start_period"].removesuffix("s")) >= 120
    assert {"mlflow", "redis", "features"} <= set(serving["depends_on"])
    assert {"kafka-init", "redis"} <= set(features["depends_on"])

    # The features check is the consumer-group check of the landing service, for its own group.
    test = features["healthcheck"]["test"]
    script = REPO_ROOT / test[2].removeprefix("/opt/shopstream/")
    assert test[:2] == ["CMD", "python"] and script.exists(), test
    spec = importlib.util.spec_from_file_location("check_consumer", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    settings = load_settings()
    assert module.GROUPS[test[3]](settings) == settings.serving.consumer_group
    landing = services["landing"]["healthcheck"]["test"]
    assert module.GROUPS[landing[3]](settings) == settings.kafka.landing_group


def _superset_redis_dbs() -> set[int]:
    config = (REPO_ROOT / "docker" / "superset" / "superset_config.py").read_text()
    dbs = {int(n) for n in re.findall(r"_redis_cache\((\d+)", config)}
    dbs |= {int(n) for n in re.findall(r"\{_redis\}/(\d+)", config)}
    assert dbs, "superset_config.py: no Redis database numbers found"
    return dbs


def test_serving_path_uses_the_redis_service(raw, services):
    """features and serving reach the redis service, with its password, on a database Superset does not use."""
    redis_cmd = raw["services"]["redis"]["command"]
    password = _command_flag(redis_cmd, "--requirepass")
    redis_port = _command_flag(redis_cmd, "--port") if "--port" in redis_cmd else "6379"
    assert _command_flag(redis_cmd, "--maxmemory-policy") == "noeviction", "feature state must not be evicted"
    for name in ("features", "serving"):
        env = _environment(services[name])
        raw_env = _environment(raw["services"][name])
        assert env["SHOPSTREAM_REDIS__HOST"] == "redis", name
        assert env["SHOPSTREAM_REDIS__PORT"] == redis_port, name
        assert raw_env["SHOPSTREAM_REDIS__PASSWORD"] == password, f"{name}: not the redis service's password"
        assert int(env["SHOPSTREAM_REDIS__DB"]) not in _superset_redis_dbs(), f"{name}: clashes with Superset"
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_training_submits_to_the_ray_cluster(raw, services):
    """Airflow's tasks and triggerer point at ray-head's Jobs API with the token the Ray nodes use."""
    head = raw["services"]["ray-head"]
    port = _command_flag(head["command"], "--dashboard-port")
    token = _environment(head)["RAY_AUTH_TOKEN"]
    for name in ("airflow-scheduler", "airflow-triggerer"):
        env = _environment(services[name])
        assert env["SHOPSTREAM_RAY__ADDRESS"] == f"http://ray-head:{port}", name
        assert _environment(raw["services"][name])["SHOPSTREAM_RAY__AUTH_TOKEN"] == token, name
    assert services["airflow-scheduler"]["depends_on"]["ray-head"]["condition"] == "service_healthy"


def test_settings_render_the_serving_view(services, monkeypatch, tmp_path):
    """The serving environment loads into settings that address Redis, the API and Ray by service name."""
    from shopstream.settings import load_settings

    for key in [k for k in os.environ if k.startswith("SHOPSTREAM_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    env = _environment(services["serving"])
    for key, value in env.items():
        monkeypatch.setenv(key, value or "")
    s = load_settings()
    password = env["SHOPSTREAM_REDIS__PASSWORD"]
    assert s.redis.url() == f"redis://:{password}@redis:6379/0"
    assert s.serving.base_url == "http://serving:8000"
    assert s.ray.address == "http://ray-head:8265"


# ----------------------------------------------------------------------------- logins and roles
def _load_service_settings(service: dict, monkeypatch, tmp_path):
    from shopstream.settings import load_settings

    for key in [k for k in os.environ if k.startswith("SHOPSTREAM_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no .env: only the container environment
    for key, value in _environment(service).items():
        monkeypatch.setenv(key, value or "")
    return load_settings()


def _depends_closure(services: dict, name: str) -> set[str]:
    seen: set[str] = set()
    todo = [name]
    while todo:
        for dep in services[todo.pop()].get("depends_on") or {}:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def _run_secrets_check(service: dict) -> subprocess.CompletedProcess:
    assert service["entrypoint"] == ["/bin/sh", "-c"]
    (script,) = service["command"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **{k: v or "" for k, v in _environment(service).items()}}
    return subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True, timeout=30)


def test_placeholder_secrets_stop_the_stack_at_start(services, compose_placeholders, env_example, raw):
    """secrets-check (run here with /bin/sh) refuses .env.example's placeholders, naming each; all wait for it."""
    placeholders = {k for k, v in env_example.items() if v.startswith("change-me")}
    assert placeholders, ".env.example has no change-me placeholder"
    for key in env_example:
        if _SECRET_NAME.search(key) and not key.endswith(("_USER", "ACCESS_KEY")):   # logins, not secrets
            assert key in placeholders, f".env.example: {key} looks secret but has no change-me placeholder"
    check = raw["services"]["secrets-check"]
    referenced = set().union(*(_referenced(v) for v in _environment(check).values() if v))
    assert placeholders <= referenced, f"secrets-check does not see {sorted(placeholders - referenced)}"

    refused = _run_secrets_check(compose_placeholders["services"]["secrets-check"])
    assert refused.returncode == 1, refused.stdout + refused.stderr
    named = set(refused.stderr.split())
    expected = {k for k, v in _environment(check).items() if v and _referenced(v) & placeholders}
    assert expected and expected <= named, refused.stderr
    passed = _run_secrets_check(services["secrets-check"])
    assert passed.returncode == 0 and "no placeholder" in passed.stdout, passed.stderr

    assert _is_one_shot(services["secrets-check"])
    for name in services:
        if name != "secrets-check":
            assert "secrets-check" in _depends_closure(services, name), f"{name} does not wait for secrets-check"


def test_settings_refuse_placeholders(compose_placeholders, monkeypatch, tmp_path):
    """A shopstream process started with .env.example's placeholders stops, naming the settings to fix."""
    from shopstream.settings import SettingsError

    with pytest.raises(SettingsError) as err:
        _load_service_settings(compose_placeholders["services"]["airflow-scheduler"], monkeypatch, tmp_path)
    for var in ("SHOPSTREAM_POSTGRES__PASSWORD", "SHOPSTREAM_AIRFLOW__ADMIN_PASSWORD", "SHOPSTREAM_MLFLOW__PASSWORD",
                "SHOPSTREAM_SERVING__API_KEY"):
        assert var in str(err.value)
    config = (REPO_ROOT / "docker" / "superset" / "superset_config.py").read_text()
    assert 'startswith("change-me")' in config   # Superset's own config refuses them too


def test_airflow_uses_the_fab_auth_manager(services, monkeypatch, tmp_path):
    """Users and roles (FAB), not the SimpleAuthManager's development login; airflow-init creates the admin."""
    import importlib.util

    from shopstream.settings import FAB_AUTH_MANAGER

    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                 "airflow-init"):
        env = _load_service_settings(services[name], monkeypatch, tmp_path).airflow_env()
        assert env["AIRFLOW__CORE__AUTH_MANAGER"] == FAB_AUTH_MANAGER, name
        assert not [k for k in env if "SIMPLE_AUTH_MANAGER" in k], name
    _lock_version("apache-airflow-providers-fab")
    assert importlib.util.find_spec(FAB_AUTH_MANAGER.rsplit(".", 1)[0]) is not None
    init = (REPO_ROOT / "docker" / "airflow" / "airflow-init.sh").read_text()
    for step in ("airflow fab-db migrate", "airflow sync-perm", '"users", "create"', '"--role", "Admin"',
                 '"users", "reset-password"'):
        assert step in init, f"airflow-init.sh lacks {step}"


def test_mlflow_runs_its_basic_auth_app_and_clients_log_in(services, monkeypatch, tmp_path):
    """mlflow-server.sh (run here with a stand-in `mlflow`) starts the basic-auth app on the MLflow database;
    every shopstream process and the Ray nodes carry the login."""
    s = _load_service_settings(services["mlflow"], monkeypatch, tmp_path)
    assert s.mlflow.auth_enabled and s.mlflow.username and s.mlflow.password.get_secret_value()
    _lock_version("flask-wtf")   # mlflow[auth]: the basic-auth app's CSRF protection

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "mlflow").write_text('#!/bin/sh\necho "ARGS $*"\ncat "$MLFLOW_AUTH_CONFIG_PATH"\n'
                                 'echo "ADMIN $MLFLOW_AUTH_ADMIN_USERNAME"\n'
                                 'test -n "$MLFLOW_AUTH_ADMIN_PASSWORD" && test -n "$MLFLOW_FLASK_SERVER_SECRET_KEY"\n')
    (fake / "mlflow").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPSTREAM_")}
    env.update({k: v or "" for k, v in _environment(services["mlflow"]).items()})
    env["PATH"] = f"{fake}:{Path(sys.executable).parent}:{env.get('PATH', '')}"
    res = subprocess.run(["bash", str(REPO_ROOT / "docker" / "airflow" / "mlflow-server.sh")], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    # the schema is created or migrated before the server starts
    assert out.index("ARGS db upgrade ") < out.index("ARGS server "), out
    assert "--app-name basic-auth" in out and f"ADMIN {s.mlflow.username}" in out, out
    store = re.search(r"database_uri = (\S+)", out)[1]
    assert store.replace("%%", "%") == s.postgres.url(s.postgres.mlflow_db)
    assert f"://{s.postgres.mlflow_user}:" in store   # the MLflow role, not the warehouse's

    for name, svc in services.items():
        if (svc.get("build") or {}).get("dockerfile") == AIRFLOW_DOCKERFILE:
            env = _load_service_settings(svc, monkeypatch, tmp_path).airflow_env()
            assert env["MLFLOW_TRACKING_USERNAME"] == s.mlflow.username, name
            assert env["MLFLOW_TRACKING_PASSWORD"] == s.mlflow.password.get_secret_value(), name
    for name in ("ray-head", "ray-worker"):
        ray_env = _environment(services[name])
        assert ray_env["MLFLOW_TRACKING_USERNAME"] == s.mlflow.username, name
        assert ray_env["MLFLOW_TRACKING_PASSWORD"] == s.mlflow.password.get_secret_value(), name


def test_scoring_api_requires_its_key(services, monkeypatch, tmp_path):
    from fastapi.testclient import TestClient

    from shopstream.serving.app import API_KEY_HEADER, create_app

    s = _load_service_settings(services["serving"], monkeypatch, tmp_path)
    key = s.serving.api_key.get_secret_value()
    assert key
    client = TestClient(create_app(s, poll=False))
    assert client.post("/predict", json={}).status_code == 401
    assert client.post("/predict", json={}, headers={API_KEY_HEADER: key}).status_code == 422   # past the key
    assert client.get("/health").status_code == 200   # the health check needs no key


def test_one_postgres_role_per_service(services, monkeypatch, tmp_path):
    """Each service logs in with its own role; the superuser is none of them; the init script makes each role
    the owner of only its database and closes the databases to the others."""
    pg = _environment(services["postgres"])
    superuser = pg["POSTGRES_USER"]
    scheduler = _load_service_settings(services["airflow-scheduler"], monkeypatch, tmp_path).postgres
    roles = {"warehouse": scheduler.user, "airflow": scheduler.airflow_user, "mlflow": scheduler.mlflow_user,
             "superset": pg["SHOPSTREAM_POSTGRES__SUPERSET_USER"]}
    assert len(set(roles.values())) == 4 and superuser not in roles.values(), roles
    passwords = {pg[f"SHOPSTREAM_POSTGRES__{k}PASSWORD"] for k in ("", "AIRFLOW_", "MLFLOW_", "SUPERSET_")}
    assert len(passwords) == 4 and pg["POSTGRES_PASSWORD"] not in passwords
    # what each service logs in with
    env = _load_service_settings(services["airflow-scheduler"], monkeypatch, tmp_path).airflow_env()
    assert f"://{roles['airflow']}:" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert f'"login": "{roles["warehouse"]}"' in env["AIRFLOW_CONN_SHOPSTREAM_WAREHOUSE"]
    assert f"user={roles['warehouse']} " in scheduler.dsn()
    assert scheduler.url(scheduler.mlflow_db).split("//")[1].startswith(f"{roles['mlflow']}:")
    superset = _environment(services["superset"])
    assert superset["SHOPSTREAM_POSTGRES__SUPERSET_USER"] == roles["superset"]
    assert "SHOPSTREAM_POSTGRES__USER" not in superset and "SHOPSTREAM_POSTGRES__PASSWORD" not in superset
    config = (REPO_ROOT / "docker" / "superset" / "superset_config.py").read_text()
    assert '_required("SHOPSTREAM_POSTGRES__SUPERSET_USER")' in config
    # the init script gets every role and password; each database is owned by its role and closed to PUBLIC
    for var in ("USER", "PASSWORD", "AIRFLOW_USER", "AIRFLOW_PASSWORD", "MLFLOW_USER", "MLFLOW_PASSWORD",
                "SUPERSET_USER", "SUPERSET_PASSWORD"):
        assert f"SHOPSTREAM_POSTGRES__{var}" in pg, f"postgres: SHOPSTREAM_POSTGRES__{var} missing (init script)"
    script = (REPO_ROOT / "docker" / "postgres" / "init-databases.sh").read_text()
    assert "CREATE DATABASE %I OWNER %I" in script and "REVOKE ALL ON DATABASE %I FROM PUBLIC" in script
    assert "NOSUPERUSER" in script


# ----------------------------------------------------------------------------- what would stop a first `up`
TEST_TOOLS = ("pytest", "pytest-timeout", "hypothesis", "ruff", "selenium", "schemathesis")


def test_images_come_from_registries_that_still_serve_them(services):
    """MinIO's community images left Docker Hub: pull them from quay.io, pinned by digest; Redis at a 7.4
    patch release with the 2025-2026 Lua RCE fixes (CVE-2025-49844 fixed in 7.4.6; 7.4.10 the latest)."""
    for name in ("minio", "minio-init"):
        image = services[name]["image"]
        assert image.startswith("quay.io/minio/"), f"{name}: {image} (Docker Hub no longer serves minio/*)"
        assert re.search(r"@sha256:[0-9a-f]{64}$", image), f"{name}: {image} is not pinned by digest"
    for name, svc in services.items():
        image = svc.get("image") or ""
        if image.split(":")[0].endswith("redis"):
            version = tuple(int(p) for p in _image_tag(image).split("-")[0].split("."))
            assert version >= (7, 4, 10), f"{name}: {image} has published CVEs fixed in later 7.4.x"


def test_the_application_is_no_minio_root(raw, services, env_filled):
    """MinIO's root account administers; minio-init gives the application its own user on its buckets only."""
    minio = _environment(services["minio"])
    init = services["minio-init"]
    assert minio["MINIO_ROOT_USER"] != env_filled["SHOPSTREAM_S3__ACCESS_KEY"]
    assert minio["MINIO_ROOT_PASSWORD"] != env_filled["SHOPSTREAM_S3__SECRET_KEY"]
    assert _environment(init)["MINIO_ROOT_PASSWORD"] == minio["MINIO_ROOT_PASSWORD"]
    script = "\n".join(raw["services"]["minio-init"]["command"])
    for step in ('mc admin user add root "$${SHOPSTREAM_S3__ACCESS_KEY}"', "mc admin policy create root shopstream-app",
                 "mc admin policy attach root shopstream-app --user"):
        assert step in script, f"minio-init lacks {step!r}"
    assert '"arn:aws:s3:::*"' not in script   # the policy names the buckets
    for name, svc in services.items():
        if name not in ("minio", "minio-init", "secrets-check"):
            assert not [k for k in _environment(svc) if k.startswith("MINIO_ROOT")], f"{name} sees MinIO's root"


def test_airflow_links_use_the_public_url(services, monkeypatch, tmp_path):
    """Airflow's base_url (the UI's base href, redirects) and the Data quality report links use the URL a
    browser reaches; the containers still call the api-server by its service name."""
    from shopstream.quality.report import report_url

    s = _load_service_settings(services["airflow-scheduler"], monkeypatch, tmp_path)
    env = s.airflow_env()
    public = f"http://127.0.0.1:{_host_ports(services['airflow-apiserver'])[0][1]}"
    assert s.airflow.ui_url == public
    assert env["AIRFLOW__API__BASE_URL"] == public
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    runner = (REPO_ROOT / "include" / "shopstream" / "quality" / "runner.py").read_text()
    assert "report_url(settings.airflow.ui_url" in runner
    assert report_url(s.airflow.ui_url, "manual__1", "gold").startswith(public + "/")


def test_scheduler_health_uses_its_endpoint(services, monkeypatch, tmp_path):
    """The scheduler's health check asks its /health server (enabled by a setting) instead of starting a CLI."""
    scheduler = services["airflow-scheduler"]
    s = _load_service_settings(scheduler, monkeypatch, tmp_path)
    env = s.airflow_env()
    port = s.airflow.scheduler_health_port
    assert port and env["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "True"
    assert env["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT"] == str(port)
    assert scheduler["healthcheck"]["test"] == ["CMD", "curl", "-fsS", f"http://127.0.0.1:{port}/health"]


def test_dashboards_are_imported_by_a_one_shot_job(services, monkeypatch, tmp_path):
    """dashboards-init runs `shopstream dashboards import` against the superset service, with its admin login."""
    job = services["dashboards-init"]
    assert _is_one_shot(job) and job["command"] == ["shopstream", "dashboards", "import"]
    assert job["depends_on"]["superset"]["condition"] == "service_healthy"
    s = _load_service_settings(job, monkeypatch, tmp_path)
    superset = _environment(services["superset"])
    assert s.superset.base_url == f"http://superset:{_container_port(services['superset'])}"
    assert s.superset.admin_user == superset["SUPERSET_ADMIN_USER"]
    assert s.superset.admin_password.get_secret_value() == superset["SUPERSET_ADMIN_PASSWORD"]


def test_production_images_carry_no_test_tools():
    """requirements.txt (what the images install) has no test or lint tools; requirements-dev.txt (only
    `make install`) has them, at the runtime lock's pins for every package both hold."""
    def pins(path: Path) -> dict[str, str]:
        out = {}
        for line in path.read_text().splitlines():
            if "==" in line and not line.startswith((" ", "#")):
                name, version = line.split("==", 1)
                out[name.split("[")[0].lower()] = version.strip()
        return out

    runtime, dev = pins(REPO_ROOT / "requirements.txt"), pins(REPO_ROOT / "requirements-dev.txt")
    assert not [t for t in TEST_TOOLS if t in runtime], "test tools in the production lock"
    assert all(t in dev for t in TEST_TOOLS)
    assert {k: v for k, v in dev.items() if k in runtime and runtime[k] != v} == {}
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "-r requirements.txt -r requirements-dev.txt" in makefile
    for dockerfile in (REPO_ROOT / "docker").glob("*/Dockerfile"):
        assert "requirements-dev" not in dockerfile.read_text(), dockerfile


def test_ray_image_installs_what_the_trials_import():
    """The Ray nodes install docker/ray/packages.txt at the lock's pins, not the whole lock; the list covers
    every third-party import of the code Tune jobs run."""
    import ast
    import importlib.metadata

    text = (REPO_ROOT / "docker" / "ray" / "Dockerfile").read_text()
    assert "-r /opt/shopstream/requirements.txt" not in text and "-c /opt/shopstream/requirements.txt" in text
    listed = {line.split("[")[0].strip().lower() for line in (REPO_ROOT / "docker" / "ray" / "packages.txt")
              .read_text().splitlines() if line.strip() and not line.startswith("#")}
    for package in listed:
        _lock_version(package.replace("_", "-"))
    dists = importlib.metadata.packages_distributions()
    sources = [p for p in (REPO_ROOT / "include" / "shopstream" / "training").glob("*.py")
               if p.stem not in ("operators", "triggers")]   # these run in Airflow, not on Ray
    sources.append(REPO_ROOT / "include" / "shopstream" / "settings.py")
    missing = set()
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "shopstream":
                    continue
                if not {d.lower() for d in dists.get(top, [top])} & listed:
                    missing.add(f"{top} ({path.name})")
    assert not missing, f"imported on the Ray nodes but not in docker/ray/packages.txt: {sorted(missing)}"


# ----------------------------------------------------------------------------- compose = the cluster profile
def _flags(argv: list[str]) -> set[str]:
    return {w.split("=", 1)[0] for w in argv if w.startswith("--")}


def test_compose_services_match_the_cluster_profile(services, monkeypatch, tmp_path):
    """spark-master, spark-worker and airflow-worker run what the embedded cluster profile runs (same main class
    or command, same options), and both render the same executor from the same settings."""
    from shopstream.settings import load_settings
    from shopstream.stack.airflow_server import AirflowService
    from shopstream.stack.spark_cluster import MASTER_CLASS, WORKER_CLASS, SparkClusterService

    compose_env = _load_service_settings(services["airflow-worker"], monkeypatch, tmp_path).airflow_env()
    for key in [k for k in os.environ if k.startswith("SHOPSTREAM_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("SHOPSTREAM_CLUSTER__ENABLED", "true")
    monkeypatch.setenv("SHOPSTREAM_STATE_DIR", str(tmp_path / "state"))
    profile = load_settings()
    embedded = {p.name: list(p.argv) for svc in (SparkClusterService(profile), AirflowService(profile))
                for p in svc.specs()}

    master, worker = embedded["spark-master"], embedded["spark-worker-1"]
    for name, argv, cls in (("spark-master", master, MASTER_CLASS), ("spark-worker", worker, WORKER_CLASS)):
        command = services[name]["command"]
        assert command[0] == "spark-class" and Path(argv[0]).name == "spark-class", name
        assert command[1] == argv[1] == cls, name
        assert _flags(command) <= _flags(argv), f"{name}: compose passes {_flags(command) - _flags(argv)} the profile does not"
    assert services["spark-worker"]["command"][-1] == _environment(services["airflow-worker"])["SHOPSTREAM_SPARK__MASTER"]
    assert worker[-1] == profile.spark.master

    celery = embedded["airflow-celery-worker-1"]
    assert services["airflow-worker"]["command"] == ["airflow", *celery[1:3]]
    for env in (compose_env, profile.airflow_env()):
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    assert compose_env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://:") and \
        compose_env["AIRFLOW__CELERY__BROKER_URL"].endswith("@redis:6379/4")
    assert int(compose_env["AIRFLOW__CELERY__BROKER_URL"].rsplit("/", 1)[1]) not in _superset_redis_dbs() | {0}
