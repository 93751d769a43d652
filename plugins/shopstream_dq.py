"""Airflow plugin: the "Data quality" page (suite runs, results and Data Docs) in the Airflow UI.

Airflow 3 plugins extend the api-server with FastAPI apps (``fastapi_apps``, mounted under a URL prefix)
and the React UI with ``external_views`` (a nav entry, or a tab of a DAG run, showing a URL in an
iframe). The app lives in :mod:`shopstream.quality.web`; its routes require Airflow's login (JWT in the
``Authorization`` header or the UI's ``_token`` cookie).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from shopstream.quality.web import app

URL_PREFIX = "/dq"


class ShopstreamDataQualityPlugin(AirflowPlugin):
    name = "shopstream_data_quality"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "shopstream data quality"}]
    external_views = [
        {   # top-level nav entry: the list of suite runs
            "name": "Data quality",
            "href": f"{URL_PREFIX}/",
            "url_route": "data-quality",
            "destination": "nav",
            "nav_top_level": True,
            "icon": f"{URL_PREFIX}/icon.svg",
        },
        {   # a tab on every DAG run: that run's suite results
            "name": "Data quality",
            "href": f"{URL_PREFIX}/?run_id={{RUN_ID}}",
            "url_route": "data-quality-run",
            "destination": "dag_run",
        },
    ]
