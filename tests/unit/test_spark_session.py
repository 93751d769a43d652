"""Spark Connect client URLs, the shared session id and the server's command line, from settings."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from shopstream.settings import environment
from shopstream.spark_session import (
    CONNECT_SERVER_CLASS,
    connect_server_argv,
    connect_server_jar,
    shared_session_id,
    with_session_id,
)


def test_session_id_is_added_to_any_connect_url():
    sid = str(uuid.uuid4())
    assert with_session_id("sc://h:15002", sid) == f"sc://h:15002/;session_id={sid}"
    assert with_session_id("sc://h:15002/", sid) == f"sc://h:15002/;session_id={sid}"   # SparkConnectHook's form
    assert with_session_id("sc://h:1/;user_id=a", sid) == f"sc://h:1/;user_id=a;session_id={sid}"


def test_shared_session_id_is_a_stable_uuid4_per_stack_and_generation(tmp_path):
    with environment({"SHOPSTREAM_STATE_DIR": str(tmp_path / "a")}) as a:
        first, again, nxt = shared_session_id(a), shared_session_id(a), shared_session_id(a, 1)
    with environment({"SHOPSTREAM_STATE_DIR": str(tmp_path / "b")}) as b:
        other = shared_session_id(b)
    assert first == again and len({first, nxt, other}) == 3
    assert uuid.UUID(first).version == 4


def test_the_server_jar_ships_with_pyspark_and_the_argv_binds_the_setting(tmp_path):
    jar = connect_server_jar()
    assert jar.name.startswith("spark-connect_") and jar.parent.name == "jars"
    env = {"SHOPSTREAM_SPARK__CONNECT_PORT": "16123", "SHOPSTREAM_SPARK__UI_PORT": "16124",
           "SHOPSTREAM_SPARK__MASTER": "local[2]"}
    with environment(env) as s:
        argv = connect_server_argv(s, tmp_path)
        conns = s.airflow_connections()
    assert argv[argv.index("--class") + 1] == CONNECT_SERVER_CLASS and argv[-1] == str(jar)
    assert argv[argv.index("--master") + 1] == "local[2]"
    assert "spark.connect.grpc.binding.port=16123" in argv and "spark.sql.session.timeZone=UTC" in argv
    assert "spark.ui.enabled=true" in argv and "spark.ui.port=16124" in argv and s.spark.ui_url == "http://127.0.0.1:16124"
    conn = json.loads(conns["AIRFLOW_CONN_SHOPSTREAM_SPARK_CONNECT"])
    assert conn == {"conn_type": "spark_connect", "host": "127.0.0.1", "port": 16123}
    assert Path(s.spark.jdbc_jar).name in " ".join(argv)
