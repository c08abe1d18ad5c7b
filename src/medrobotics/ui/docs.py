"""Interactive API docs (Swagger UI and ReDoc) from the package's own copies of their files."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from medrobotics.ui import VENDOR


def install_docs(app: FastAPI, *, prefix: str) -> None:
    """Serve `{prefix}/docs` (Swagger UI) and `{prefix}/redoc` for `app`'s OpenAPI document.

    FastAPI's own pages load their scripts from a CDN; these load them from
    `{prefix}/docs/assets/`, so the docs work without internet. Create `app` with
    `docs_url=None, redoc_url=None`.
    """
    assets = f"{prefix}/docs/assets"
    # check_dir=False: a checkout without `make assets` still starts (the pages say 404).
    app.mount(assets, StaticFiles(directory=VENDOR, check_dir=False), name=f"{prefix}-docs-assets")
    spec = app.openapi_url or f"{prefix}/openapi.json"
    title = app.title

    @app.get(f"{prefix}/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=spec,
            title=f"{title} - Swagger UI",
            swagger_js_url=f"{assets}/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui/swagger-ui.css",
            swagger_favicon_url=f"{assets}/swagger-ui/favicon-32x32.png",
            # The default validator badge asks a public service about the document.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get(f"{prefix}/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=spec,
            title=f"{title} - ReDoc",
            redoc_js_url=f"{assets}/redoc/redoc.standalone.js",
            redoc_favicon_url=f"{assets}/swagger-ui/favicon-32x32.png",
            with_google_fonts=False,
        )
