"""`/docs` (Swagger UI) and `/redoc`, rendered with no internet access.

FastAPI's own pages load their scripts, styles and fonts from CDNs; an API run on a closed
network (or a laptop on a plane) would show blank pages. These serve the same pages with
the assets shipped in the `fastapi-offline` wheel (Swagger UI 5, ReDoc 2), mounted under
`STATIC_PATH` of this app, so every URL the pages load is same-origin.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_PATH = "/docs-static"
# The package's `static/` directory: swagger-ui-bundle.js, swagger-ui.css,
# redoc.standalone.js, favicon.png.
_ASSETS_PACKAGE = ("fastapi_offline", "static")

_SWAGGER_PARAMETERS = {
    # Swagger UI asks validator.swagger.io to check the spec unless told not to.
    "validatorUrl": None,
    "persistAuthorization": True,
}


def install_docs(app: FastAPI) -> None:
    """Mount the assets and the two pages; build `app` with `docs_url=redoc_url=None`."""
    app.mount(STATIC_PATH, StaticFiles(packages=[_ASSETS_PACKAGE]), name="docs-static")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=_local(request, openapi_url),
            title=f"{app.title} - Swagger UI",
            swagger_js_url=_local(request, f"{STATIC_PATH}/swagger-ui-bundle.js"),
            swagger_css_url=_local(request, f"{STATIC_PATH}/swagger-ui.css"),
            swagger_favicon_url=_local(request, f"{STATIC_PATH}/favicon.png"),
            swagger_ui_parameters=_SWAGGER_PARAMETERS,
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=_local(request, openapi_url),
            title=f"{app.title} - ReDoc",
            redoc_js_url=_local(request, f"{STATIC_PATH}/redoc.standalone.js"),
            redoc_favicon_url=_local(request, f"{STATIC_PATH}/favicon.png"),
            with_google_fonts=False,
        )


def _local(request: Request, path: str) -> str:
    # Behind a proxy that mounts the API under a prefix, the pages must load from it too.
    return f"{request.scope.get('root_path', '')}{path}"
