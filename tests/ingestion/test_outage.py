"""A database outage under load: 503s while it is down, recovery by itself, nothing lost."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select

from medrobotics import config
from medrobotics.ingestion.app import create_app
from medrobotics.storage import migrate
from medrobotics.storage.db import make_engine
from medrobotics.storage.tables import telemetry
from tests.conftest import PG_OK
from tests.support.pgcluster import Cluster, free_port

pytestmark = pytest.mark.skipif(not PG_OK, reason="needs PostgreSQL server binaries")


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    c.start()
    yield c
    c.remove()


def _serve(app: object, port: int) -> tuple[uvicorn.Server, threading.Thread]:
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")  # type: ignore[arg-type]
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(100):
        if server.started:
            break
        time.sleep(0.05)
    return server, thread


def test_outage_mid_load_loses_no_acknowledged_sample(cluster: Cluster, tmp_path: Path) -> None:
    engine = make_engine(cluster.url, pool_size=4)
    migrate.upgrade(engine)
    settings = config.load(database_url=cluster.url, MEDROBOTICS_DATA_DIR=str(tmp_path / "d"))
    port = free_port()
    server, thread = _serve(create_app(settings, engine=engine), port)

    acked: list[str] = []
    refused: list[httpx.Response] = []
    stop = threading.Event()
    lock = threading.Lock()
    t0 = datetime(2025, 10, 27, 10, 0, tzinfo=UTC)

    def client(worker: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            i = 0
            while not stop.is_set() and i < 5000:
                ts = (t0 + timedelta(milliseconds=i * 10 + worker)).isoformat()
                i += 1
                sample = {
                    "procedure_id": f"proc-{worker}",
                    "robot_id": "robot-1",
                    "timestamp": ts,
                    "arm_position_x": float(i),
                }
                try:
                    r = http.post("/ingest/telemetry", json=sample)
                except httpx.HTTPError:
                    continue
                with lock:
                    if r.status_code == 201:
                        acked.append(f"{worker}|{ts}")
                    else:
                        refused.append(r)

    workers = [threading.Thread(target=client, args=(w,)) for w in range(8)]
    for w in workers:
        w.start()
    time.sleep(1.5)
    before_outage = len(acked)
    cluster.stop("immediate")  # a crash: no shutdown checkpoint
    time.sleep(2.0)
    cluster.start()
    time.sleep(3.0)
    stop.set()
    for w in workers:
        w.join(timeout=60)
    server.should_exit = True
    thread.join(timeout=30)

    assert before_outage > 0
    assert refused, "the outage should have been visible to clients"
    assert {r.status_code for r in refused} == {503}
    assert all(r.headers.get("retry-after") for r in refused)
    assert all(r.json()["error"]["code"] == "unavailable" for r in refused)
    # Recovered by itself: samples were acknowledged after the restart too.
    with engine.connect() as conn:
        stored = {
            f"{p.removeprefix('proc-')}|{ts.isoformat()}"
            for p, ts in conn.execute(select(telemetry.c.procedure_id, telemetry.c.timestamp))
        }
        total = conn.execute(select(func.count()).select_from(telemetry)).scalar_one()
    assert len(acked) > before_outage + 10
    missing = set(acked) - stored
    assert not missing, f"{len(missing)} acknowledged samples lost"
    assert total == len(stored)
    engine.dispose()
