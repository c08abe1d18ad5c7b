"""API keys on the ingestion service: refusals, scopes, hashing, limits, start-up refusal."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select, text
from typer.testing import CliRunner

from medrobotics import auth, config
from medrobotics.cli import app as cli
from medrobotics.ingestion.app import create_app
from medrobotics.storage import keys
from medrobotics.storage.tables import api_keys, procedures, telemetry
from tests import factories as f
from tests.conftest import GUIDE_SAMPLE


@pytest.fixture
def locked(settings: config.Settings) -> config.Settings:
    """Settings with authentication required and no verification cache."""
    return settings.model_copy(update={"auth": "required", "auth_cache_seconds": 0})


@pytest.fixture
def client(locked: config.Settings, engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(locked, engine=engine)) as c:
        yield c


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def stored(engine: Engine) -> int:
    with engine.connect() as conn:
        return sum(
            int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for t in (telemetry, procedures)
        )


def _refusals(engine: Engine) -> list[tuple[str, dict[str, str], int]]:
    writer = auth.issue(engine, name="robot", scopes=["ingest:write"])
    reader = auth.issue(engine, name="dashboard", scopes=["api:read"])
    revoked = auth.issue(engine, name="old", scopes=["ingest:write"])
    expired = auth.issue(
        engine,
        name="temp",
        scopes=["ingest:write"],
        expires_at=datetime.now(UTC) - timedelta(seconds=1),
    )
    with engine.begin() as conn:
        keys.set_time(conn, key_id=revoked.key_id, column="revoked_at", at=datetime.now(UTC))
    tampered = writer.key[:-4] + ("AAAA" if not writer.key.endswith("AAAA") else "BBBB")
    return [
        ("missing", {}, 401),
        ("empty bearer", {"Authorization": "Bearer "}, 401),
        ("basic scheme", {"Authorization": "Basic dXNlcjpwdw=="}, 401),
        ("garbage", bearer("not-a-key"), 401),
        ("tampered", bearer(tampered), 401),
        ("revoked", bearer(revoked.key), 401),
        ("expired", bearer(expired.key), 401),
        ("wrong scope", bearer(reader.key), 403),
        ("wrong scope x-api-key", {"X-API-Key": reader.key}, 403),
    ]


def test_every_write_endpoint_refuses_bad_keys_and_writes_nothing(
    client: TestClient, engine: Engine
) -> None:
    cases = _refusals(engine)
    posts = [
        ("/ingest/telemetry", GUIDE_SAMPLE),
        ("/ingest/procedure", f.procedure(1)),
        ("/ingest/robot", f.robot(1)),
        ("/ingest/outcome", f.outcome(1)),
        ("/ingest/maintenance", f.visit(1)),
        ("/ingest/batch", {"type": "telemetry", "records": f.samples(3)}),
    ]
    for name, headers, status in cases:
        for path, body in posts:
            r = client.post(path, json=body, headers=headers)
            assert r.status_code == status, (name, path, r.text)
            assert r.json()["error"]["code"] in ("unauthorized", "forbidden")
            if status == 401:
                assert r.headers["www-authenticate"] == "Bearer"
    assert stored(engine) == 0


def test_stats_needs_a_key_health_does_not(client: TestClient, engine: Engine) -> None:
    assert client.get("/ingest/stats").status_code == 401
    assert client.get("/health").status_code == 200
    assert client.get("/ingest/health").status_code == 200
    reader = auth.issue(engine, name="dash", scopes=["api:read"])
    assert client.get("/ingest/stats", headers=bearer(reader.key)).status_code == 200


def test_valid_keys_write(client: TestClient, engine: Engine) -> None:
    writer = auth.issue(engine, name="robot", scopes=["ingest:write"])
    assert (
        client.post("/ingest/telemetry", json=GUIDE_SAMPLE, headers=bearer(writer.key)).status_code
        == 201
    )
    sample = GUIDE_SAMPLE | {"timestamp": "2025-10-27T10:00:01"}
    assert (
        client.post("/ingest/telemetry", json=sample, headers={"X-API-Key": writer.key}).status_code
        == 201
    )
    assert stored(engine) == 2


def test_bootstrap_key(locked: config.Settings, engine: Engine) -> None:
    boot = "bootstrap-" + "x" * 40
    s = locked.model_copy(update={"bootstrap_key": config.SecretStr(boot)})
    with TestClient(create_app(s, engine=engine)) as c:
        assert (
            c.post("/ingest/telemetry", json=GUIDE_SAMPLE, headers=bearer(boot)).status_code == 201
        )
        assert (
            c.post("/ingest/telemetry", json=GUIDE_SAMPLE, headers=bearer(boot + "y")).status_code
            == 401
        )


def test_keys_are_not_recoverable_from_the_database(engine: Engine) -> None:
    issued = auth.issue(engine, name="robot", scopes=["ingest:write"])
    secret = issued.key.split("_", 2)[2]
    with engine.connect() as conn:
        row = conn.execute(select(api_keys)).mappings().one()
        dump = " ".join(str(v) for v in row.values())
        if engine.dialect.name == "postgresql":
            dump += str(conn.execute(text("SELECT api_keys::text FROM api_keys")).scalar())
    assert secret not in dump and issued.key not in dump
    assert len(row["secret_hash"]) == 64 and row["salt"]


def test_rate_limit_answers_429_with_retry_after(locked: config.Settings, engine: Engine) -> None:
    s = locked.model_copy(update={"rate_limit_per_s": 0.01, "rate_limit_burst": 3})
    writer = auth.issue(engine, name="robot", scopes=["ingest:write"])
    with TestClient(create_app(s, engine=engine)) as c:
        codes = []
        for i in range(5):
            sample = GUIDE_SAMPLE | {"timestamp": f"2025-10-27T10:00:0{i}"}
            r = c.post("/ingest/telemetry", json=sample, headers=bearer(writer.key))
            codes.append(r.status_code)
        assert codes == [201, 201, 201, 429, 429]
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["code"] == "rate_limited"
    assert stored(engine) == 3


def test_unknown_scope_is_refused(engine: Engine) -> None:
    with pytest.raises(ValueError, match="scopes"):
        auth.issue(engine, name="x", scopes=["root"])


@pytest.mark.parametrize(
    "overrides",
    [
        {
            "environment": "production",
            "MEDROBOTICS_AUTH": "off",
            "database_url": "postgresql://u@db/x",
        },
        {"host": "0.0.0.0", "MEDROBOTICS_AUTH": "off"},
    ],
)
def test_open_service_in_public_refuses_to_start(overrides: dict[str, str]) -> None:
    with pytest.raises(config.ConfigError, match="MEDROBOTICS_AUTH=off is refused"):
        config.load(**overrides)


def test_public_bind_requires_auth_by_default() -> None:
    assert config.load(host="0.0.0.0").auth_required
    assert config.load(environment="production", database_url="postgresql://u@db/x").auth_required
    assert not config.load(host="127.0.0.1").auth_required


def test_cli_serve_refuses_open_public_bind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDROBOTICS_AUTH", "off")
    result = CliRunner().invoke(cli, ["serve", "ingestion", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "MEDROBOTICS_AUTH=off is refused" in result.output


def test_cli_keys_lifecycle(
    settings: config.Settings, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", engine.url.render_as_string(hide_password=False))
    runner = CliRunner()
    made = runner.invoke(
        cli,
        [
            "keys",
            "create",
            "--name",
            "robot-7",
            "--scope",
            "ingest:write",
            "--scope",
            "api:read",
            "--expires-days",
            "30",
        ],
    )
    assert made.exit_code == 0, made.output
    key = made.stdout.strip().splitlines()[-1]
    assert key.startswith("mrk_")
    key_id = key.split("_")[1]
    listed = runner.invoke(cli, ["keys", "list"])
    assert key_id in listed.output and "robot-7" in listed.output and key not in listed.output
    assert runner.invoke(cli, ["keys", "revoke", key_id]).exit_code == 0
    assert "revoked" in runner.invoke(cli, ["keys", "list"]).output
    assert runner.invoke(cli, ["keys", "revoke", "0" * 16]).exit_code == 1
    s = settings.model_copy(update={"auth": "required", "auth_cache_seconds": 0})
    with TestClient(create_app(s, engine=engine)) as c:
        assert (
            c.post("/ingest/telemetry", json=GUIDE_SAMPLE, headers=bearer(key)).status_code == 401
        )
