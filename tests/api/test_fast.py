"""The read fast path answers exactly as the FastAPI routes do, and only the plain case."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine

from medrobotics import auth, config, metrics
from medrobotics.api import fast, outcomes, procedures, robots
from medrobotics.api.app import create_app
from medrobotics.config import Settings
from tests.api.helpers import assert_error
from tests.api.test_app import _down_urls
from tests.fleet import Fleet
from tests.support.logcapture import captured

Answer = tuple[int, bytes, dict[str, str]]


@pytest.fixture
def keys(engine: Engine) -> dict[str, str]:
    """Keys by what they hold: reads, reads with patient data, writes only."""
    return {
        name: auth.issue(engine, name=name, scopes=scopes).key
        for name, scopes in {
            "reader": ["api:read"],
            "clinician": ["api:read", "phi:read"],
            "robot": ["ingest:write"],
        }.items()
    }


@pytest.fixture
def locked(
    settings: Settings, engine: Engine, fleet: Fleet, keys: dict[str, str]
) -> Iterator[TestClient]:
    """The API with keys required and cached; every key already seen once."""
    s = settings.model_copy(update={"auth": "required", "auth_cache_seconds": 300})
    with TestClient(create_app(s, engine=engine), raise_server_exceptions=False) as c:
        for key in keys.values():
            c.get("/api/robots", headers=bearer(key))  # through the app: caches the key
        yield c


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "x-request-id": "req-read-1"}


def both(client: TestClient, path: str, headers: dict[str, str]) -> tuple[Answer, Answer, bool]:
    """GET through the fast path, then through the app alone; say whether it was taken."""
    app: Any = client.app
    reads = app.fast
    before = reads.taken
    one = client.get(path, headers=headers, follow_redirects=False)
    taken = reads.taken > before
    app.fast = None
    try:
        two = client.get(path, headers=headers, follow_redirects=False)
    finally:
        app.fast = reads
    return (
        (one.status_code, one.content, dict(one.headers)),
        (two.status_code, two.content, dict(two.headers)),
        taken,
    )


def _cases(fleet: Fleet) -> list[tuple[str, bool]]:
    pid = fleet.procedures[0].procedure_id
    with_summary = fleet.procedures[2].procedure_id
    return [
        ("/api/procedures", True),
        ("/api/procedures?limit=100", True),
        ("/api/procedures?limit=2", True),
        ("/api/procedures?limit=1&category=cardiac", True),
        ("/api/procedures?limit=3&status=completed&category=general", True),
        (f"/api/procedures?robot_id={fleet.procedures[0].robot_id}&limit=2", True),
        ("/api/procedures?facility_id=fac-boston&limit=2", True),
        ("/api/procedures?surgeon_id=nobody", True),
        ("/api/procedures?robot_id=robot%201&limit=2", True),
        ("/api/outcomes?limit=2", True),
        ("/api/outcomes?success_status=successful&limit=2", True),
        ("/api/outcomes?readmission=true", True),
        ("/api/outcomes?readmission=false&category=cardiac&limit=2", True),
        ("/api/robots", True),
        ("/api/robots?limit=2", True),
        ("/api/robots?limit=2&offset=2", True),
        ("/api/robots?offset=0&status=operational", True),
        ("/api/robots?model=Versius&facility_id=fac-boston", True),
        ("/api/robots?offset=1000000", True),
        (f"/api/procedures/{pid}", True),
        (f"/api/procedures/{with_summary}", True),
        # Not the plain case: the app answers, and the answer is the same.
        ("/api/procedures/no-such-procedure", False),
        (f"/api/procedures/{pid}?verbose=1", False),
        ("/api/procedures/", False),
        ("/api/procedures?limit=0", False),
        ("/api/procedures?limit=501", False),
        ("/api/procedures?limit=050", False),
        ("/api/procedures?limit=%EF%BC%95", False),  # a full-width digit
        ("/api/procedures?limit=-1", False),
        ("/api/procedures?limit=", False),
        ("/api/procedures?category=", False),
        ("/api/procedures?category=dental", False),
        ("/api/procedures?status=done", False),
        ("/api/procedures?robot_id=" + "r" * 129, False),
        ("/api/procedures?cursor=garbage", False),
        ("/api/procedures?start=2020-01-01T00:00:00Z", False),
        ("/api/procedures?end=2020-01-01", False),
        ("/api/procedures?limit=2&limit=3", False),
        ("/api/procedures?colour=blue", False),
        ("/api/outcomes?readmission=1", False),
        ("/api/outcomes?readmission=True", False),
        ("/api/outcomes?success_status=ok", False),
        # Lists paged by cursor refuse `offset` (a 422 naming it): the app's answer.
        ("/api/procedures?offset=50", False),
        ("/api/procedures?limit=2&offset=0&category=cardiac", False),
        ("/api/outcomes?offset=10", False),
        ("/api/robots?offset=1000001", False),
        ("/api/robots?offset=01", False),
        ("/api/robots?status=broken", False),
        ("/api/robots?model=" + "m" * 201, False),
    ]


def test_answers_match_the_app(locked: TestClient, fleet: Fleet, keys: dict[str, str]) -> None:
    for path, plain in _cases(fleet):
        one, two, taken = both(locked, path, bearer(keys["reader"]))
        assert one == two, path
        assert taken is plain, path
        assert one[2]["x-request-id"] == "req-read-1"
        if plain:
            assert one[0] == 200
        if "offset" in path and "robots" not in path:
            assert one[0] == 422 and b'"field":"offset"' in one[1], path


def test_following_next_links_matches_the_app(
    locked: TestClient, fleet: Fleet, keys: dict[str, str]
) -> None:
    for path in (
        "/api/procedures?limit=7&category=general",
        "/api/outcomes?limit=9",
        "/api/robots?limit=2",
    ):
        seen = 0
        while path:
            one, two, taken = both(locked, path, bearer(keys["reader"]))
            assert one == two and taken, path
            page = locked.get(path, headers=bearer(keys["reader"])).json()
            seen += len(page["items"])
            path = page["next"]
        assert seen > 2


@pytest.mark.parametrize(
    ("who", "status"), [("clinician", 200), ("robot", 403), (None, 401), ("unknown", 401)]
)
def test_other_callers_go_to_the_app(
    locked: TestClient, fleet: Fleet, keys: dict[str, str], who: str | None, status: int
) -> None:
    pid = fleet.procedures[0].procedure_id
    headers = bearer(keys.get(who, "mrk_unknown")) if who else {"x-request-id": "req-read-1"}
    for path in ("/api/procedures?limit=2", f"/api/procedures/{pid}", "/api/outcomes"):
        one, two, taken = both(locked, path, headers)
        assert not taken, path
        assert one[0] == two[0] == status, path
        if who == "clinician":
            assert one == two


def test_x_api_key_and_generated_request_ids(
    locked: TestClient, fleet: Fleet, keys: dict[str, str]
) -> None:
    for headers in ({"x-api-key": keys["reader"]}, bearer(keys["reader"]) | {"x-request-id": "!"}):
        one, two, taken = both(locked, "/api/procedures?limit=3", headers)
        assert taken
        rid1, rid2 = one[2].pop("x-request-id"), two[2].pop("x-request-id")
        assert rid1 != rid2 and len(rid1) == 32
        assert one == two


def test_patient_fields_are_never_shown(
    locked: TestClient, fleet: Fleet, keys: dict[str, str]
) -> None:
    pid = fleet.procedures[0].procedure_id
    for path in ("/api/procedures?limit=500", "/api/outcomes?limit=500", f"/api/procedures/{pid}"):
        _, _, taken = both(locked, path, bearer(keys["reader"]))
        assert taken
        text = locked.get(path, headers=bearer(keys["reader"])).text
        for name in ("patient_id", "patient_age", "patient_gender", "surgeon_notes"):
            assert name not in text, (path, name)


def test_rate_limits_hold(settings: Settings, engine: Engine, keys: dict[str, str]) -> None:
    s = settings.model_copy(
        update={"auth": "required", "rate_limit_per_s": 1, "rate_limit_burst": 3}
    )
    with TestClient(create_app(s, engine=engine), raise_server_exceptions=False) as c:
        codes = [c.get("/api/robots", headers=bearer(keys["reader"])).status_code for _ in range(6)]
    assert codes[:3] == [200, 200, 200]
    assert codes[3:] == [429, 429, 429]


def test_understood_parameters_are_the_routes() -> None:
    """Every parameter the fast path reads is one its route declares."""
    routes = {
        route.path: route
        for module in (procedures, outcomes, robots)
        for route in module.router.routes
        if isinstance(route, APIRoute)
    }

    def declared(route: APIRoute) -> set[str]:
        dependant = route.dependant
        return {p.name for d in [dependant, *dependant.dependencies] for p in d.query_params}

    for path, understood in fast.LISTS.items():
        assert set(understood) | {"limit"} <= declared(routes[path]), path
    # The detail route takes no query parameter that the fast path would be ignoring.
    assert not declared(routes["/api/procedures/{procedure_id}"])


@pytest.mark.parametrize("which", [0, 1], ids=["postgresql", "sqlite"])
def test_an_outage_is_the_apps_503(tmp_path: Path, which: int) -> None:
    url = _down_urls(tmp_path)[which]
    settings = config.load(environment="test", MEDROBOTICS_DATA_DIR=str(tmp_path), auth="required")
    engine = create_engine(url)
    app: Any = create_app(settings, engine=engine)
    key = "mrk_reader_key"
    # A key verified before the outage: in the cache, so the fast path takes the request.
    reader = auth.Principal(name="reader", scopes=frozenset({"api:read"}), key_id="k1")
    app.state.guard._cache[auth._token(key)] = (time.monotonic() + 3600, reader)
    with TestClient(app, raise_server_exceptions=False) as client:
        for path in ("/api/outcomes?limit=2", "/api/procedures/p1"):
            response = client.get(path, headers={"Authorization": f"Bearer {key}"})
            assert response.status_code == 503, path
            assert response.headers["retry-after"] == "5"
            assert_error(response, 503, "unavailable")
            app.fast, reads = None, app.fast  # the app alone gives the same answer
            again = client.get(path, headers={"Authorization": f"Bearer {key}"})
            app.fast = reads
            assert again.status_code == 503
            assert set(again.headers) == set(response.headers)
            assert again.json()["error"] | {"request_id": None} == response.json()["error"] | {
                "request_id": None
            }
    engine.dispose()


def test_an_error_inside_the_fast_path_is_a_json_500(
    locked: TestClient,
    fleet: Fleet,
    keys: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    def overflow(*_args: Any) -> None:
        raise OverflowError("date value out of range")

    monkeypatch.setattr(fast, "keyset_page", overflow)  # a list's last step
    monkeypatch.setattr(fast, "strip_phi", overflow)  # a detail's last step
    pid = fleet.procedures[0].procedure_id
    reads: Any = locked.app
    for path, route in (
        ("/api/procedures?limit=2", "/api/procedures"),
        (f"/api/procedures/{pid}", "/api/procedures/{procedure_id}"),
    ):
        labels = {"service": "api-service", "method": "GET", "route": route, "status": "500"}
        seen = metrics.REGISTRY.get_sample_value("medrobotics_requests_total", labels) or 0.0
        before = reads.fast.taken
        with captured(request) as lines:
            response = locked.get(path, headers=bearer(keys["reader"]))
        assert reads.fast.taken == before + 1  # answered by the fast path
        assert_error(response, 500, "internal")
        assert response.headers["x-request-id"] == "req-read-1"
        assert response.json()["error"]["message"] == (
            "internal error; quote the request id to find the log line"
        )
        assert "range" not in response.text
        assert metrics.REGISTRY.get_sample_value("medrobotics_requests_total", labels) == seen + 1
        access = [x for x in lines if x.get("event") == "request"]
        assert [(x["status"], x["route"], x["request_id"]) for x in access] == [
            (500, route, "req-read-1")
        ]
        crashes = [x for x in lines if x.get("event") == "unhandled_error"]
        assert [(x["error_type"], x["request_id"]) for x in crashes] == [
            ("OverflowError", "req-read-1")
        ]
