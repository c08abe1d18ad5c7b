"""Every dashboard page in chromium: charts drawn from real data, only local requests, no errors."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.browser.conftest import KEY_STORAGE, Platform, Watch

pytestmark = pytest.mark.browser

READY = """() => {
  const cards = [...document.querySelectorAll('section.card')];
  return cards.length > 0 && cards.every((c) => c.dataset.state && c.dataset.state !== 'loading');
}"""


def settle(watch: Watch) -> dict[str, str]:
    """Wait until every card has loaded; return each card's title and state."""
    watch.page.wait_for_function(READY, timeout=30_000)
    cards = watch.page.query_selector_all("section.card")
    return {c.query_selector("h2").inner_text(): c.get_attribute("data-state") for c in cards}


def points(watch: Watch, chart: str) -> int:
    """Data points a chart was given (set when uPlot draws it)."""
    box = watch.page.wait_for_selector(f'[data-chart="{chart}"] canvas', timeout=10_000)
    assert box is not None
    value = watch.page.get_attribute(f'[data-chart="{chart}"]', "data-points")
    return int(value or 0)


def a_procedure_with_everything(platform: Platform) -> dict[str, Any]:
    page = platform.get("/api/procedures", status="completed", limit=50)
    for item in page["items"]:
        detail = platform.get(f"/api/procedures/{item['procedure_id']}", platform.quality)
        if detail["outcome"] and detail["telemetry"]["sample_count"] >= 100:
            return dict(detail)
    raise AssertionError("the seeded fleet has no completed procedure with outcome and telemetry")


def test_key_prompt_then_overview(platform: Platform, open_page: Any) -> None:
    watch = open_page()
    page = watch.page
    page.goto(f"{platform.url}/api/dashboard")
    form = page.wait_for_selector("#key-form")
    assert form is not None and "API key" in form.inner_text()
    page.fill("#key-form input[name=key]", "mr_not-a-real-key")
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#key-form >> text=That key was refused")
    page.fill("#key-form input[name=key]", platform.viewer)
    page.click("#key-form button[type=submit]")
    states = settle(watch)
    assert set(states.values()) == {"ready"}, states
    assert points(watch, "volume") > 0
    assert page.evaluate(f"sessionStorage.getItem('{KEY_STORAGE}')") == platform.viewer
    # the key went in headers only: never in a URL
    assert platform.viewer in watch.sent_keys
    assert not [u for u in watch.requests if platform.viewer in u or "mr_not" in u]
    # a key still in the tab's storage is used after a reload; "Change key" forgets it
    page.reload()
    settle(watch)
    page.click("#key-button")
    page.wait_for_selector("#key-form")
    assert page.evaluate(f"sessionStorage.getItem('{KEY_STORAGE}')") is None
    # The first data calls, made before a key was given, were refused: the browser reports them.
    watch.assert_clean(allow=("status of 401",))


def test_overview(platform: Platform, open_page: Any) -> None:
    watch = open_page(platform.viewer)
    watch.page.goto(f"{platform.url}/api/dashboard")
    states = settle(watch)
    assert states == {
        "Fleet by status": "ready",
        "Outcomes": "ready",
        "Procedure volume per week, by category": "ready",
        "Utilization per robot": "ready",
        "Maintenance costs": "ready",
    }
    assert points(watch, "fleet") == 3
    assert points(watch, "volume") > 10
    assert points(watch, "utilization") == 12
    assert 0 < points(watch, "maintenance") <= 15
    text = watch.page.inner_text("main")
    assert "12\nrobots" in text and "complication rate" in text and "total cost" in text
    watch.shot("overview")
    watch.assert_clean()


def test_robots_list_robot_page_and_back(platform: Platform, open_page: Any) -> None:
    watch = open_page(platform.viewer)
    page = watch.page
    page.goto(f"{platform.url}/api/dashboard/robots")
    settle(watch)
    rows = page.query_selector_all("table tbody tr")
    assert len(rows) == 12
    first = rows[0].query_selector("a")
    assert first is not None
    robot_id = first.get_attribute("title") or first.inner_text()
    first.click()
    page.wait_for_url(f"**/api/dashboard/robots/{robot_id}")
    states = settle(watch)
    assert set(states.values()) == {"ready"}, states
    assert points(watch, "robot-volume") > 0
    assert points(watch, "maintenance-history") == 8
    assert robot_id in page.inner_text("h1")
    watch.shot("robot")
    page.go_back()
    page.wait_for_url("**/api/dashboard/robots")
    settle(watch)
    assert len(page.query_selector_all("table tbody tr")) == 12
    # a filter from the robot's page, as a deep link
    page.goto(f"{platform.url}/api/dashboard/robots?status=operational")
    settle(watch)
    for badge in page.query_selector_all("table tbody .badge"):
        assert badge.inner_text() == "operational"
    watch.assert_clean()


def test_procedures_filters_paging_and_back(platform: Platform, open_page: Any) -> None:
    watch = open_page(platform.viewer)
    page = watch.page
    page.goto(f"{platform.url}/api/dashboard/procedures")
    settle(watch)
    page.select_option("select[name=category]", "urological")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**/procedures?category=urological")
    settle(watch)
    rows = page.query_selector_all("table tbody tr")
    assert len(rows) == 50
    assert {r.query_selector_all("td")[2].inner_text() for r in rows} == {"urological"}
    first_page = [r.query_selector("a").get_attribute("title") for r in rows]
    page.click("text=older →")
    page.wait_for_url("**cursor=**")
    settle(watch)
    query = parse_qs(urlsplit(page.url).query)
    assert query["category"] == ["urological"] and query["cursor"]
    second = [
        r.query_selector("a").get_attribute("title")
        for r in page.query_selector_all("table tbody tr")
    ]
    assert second and not set(second) & set(first_page)
    page.go_back()
    page.wait_for_url("**/procedures?category=urological")
    settle(watch)
    again = [
        r.query_selector("a").get_attribute("title")
        for r in page.query_selector_all("table tbody tr")
    ]
    assert again == first_page
    # nothing matches: the empty state
    page.goto(f"{platform.url}/api/dashboard/procedures?robot_id=no-such-robot")
    settle(watch)
    assert "No procedures match these filters." in page.inner_text("main")
    watch.assert_clean()


def test_procedure_page_plots_and_zoom(platform: Platform, open_page: Any) -> None:
    procedure = a_procedure_with_everything(platform)
    pid = procedure["procedure_id"]
    watch = open_page(platform.quality)
    page = watch.page
    page.goto(f"{platform.url}/api/dashboard/procedures/{pid}")
    states = settle(watch)
    assert states == {"Procedure": "ready", "Outcome": "ready", "Telemetry": "ready"}
    charts = ["arm_position_x", "force_feedback_x", "grip_pressure", "system_temperature"]
    charts.append("power_consumption")
    whole = {c: points(watch, c) for c in charts}
    assert all(n >= 100 for n in whole.values()), whole
    text = page.inner_text("main")
    assert procedure["patient_id"] and procedure["patient_id"] in text  # phi:read
    assert procedure["outcome"]["success_status"] in text
    watch.shot("procedure")

    telemetry = [u for u in watch.requests if u.split("?")[0].endswith("/telemetry")]
    assert len(telemetry) == 1
    interval = int(parse_qs(urlsplit(telemetry[0]).query)["interval_ms"][0])
    over = page.query_selector('[data-chart="arm_position_x"] .u-over')
    assert over is not None
    box = over.bounding_box()
    y = box["y"] + box["height"] / 2
    with page.expect_response(lambda r: "/telemetry?" in r.url and "start=" in r.url) as zoomed:
        page.mouse.move(box["x"] + box["width"] * 0.40, y)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.45, y, steps=5)
        page.mouse.up()
    assert zoomed.value.status == 200
    finer = int(parse_qs(urlsplit(zoomed.value.url).query)["interval_ms"][0])
    assert finer < interval
    page.wait_for_selector(".toolbar >> text=zoomed")
    assert "from=" in page.url and "to=" in page.url  # the zoomed view is a deep link
    assert 0 < points(watch, "system_temperature") <= whole["system_temperature"]
    watch.shot("procedure-zoomed")
    page.click("text=Whole procedure")
    page.wait_for_selector(".toolbar >> text=whole procedure")
    assert "from=" not in page.url
    watch.assert_clean()


def test_patient_fields_only_with_phi_read(platform: Platform, open_page: Any) -> None:
    procedure = a_procedure_with_everything(platform)
    watch = open_page(platform.viewer)
    watch.page.goto(f"{platform.url}/api/dashboard/procedures/{procedure['procedure_id']}")
    settle(watch)
    text = watch.page.inner_text("main")
    assert "not shown (needs a key with phi:read)" in text
    assert procedure["patient_id"] not in text
    assert points(watch, "system_temperature") >= 100
    watch.shot("procedure-without-phi")
    watch.assert_clean()


def test_service_unavailable_says_so(platform: Platform, open_page: Any) -> None:
    watch = open_page(platform.viewer)
    body = '{"error": {"code": "unavailable", "message": "database unavailable", "details": []}}'
    watch.page.route(
        "**/api/analytics/**",
        lambda route: route.fulfill(status=503, body=body, content_type="application/json"),
    )
    watch.page.goto(f"{platform.url}/api/dashboard")
    states = settle(watch)
    assert states["Fleet by status"] == "ready"
    assert states["Outcomes"] == "error"
    assert "service is unavailable" in watch.page.inner_text("main")
    assert watch.page.query_selector("text=Try again") is not None
    watch.shot("unavailable")
    watch.assert_clean(allow=("status of 503",))


def test_unknown_page_and_unknown_procedure(platform: Platform, open_page: Any) -> None:
    watch = open_page(platform.viewer)
    watch.page.goto(f"{platform.url}/api/dashboard/nowhere/at/all")
    watch.page.wait_for_selector("h1 >> text=Not found")
    watch.page.goto(f"{platform.url}/api/dashboard/procedures/no-such-procedure")
    settle(watch)
    assert "no procedure 'no-such-procedure'" in watch.page.inner_text("main")
    watch.assert_clean(allow=("status of 404",))


@pytest.mark.parametrize(
    ("path", "ready"),
    [
        ("/api/docs", ".swagger-ui .info .title"),
        ("/api/redoc", "redoc-wrap, .api-content, [role=navigation]"),
        ("/ingest/docs", ".swagger-ui .info .title"),
        ("/ingest/redoc", "redoc-wrap, .api-content, [role=navigation]"),
    ],
)
def test_api_docs_render_with_no_other_host(
    platform: Platform, open_page: Any, path: str, ready: str
) -> None:
    watch = open_page()
    watch.page.goto(platform.url + path)
    watch.page.wait_for_selector(ready, timeout=30_000)
    assert "medrobotics" in watch.page.inner_text("body")
    watch.shot(path.strip("/").replace("/", "-"))
    watch.assert_clean()
