"""The API service never loads pyarrow: its image (requirements/api.lock) does not contain it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from medrobotics.config import Settings
from tests.fleet import Fleet

# Runs in a fresh interpreter, as `medrobotics serve api` does: pyarrow is made unimportable,
# the CLI's serve path builds the app, and every GET route answers once on a written fleet.
PROBE = r"""
import importlib.abc, json, re, sys

class NoPyarrow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "pyarrow" or name.startswith("pyarrow."):
            raise ImportError("pyarrow is not in the API image")
        return None

sys.meta_path.insert(0, NoPyarrow())

from fastapi.testclient import TestClient

from medrobotics import cli, server  # what `medrobotics serve api` imports
from medrobotics.config import load

args = json.loads(sys.argv[1])
settings = load(database_url=args["database_url"], environment="test",
                MEDROBOTICS_DATA_DIR=args["data_dir"])
app = server.build(settings, "api")
ids = {"procedure_id": args["procedure_id"], "robot_id": args["robot_id"]}
statuses = {}
with TestClient(app, raise_server_exceptions=False) as client:
    for template, operations in app.openapi()["paths"].items():
        if "get" in operations:
            path = re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], template)
            statuses[template] = client.get(path).status_code
loaded = sorted(m for m in sys.modules if m.startswith("pyarrow"))
print(json.dumps({"statuses": statuses, "pyarrow": loaded}))
"""


def test_serve_api_never_imports_pyarrow(settings: Settings, fleet: Fleet, tmp_path: Path) -> None:
    args = {
        "database_url": settings.database_url,
        "data_dir": str(tmp_path / "data"),
        "procedure_id": fleet.procedures[0].procedure_id,
        "robot_id": fleet.robots[0].robot_id,
    }
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["pyarrow"] == []
    statuses = report["statuses"]
    assert "/api/procedures/{procedure_id}/telemetry" in statuses
    assert "/api/analytics/robot-utilization" in statuses
    failed = {path: code for path, code in statuses.items() if code >= 500}
    assert not failed, f"routes that failed without pyarrow: {failed}"
    assert statuses["/api/robots"] == 200
    assert statuses["/api/procedures/{procedure_id}"] == 200
