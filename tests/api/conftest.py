"""API fixtures: a client on the test's database, and a fleet written to it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from medrobotics.api.app import create_app
from medrobotics.config import Settings
from tests.fleet import Fleet, make_fleet, make_samples, write


@pytest.fixture
def client(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    """A client of the API service on the test's database."""
    with TestClient(create_app(settings, engine=engine)) as c:
        yield c


@pytest.fixture
def fleet(engine: Engine) -> Fleet:
    """Robots, procedures, outcomes, maintenance and telemetry of two procedures, written."""
    fleet = make_fleet()
    fleet.telemetry = make_samples(fleet.procedures[0], count=1000, step_ms=20) + make_samples(
        fleet.procedures[2], count=50, step_ms=1000, seed=5
    )
    return write(engine, fleet)
