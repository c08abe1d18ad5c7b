"""Analytics answers: ETag, Cache-Control, 304s, and the short-lived shared cache."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, delete

from medrobotics import auth
from medrobotics.api import analytics
from medrobotics.api.app import create_app
from medrobotics.api.caching import AnswerCache, etag_of, matches
from medrobotics.config import Settings
from medrobotics.storage.tables import outcomes, procedures
from tests.fleet import Fleet

ANALYTICS = [
    "/api/analytics/robot-utilization",
    "/api/analytics/outcomes-summary",
    "/api/analytics/procedures-by-category",
    "/api/analytics/procedure-volume",
    "/api/analytics/maintenance-costs",
]
WINDOW = {"start": "2020-01-01T00:00:00Z", "end": "2030-01-01T00:00:00Z"}


def _client(settings: Settings, engine: Engine, **changes: object) -> TestClient:
    return TestClient(create_app(settings.model_copy(update=changes), engine=engine))


@pytest.fixture
def cached(settings: Settings, engine: Engine, fleet: Fleet) -> Iterator[TestClient]:
    # Long enough that nothing expires during a test.
    with _client(settings, engine, analytics_cache_seconds=300) as c:
        yield c


def _forget_procedures(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(delete(outcomes))
        conn.execute(delete(procedures))


@pytest.mark.parametrize("path", ANALYTICS)
def test_answers_carry_etag_and_short_cache_control(cached: TestClient, path: str) -> None:
    first = cached.get(path, params=WINDOW)
    assert first.status_code == 200
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 10
    assert first.headers["cache-control"] == "private, max-age=300"
    again = cached.get(path, params=WINDOW)
    assert again.headers["etag"] == etag
    assert again.json() == first.json()


@pytest.mark.parametrize("path", ANALYTICS)
def test_if_none_match_gets_304_without_body(cached: TestClient, path: str) -> None:
    etag = cached.get(path, params=WINDOW).headers["etag"]
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        answer = cached.get(path, params=WINDOW, headers={"If-None-Match": header})
        assert answer.status_code == 304, header
        assert answer.content == b""
        assert answer.headers["etag"] == etag
    stale = cached.get(path, params=WINDOW, headers={"If-None-Match": '"something-else"'})
    assert stale.status_code == 200 and stale.json()


@pytest.mark.parametrize("path", ANALYTICS)
def test_the_document_lists_the_304_and_the_cache_headers(cached: TestClient, path: str) -> None:
    answers = cached.get("/api/openapi.json").json()["paths"][path]["get"]["responses"]
    assert set(answers["200"]["headers"]) == {"ETag", "Cache-Control"}
    assert set(answers["304"]["headers"]) == {"ETag"}
    assert "content" not in answers["304"]


def test_repeated_requests_are_answered_from_the_cache(cached: TestClient, engine: Engine) -> None:
    path = "/api/analytics/outcomes-summary"
    before = cached.get(path, params=WINDOW).json()
    assert before["overall"]["outcomes"] > 0
    _forget_procedures(engine)
    # The same query (parameters in another order, the same values) is the cached answer ...
    same = cached.get(path, params={"end": WINDOW["end"], "start": WINDOW["start"]}).json()
    assert same == before
    # ... another query is not.
    other = {**WINDOW, "start": "2020-01-01T00:00:01Z"}
    assert cached.get(path, params=other).json()["overall"]["outcomes"] == 0


@pytest.mark.parametrize("path", ANALYTICS)
def test_the_cached_answer_is_what_the_response_model_makes(cached: TestClient, path: str) -> None:
    route = next(r for r in analytics.router.routes if getattr(r, "path", None) == path)
    model = route.response_model  # type: ignore[attr-defined]
    for _ in range(2):  # computed, then from the cache
        answer = cached.get(path, params=WINDOW)
        assert answer.headers["content-type"] == "application/json"
        body = answer.json()
        assert model.model_validate(body).model_dump(mode="json", by_alias=True) == body


def test_zero_seconds_turns_the_cache_off(settings: Settings, engine: Engine, fleet: Fleet) -> None:
    with _client(settings, engine, analytics_cache_seconds=0) as c:
        path = "/api/analytics/outcomes-summary"
        first = c.get(path, params=WINDOW)
        assert first.json()["overall"]["outcomes"] > 0
        assert first.headers["cache-control"] == "private, max-age=0"
        _forget_procedures(engine)
        after = c.get(path, params=WINDOW, headers={"If-None-Match": first.headers["etag"]})
        assert after.status_code == 200
        assert after.json()["overall"]["outcomes"] == 0


def test_each_app_has_its_own_cache(settings: Settings, engine: Engine, fleet: Fleet) -> None:
    path = "/api/analytics/outcomes-summary"
    with _client(settings, engine, analytics_cache_seconds=300) as c:
        assert c.get(path, params=WINDOW).json()["overall"]["outcomes"] > 0
    _forget_procedures(engine)
    with _client(settings, engine, analytics_cache_seconds=300) as c:
        assert c.get(path, params=WINDOW).json()["overall"]["outcomes"] == 0


def test_bad_parameters_are_still_422(cached: TestClient) -> None:
    answer = cached.get("/api/analytics/procedure-volume", params={"interval": "year"})
    assert answer.status_code == 422
    assert "etag" not in answer.headers
    assert answer.json()["error"]["details"][0]["field"] == "interval"


def test_a_cached_answer_still_needs_a_key(
    settings: Settings, engine: Engine, fleet: Fleet
) -> None:
    key = auth.issue(engine, name="dashboard", scopes=["api:read"]).key
    ingest = auth.issue(engine, name="robot", scopes=["ingest:write"]).key
    path = "/api/analytics/robot-utilization"
    with _client(
        settings, engine, auth="required", auth_cache_seconds=0, analytics_cache_seconds=300
    ) as c:
        ok = c.get(path, params=WINDOW, headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200
        assert c.get(path, params=WINDOW).status_code == 401
        etag = {"If-None-Match": ok.headers["etag"]}
        assert c.get(path, params=WINDOW, headers=etag).status_code == 401
        wrong = c.get(path, params=WINDOW, headers={"X-API-Key": ingest, **etag})
        assert wrong.status_code == 403


def test_concurrent_identical_requests_compute_once() -> None:
    cache = AnswerCache(60)
    calls = 0

    async def compute() -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return str(calls).encode()

    async def main() -> list[object]:
        return list(await asyncio.gather(*(cache.get(("k",), compute) for _ in range(20))))

    entries = asyncio.run(main())
    assert calls == 1
    assert {e.data for e in entries} == {b"1"}  # type: ignore[attr-defined]


def test_a_failed_computation_is_not_kept() -> None:
    cache = AnswerCache(60)
    attempts = 0

    async def compute() -> bytes:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RuntimeError("database away")
        return b"ok"

    async def main() -> object:
        with pytest.raises(RuntimeError):
            await cache.get(("k",), compute)
        return await cache.get(("k",), compute)

    assert asyncio.run(main()).data == b"ok"  # type: ignore[attr-defined]
    assert attempts == 2


def test_the_cache_keeps_at_most_its_size() -> None:
    cache = AnswerCache(60, size=3)

    async def main() -> None:
        for i in range(5):
            await cache.get((i,), lambda i=i: asyncio.sleep(0, result=b"%d" % i))

    asyncio.run(main())
    assert [k for k in range(5) if cache.fresh((k,), 0.0) is not None] == [2, 3, 4]


def test_etag_follows_content_and_if_none_match_parsing() -> None:
    assert etag_of(b'{"a":1}') == etag_of(b'{"a":1}')
    assert etag_of(b'{"a":1}') != etag_of(b'{"a":2}')
    tag = etag_of(b'{"a":1}')
    assert matches(tag, tag) and matches(f"W/{tag}", tag) and matches(f'"x" , {tag}', tag)
    assert matches("*", tag)
    assert not matches(None, tag) and not matches("", tag) and not matches('"x"', tag)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_just_expired_answer_is_given_while_the_next_is_computed() -> None:
    clock = Clock()
    cache = AnswerCache(5, clock=clock)
    computed: list[int] = []
    release = asyncio.Event()

    async def compute() -> bytes:
        computed.append(len(computed) + 1)
        if len(computed) > 1:
            await release.wait()
        return b"%d" % computed[-1]

    async def main() -> None:
        assert (await cache.get(("k",), compute)).data == b"1"
        clock.now += 6  # expired, by less than 5 more seconds
        assert (await cache.get(("k",), compute)).data == b"1"  # not waiting for the next
        assert (await cache.get(("k",), compute)).data == b"1"
        await asyncio.sleep(0)
        assert computed == [1, 2]  # one recomputation for both
        release.set()
        for _ in range(3):
            await asyncio.sleep(0)
        assert (await cache.get(("k",), compute)).data == b"2"
        clock.now += 11  # long expired: this caller waits for a new answer
        assert (await cache.get(("k",), compute)).data == b"3"

    asyncio.run(main())
