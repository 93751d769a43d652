"""The API's documentation pages, served from packaged assets so they work without internet.

FastAPI's own ``/docs`` and ``/redoc`` load Swagger UI and ReDoc from a CDN, which a machine without internet
(and many company networks) cannot reach: the pages stay blank. Here the same pages load the JavaScript and
CSS from the ``fastapi-offline`` package (Swagger UI and ReDoc's standalone bundle, installed from the lock),
mounted under :data:`ASSETS_PATH`, and ReDoc uses the browser's fonts instead of Google's.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_PATH = "/docs-assets"
ASSET_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")
# Swagger UI: "Try it out" open, with the request body pre-filled from the operation's first example
SWAGGER_UI_PARAMETERS = {"tryItOutEnabled": True, "displayRequestDuration": True, "persistAuthorization": True,
                         "defaultModelsExpandDepth": 0}


def assets_dir() -> Path:
    """The packaged Swagger UI / ReDoc files; a clear error if the package is missing or incomplete."""
    try:
        import fastapi_offline
    except ImportError as e:
        raise RuntimeError("the API docs assets come from the fastapi-offline package: `make install`") from e
    d = Path(fastapi_offline.__file__).resolve().parent / "static"
    missing = [f for f in ASSET_FILES if not (d / f).is_file()]
    if missing:
        raise RuntimeError(f"fastapi-offline at {d} lacks {missing}: reinstall it (`make install`)")
    return d


def add_docs(app: FastAPI) -> None:
    """Serve ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) for ``app``, made with ``docs_url=redoc_url=None``."""
    app.mount(ASSETS_PATH, StaticFiles(directory=assets_dir()), name="docs-assets")
    title = app.title

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_PATH}/favicon.png", with_google_fonts=False,
        )
