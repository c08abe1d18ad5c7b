"""The dashboard's files and the API docs, served from the package with no other host."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from medrobotics import auth
from medrobotics.api.app import create_app as api_app
from medrobotics.config import Settings
from medrobotics.ingestion.app import create_app as ingestion_app
from medrobotics.ui import STATIC, VENDOR

VENDORED = [
    "uplot/uPlot.iife.min.js",
    "uplot/uPlot.min.css",
    "swagger-ui/swagger-ui-bundle.js",
    "swagger-ui/swagger-ui.css",
    "redoc/redoc.standalone.js",
]
URL_ATTRS = re.compile(r"""(?:src|href|url)\s*[:=]\s*["']([^"']+)["']""")


@pytest.fixture
def locked(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    """The API service with keys required."""
    s = settings.model_copy(update={"auth": "required", "auth_cache_seconds": 0})
    with TestClient(api_app(s, engine=engine)) as c:
        yield c


def test_the_vendored_libraries_are_in_the_package() -> None:
    # `make assets` (a step of `make venv`) puts them there from package-lock.json.
    for name in VENDORED:
        assert (VENDOR / name).stat().st_size > 1000, name


@pytest.mark.parametrize(
    "path",
    [
        "/api/dashboard",
        "/api/dashboard/",
        "/api/dashboard/robots",
        "/api/dashboard/robots/r-1",
        "/api/dashboard/procedures?category=cardiac",
        "/api/dashboard/procedures/p%2Fwith%20odd",
    ],
)
def test_every_client_route_serves_the_page_without_a_key(locked: TestClient, path: str) -> None:
    answer = locked.get(path)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    assert answer.text == (STATIC / "index.html").read_text()
    csp = answer.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "http" not in csp


@pytest.mark.parametrize(
    "name",
    [
        "app.js",
        "api.js",
        "dom.js",
        "views.js",
        "charts.js",
        "app.css",
        *[f"vendor/{v}" for v in VENDORED],
    ],
)
def test_static_files_need_no_key(locked: TestClient, name: str) -> None:
    answer = locked.get(f"/api/dashboard/static/{name}")
    assert answer.status_code == 200
    assert answer.content == (STATIC / name).read_bytes()


def test_a_missing_file_is_404_not_the_page(locked: TestClient) -> None:
    assert locked.get("/api/dashboard/static/nope.js").status_code == 404
    assert locked.get("/api/dashboard/static/../../auth.py").status_code == 404


def test_data_still_needs_a_key(locked: TestClient, engine: Engine) -> None:
    assert locked.get("/api/robots").status_code == 401
    key = auth.issue(engine, name="viewer", scopes=["api:read"]).key
    assert locked.get("/api/robots", headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_the_page_loads_only_its_own_files() -> None:
    html = (STATIC / "index.html").read_text()
    urls = URL_ATTRS.findall(html)
    assert urls
    for url in urls:
        assert url.startswith(("/api/dashboard", "/api/docs", "data:")), url
    for script in STATIC.glob("*.js"):
        text = script.read_text()
        assert "http://" not in text and "https://" not in text, script.name
        # the key goes in a header, never in a URL or a log line
        assert "console.log" not in text, script.name


def test_dashboard_routes_stay_out_of_the_openapi_document(locked: TestClient) -> None:
    paths = locked.get("/api/openapi.json").json()["paths"]
    assert not [p for p in paths if "dashboard" in p or p.endswith(("/docs", "/redoc"))]


def _docs(app: FastAPI, prefix: str) -> None:
    with TestClient(app) as c:
        for page in (f"{prefix}/docs", f"{prefix}/redoc"):
            answer = c.get(page)
            assert answer.status_code == 200, page
            urls = URL_ATTRS.findall(answer.text)
            assert any(u.endswith((".js",)) for u in urls), page
            for url in urls:
                assert url.startswith("/"), (page, url)  # nothing from another host
                assert c.get(url).status_code == 200, (page, url)
            assert "fonts.googleapis" not in answer.text
            assert "cdn.jsdelivr" not in answer.text
        assert c.get(f"{prefix}/openapi.json").status_code == 200


def test_api_docs_are_served_locally(settings: Settings, engine: Engine) -> None:
    _docs(api_app(settings, engine=engine), "/api")


def test_ingestion_docs_are_served_locally(settings: Settings, engine: Engine) -> None:
    _docs(ingestion_app(settings, engine=engine), "/ingest")
