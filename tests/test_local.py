"""The whole platform in one command: the deployment guide's commands, logs, clean stops."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import GUIDE_SAMPLE
from tests.support.pgcluster import free_port

PATIENT_MARK = "patient-7f3a"  # a patient id the test ingests and then looks for in the logs


class Platform:
    """`medrobotics up` as a subprocess on free ports."""

    def __init__(self, data_dir: Path, log: Path) -> None:
        self.front, self.api, self.ingestion = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.front}"
        self.log = log
        env = os.environ | {"MEDROBOTICS_LOG_FORMAT": "json", "MEDROBOTICS_ARCHIVE": "0"}
        env.pop("DATABASE_URL", None)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "medrobotics",
                "up",
                "--port",
                str(self.front),
                "--api-port",
                str(self.api),
                "--ingestion-port",
                str(self.ingestion),
                "--data-dir",
                str(data_dir),
            ],
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("platform did not come up:\n" + log.read_text())

    def stop(self, sig: signal.Signals) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    p = Platform(tmp_path / "data", tmp_path / "platform.log")
    yield p
    if p.proc.poll() is None:
        p.proc.kill()
        p.proc.wait()


def log_lines(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_guide_commands_through_the_front_port(platform: Platform, tmp_path: Path) -> None:
    seeded = subprocess.run(
        [
            sys.executable,
            "-m",
            "medrobotics",
            "seed",
            "--url",
            platform.url,
            "--robots",
            "6",
            "--facilities",
            "2",
            "--procedures",
            "60",
            "--telemetry-per-procedure",
            "5",
            "--random-seed",
            "7",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert seeded.returncode == 0, seeded.stderr
    alb = platform.url
    with httpx.Client(timeout=30) as http:
        # Step 3: Verify Deployment.
        assert http.get(f"{alb}/api/health").json()["database"] == "ok"
        assert http.get(f"{alb}/ingest/health").json()["database"] == "ok"
        robots = http.get(f"{alb}/api/robots").json()
        assert robots["total"] == 6 and len(robots["items"]) == 6
        # Testing the Services: the guide's curl body, verbatim.
        r = http.post(
            f"{alb}/ingest/telemetry",
            headers={"Content-Type": "application/json"},
            content=json.dumps(GUIDE_SAMPLE),
        )
        assert r.status_code == 201, r.text
        stats = http.get(f"{alb}/ingest/stats").json()
        assert stats["totals"]["robots"] == 6 and stats["totals"]["procedures"] == 60
        assert stats["totals"]["telemetry"] >= 1
        procs = http.get(f"{alb}/api/procedures?category=urological&limit=10").json()
        assert len(procs["items"]) <= 10
        assert all(p["procedure_category"] == "urological" for p in procs["items"])
        util = http.get(f"{alb}/api/analytics/robot-utilization")
        assert util.status_code == 200 and len(util.json()["robots"]) == 6
        summary = http.get(f"{alb}/api/analytics/outcomes-summary")
        assert summary.status_code == 200 and summary.json()["overall"]["outcomes"] > 0
        # The balancer routes only /api/* and /ingest/*.
        assert http.get(f"{alb}/health").status_code == 404
        assert http.get(f"{alb}/metrics").status_code == 404
        # The services answer on their own ports too.
        assert http.get(f"http://127.0.0.1:{platform.api}/health").status_code == 200
        assert http.get(f"http://127.0.0.1:{platform.ingestion}/health").status_code == 200
    assert platform.stop(signal.SIGINT) == 0


def test_logs_tie_one_request_id_across_both_services(platform: Platform) -> None:
    rid = "req-shared-4242"
    trace = "Root=1-67891233-abcdef012345678912345678"
    headers = {"X-Request-ID": rid, "X-Amzn-Trace-Id": trace}
    with httpx.Client(base_url=platform.url, timeout=30) as http:
        proc = {
            "procedure_id": "p-log-1",
            "robot_id": "robot-1",
            "procedure_category": "cardiac",
            "start_time": "2025-10-27T09:00:00Z",
            "patient_id": PATIENT_MARK,
            "patient_age": 66,
        }
        r = http.post("/ingest/procedure", json=proc, headers=headers)
        assert r.status_code == 201 and r.headers["x-request-id"] == rid
        r = http.get("/api/procedures/p-log-1", headers=headers)
        assert r.status_code == 200 and r.json()["patient_id"] == PATIENT_MARK
        generated = http.get("/api/robots").headers["x-request-id"]
        assert generated and generated != rid
        http.post(
            "/ingest/telemetry", content=b"{broken", headers={"content-type": "application/json"}
        )
    assert platform.stop(signal.SIGTERM) == 0
    lines = log_lines(platform.log)
    mine = [x for x in lines if x.get("request_id") == rid and x.get("event") == "request"]
    assert {x["service"] for x in mine} == {"data-ingestion", "api-service"}
    for x in mine:
        assert {
            "time",
            "level",
            "service",
            "event",
            "request_id",
            "method",
            "route",
            "status",
            "duration_ms",
            "client",
        } <= set(x)
        assert x["trace_id"] == trace
    routes = {x["route"] for x in mine}
    # Route templates, never raw paths with ids.
    assert routes == {"/ingest/procedure", "/api/procedures/{procedure_id}"}
    text = platform.log.read_text()
    assert PATIENT_MARK not in text and 'p-log-1"' not in text.replace('"route"', "")
    assert "{broken" not in text and "patient_age" not in text


def test_stop_waits_for_in_flight_requests(platform: Platform) -> None:
    # A streamed upload that is still arriving when SIGTERM comes must finish and commit.
    samples = [
        {
            "procedure_id": "p-slow",
            "robot_id": "robot-9",
            "timestamp": f"2025-10-27T10:{i // 60:02d}:{i % 60:02d}",
        }
        for i in range(3000)
    ]
    body = [json.dumps(s).encode() + b"\n" for s in samples]
    result: dict[str, Any] = {}

    def slow_body() -> Iterator[bytes]:
        for i, line in enumerate(body):
            if i % 500 == 0:
                time.sleep(0.3)
            yield line

    def upload() -> None:
        with httpx.Client(timeout=60) as http:
            r = http.post(
                f"{platform.url}/ingest/batch?type=telemetry",
                content=slow_body(),
                headers={"content-type": "application/x-ndjson"},
            )
            result["status"], result["body"] = r.status_code, r.json()

    t = threading.Thread(target=upload)
    t.start()
    time.sleep(0.5)
    assert platform.stop(signal.SIGTERM) == 0
    t.join(timeout=60)
    assert result["status"] == 201, result
    assert result["body"]["written"] == 3000
    # Restart on the same data: the acknowledged samples are there.
    again = Platform(platform.log.parent / "data", platform.log)
    try:
        stats = httpx.get(f"{again.url}/ingest/stats", timeout=30).json()
        assert stats["totals"]["telemetry"] == 3000
    finally:
        assert again.stop(signal.SIGINT) == 0
