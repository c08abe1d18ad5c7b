"""Every answer matches the schema its route declares (pages are serialized directly)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from pydantic import BaseModel

from medrobotics.domain.outcomes import OutcomePage
from medrobotics.domain.procedures import ProcedureDetail, ProcedurePage
from medrobotics.domain.robots import RobotPage
from tests.fleet import Fleet


def _conforms(model: type[BaseModel], body: dict[str, Any]) -> None:
    model.model_validate(body)
    _no_undeclared(model, body)


def _no_undeclared(model: type[BaseModel], body: Any) -> None:
    assert set(body) <= set(model.model_fields), set(body) - set(model.model_fields)
    for name, info in model.model_fields.items():
        value = body.get(name)
        inner = info.annotation
        args = getattr(inner, "__args__", ())
        sub = next(
            (a for a in (inner, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None
        )
        item = next(
            (
                getattr(a, "__args__", (None,))[0]
                for a in (inner, *args)
                if getattr(a, "__origin__", None) is list
            ),
            None,
        )
        mapping = any(getattr(a, "__origin__", None) is dict for a in (inner, *args))
        if sub is not None and isinstance(value, dict) and not mapping:
            _no_undeclared(sub, value)
        if isinstance(item, type) and issubclass(item, BaseModel) and isinstance(value, list):
            for v in value:
                _no_undeclared(item, v)


def test_pages_and_details_match_their_models(client: TestClient, fleet: Fleet) -> None:
    pid = fleet.procedures[0].procedure_id
    for path, model in [
        ("/api/procedures?limit=500", ProcedurePage),
        ("/api/outcomes?limit=500", OutcomePage),
        ("/api/robots?limit=500", RobotPage),
        (f"/api/procedures/{pid}", ProcedureDetail),
    ]:
        r = client.get(path)
        assert r.status_code == 200, r.text
        _conforms(model, r.json())
        assert "+00:00" in r.text  # times carry an explicit offset
