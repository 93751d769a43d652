"""Superset configuration for the docker-compose deployment (SUPERSET_CONFIG_PATH points here).

The metadata database is the ``superset`` database of the shared PostgreSQL, reached with Superset's own
role (SHOPSTREAM_POSTGRES__SUPERSET_USER / __PASSWORD, which owns only that database); caches and rate
limits live in Redis.
No value is written here: everything comes from the container environment (see docker-compose.yaml).
"""

from __future__ import annotations

import os
from urllib.parse import quote


def _required(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise RuntimeError(f"{name} is not set: define it in .env (see .env.example)")
    if value.startswith("change-me"):
        raise RuntimeError(f"{name} still holds the change-me placeholder of .env.example: put a real secret in .env")
    return value


SECRET_KEY = _required("SUPERSET_SECRET_KEY")

_pg_user = quote(_required("SHOPSTREAM_POSTGRES__SUPERSET_USER"), safe="")
_pg_password = quote(_required("SHOPSTREAM_POSTGRES__SUPERSET_PASSWORD"), safe="")
_pg_host = os.environ.get("SHOPSTREAM_POSTGRES__HOST", "postgres")
_pg_port = os.environ.get("SHOPSTREAM_POSTGRES__PORT", "5432")
_pg_db = os.environ.get("SHOPSTREAM_POSTGRES__SUPERSET_DB", "superset")
SQLALCHEMY_DATABASE_URI = f"postgresql+psycopg2://{_pg_user}:{_pg_password}@{_pg_host}:{_pg_port}/{_pg_db}"

_redis_password = quote(_required("REDIS_PASSWORD"), safe="")
_redis = f"redis://:{_redis_password}@{os.environ.get('REDIS_HOST', 'redis')}:{os.environ.get('REDIS_PORT', '6379')}"


def _redis_cache(db: int, prefix: str, timeout: int) -> dict:
    return {
        "CACHE_TYPE": "RedisCache",
        "CACHE_DEFAULT_TIMEOUT": timeout,
        "CACHE_KEY_PREFIX": prefix,
        "CACHE_REDIS_URL": f"{_redis}/{db}",
    }


CACHE_CONFIG = _redis_cache(1, "superset_meta_", 300)
DATA_CACHE_CONFIG = _redis_cache(2, "superset_data_", 3600)
RATELIMIT_STORAGE_URI = f"{_redis}/3"

SUPERSET_WEBSERVER_PORT = 8088
ROW_LIMIT = 50_000
