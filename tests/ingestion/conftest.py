"""Fixtures for the ingestion service tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from medrobotics import config
from medrobotics.ingestion.app import create_app

GUIDE_SAMPLE = {
    "procedure_id": "test-123",
    "robot_id": "robot-1",
    "timestamp": "2025-10-27T10:00:00",
    "arm_position_x": 100.5,
    "arm_position_y": 200.3,
    "arm_position_z": 150.2,
}


@pytest.fixture
def client(settings: config.Settings, engine: Engine) -> Iterator[TestClient]:
    """The ingestion service on the test's database, lifespan running."""
    with TestClient(create_app(settings, engine=engine), raise_server_exceptions=False) as c:
        yield c
