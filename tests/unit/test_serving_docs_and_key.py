"""The scoring API's docs pages (packaged assets, no CDN, examples filled in) and its API-key option.

No lifespan runs here (no Redis, no MLflow): only routing, the OpenAPI document and the key check. The pages
rendered in a real browser are in tests/e2e/test_dashboards_browser.py.
"""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from shopstream.serving.app import API_KEY_HEADER, create_app
from shopstream.settings import Settings


def _app(api_key: str = ""):
    s = Settings()
    s = s.model_copy(update={"serving": s.serving.model_copy(update={"api_key": SecretStr(api_key)})})
    return create_app(s, poll=False)


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(_app())


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_packaged_assets(client, page):
    html = client.get(page).text
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url:\s*["']([^"']+)["']""", html)
    urls = [a or b for a, b in urls]
    assert urls, html
    assert not [u for u in urls if u.startswith(("http:", "https:", "//"))], f"{page} loads from elsewhere: {urls}"
    assert "fonts.googleapis" not in html
    for u in urls:
        r = client.get(u)
        assert r.status_code == 200 and len(r.content) > 0, u
    assert any(u.endswith((".js",)) for u in urls)


def test_predict_has_example_requests(client):
    body = client.get("/openapi.json").json()["paths"]["/predict"]["post"]["requestBody"]
    examples = body["content"]["application/json"]["examples"]
    assert set(examples) == {"one cart-add", "a batch"}
    one = examples["one cart-add"]["value"]
    assert one["event_type"] == "cart" and one["user_session"] and one["price"] > 0
    assert len(examples["a batch"]["value"]["events"]) == 2


def test_without_a_key_nothing_asks_for_one(client):
    doc = client.get("/openapi.json").json()
    assert "securitySchemes" not in doc.get("components", {})
    assert client.get("/health").status_code == 200


def test_with_a_key_predict_and_model_need_it():
    c = TestClient(_app("s3cret-key"))
    for method, path in (("POST", "/predict"), ("GET", "/model")):
        for headers in ({}, {API_KEY_HEADER: "wrong"}):
            r = c.request(method, path, json={}, headers=headers)
            assert r.status_code == 401, (path, headers, r.text)
            assert API_KEY_HEADER in r.json()["detail"]
    # with the key the request gets past the check (an empty body is then a 422, not a 401)
    assert c.post("/predict", json={}, headers={API_KEY_HEADER: "s3cret-key"}).status_code == 422
    for path in ("/health", "/docs", "/openapi.json"):
        assert c.get(path).status_code == 200, path
    scheme = c.get("/openapi.json").json()["components"]["securitySchemes"]["APIKeyHeader"]
    assert scheme == {**scheme, "type": "apiKey", "in": "header", "name": API_KEY_HEADER}
