"""Build both service images with podman and run them for real against PostgreSQL.

Run by CI through `.ci/containers.sh` (which installs and configures podman).
Skipped when podman is missing, except under CI, where that is a failure.

Knobs (environment):
  MEDROBOTICS_CONTAINER_BASE   base image build argument (default python:3.12-slim)
  TEST_DATABASE_URL            admin URL of the PostgreSQL server the containers use, as
                               in tests/conftest.py (default postgresql+psycopg://postgres@127.0.0.1:5432/test)

Networking: each service container gets its own network namespace through
slirp4netns (user-mode networking, as rootless podman uses), so it binds its
image defaults (HOST=0.0.0.0, PORT=8080/5000) exactly as on ECS; its port is
published on 127.0.0.1 of the host only, and it reaches the host's PostgreSQL
at 10.0.2.2 (slirp4netns' address of the host loopback). Builds use the host
network. Neither adds a bridge, an iptables rule or IP forwarding; a fixture
compares iptables and ip_forward before and after, and removes anything added.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

pytestmark = [pytest.mark.containers, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[2]
BASE = os.environ.get("MEDROBOTICS_CONTAINER_BASE", "python:3.12-slim")
PG_ADMIN_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
NON_ROOT_UID = "10001"
SLIRP = "slirp4netns:allow_host_loopback=true,port_handler=slirp4netns"
SLIRP_HOST = "10.0.2.2"  # the host's loopback, seen from a slirp4netns container
STOP_TIMEOUT_S = 30  # ECS's default stopTimeout
# Files podman itself bind-mounts into every container (they show in `podman diff`).
PODMAN_MOUNT_POINTS = frozenset(
    {
        "/etc",
        "/etc/hosts",
        "/etc/hostname",
        "/etc/resolv.conf",
        "/run",
        "/run/.containerenv",
        "/run/secrets",
        "/dev",
        "/proc",
        "/sys",
    }
)

TELEMETRY = {
    "procedure_id": "test-123",
    "robot_id": "robot-1",
    "timestamp": "2025-10-27T10:00:00",
    "arm_position_x": 100.5,
    "arm_position_y": 200.3,
    "arm_position_z": 150.2,
}
PROCEDURE = {
    "procedure_id": "test-123",
    "robot_id": "robot-1",
    "procedure_type": "Radical Prostatectomy",
    "procedure_category": "urological",
    "start_time": "2025-10-27T09:30:00Z",
    "status": "in_progress",
}


# --------------------------------------------------------------------------- helpers


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def podman(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run one podman command; on failure raise with its output."""
    proc = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(
    method: str, url: str, body: Any = None, *, key: str | None = None, timeout: float = 10
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if key is not None:
        req.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as err:
        raw, status = err.read(), err.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def _iptables_rules() -> dict[str, list[str]]:
    """Rules per table (empty when iptables is not usable here)."""
    out: dict[str, list[str]] = {}
    if shutil.which("iptables-save") is None:
        return out
    for table in ("filter", "nat"):
        proc = subprocess.run(
            ["iptables-save", "-t", table], capture_output=True, text=True, check=False
        )
        if proc.returncode == 0:
            out[table] = [line for line in proc.stdout.splitlines() if line.startswith((":", "-A"))]
    return out


def _ip_forward() -> str | None:
    try:
        return Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
    except OSError:
        return None


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def run_id() -> str:
    if shutil.which("podman") is None:
        if _in_ci():
            pytest.fail("podman is required in CI (run .ci/containers.sh)")
        pytest.skip("podman not installed")
    return secrets.token_hex(4)


@pytest.fixture(scope="module", autouse=True)
def network_hygiene(run_id: str) -> Iterator[None]:
    """Leave the host's firewall and forwarding as found, and say if podman touched them."""
    rules_before, forward_before = _iptables_rules(), _ip_forward()
    yield
    rules_after, forward_after = _iptables_rules(), _ip_forward()
    added = {
        table: [r for r in rules if r not in rules_before.get(table, [])]
        for table, rules in rules_after.items()
    }
    for table, rules in added.items():
        # Delete added rules first, then added chains (only podman/CNI/netavark ones).
        for rule in rules:
            if rule.startswith("-A") and any(k in rule for k in ("CNI", "NETAVARK", "podman")):
                subprocess.run(
                    ["iptables", "-t", table, "-D", *rule.split()[1:]],
                    capture_output=True,
                    check=False,
                )
        for rule in rules:
            if rule.startswith(":") and any(k in rule for k in ("CNI", "NETAVARK", "podman")):
                chain = rule[1:].split()[0]
                subprocess.run(
                    ["iptables", "-t", table, "-F", chain], capture_output=True, check=False
                )
                subprocess.run(
                    ["iptables", "-t", table, "-X", chain], capture_output=True, check=False
                )
    if forward_before is not None and forward_after != forward_before:
        Path("/proc/sys/net/ipv4/ip_forward").write_text(forward_before)
    assert not any(added.values()), f"podman changed iptables: {added}"
    assert forward_after == forward_before, "podman changed net.ipv4.ip_forward"


@dataclass(frozen=True)
class Images:
    ingestion: str
    api: str
    build_seconds: float


@pytest.fixture(scope="module")
def images(run_id: str) -> Iterator[Images]:
    tags = Images(
        ingestion=f"localhost/medrobotics-data-ingestion:test-{run_id}",
        api=f"localhost/medrobotics-api-service:test-{run_id}",
        build_seconds=0.0,
    )
    revision = (
        subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()
        or "unknown"
    )
    start = time.monotonic()
    built: list[str] = []
    try:
        for dockerfile, tag in (
            ("services/data-ingestion/Dockerfile", tags.ingestion),
            ("services/api-service/Dockerfile", tags.api),
        ):
            podman(
                "build",
                "--format",
                "docker",  # OCI format drops HEALTHCHECK
                "--network",
                "host",
                "--build-arg",
                f"BASE={BASE}",
                "--build-arg",
                f"REVISION={revision}",
                "--build-arg",
                "CREATED=" + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "-f",
                dockerfile,
                "-t",
                tag,
                str(ROOT),
                timeout=900,
            )
            built.append(tag)
        yield Images(tags.ingestion, tags.api, time.monotonic() - start)
    finally:
        for tag in built:
            podman("rmi", "-f", tag, check=False)


@pytest.fixture(scope="module")
def database_url(run_id: str) -> Iterator[str]:
    """A fresh database for this run, as the containers' DATABASE_URL."""
    import psycopg

    name = f"mr_containers_{run_id}"
    parts = urlsplit(PG_ADMIN_URL)
    admin = urlunsplit(("postgresql", parts.netloc, parts.path, parts.query, ""))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    netloc = parts.netloc
    if parts.hostname in ("127.0.0.1", "localhost"):
        netloc = netloc.replace(parts.hostname, SLIRP_HOST, 1)
    url = urlunsplit(("postgresql+psycopg", netloc, f"/{name}", "", ""))
    try:
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Containers:
    """Containers started by the test: removed (with anonymous volumes) at the end."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.names: list[str] = []

    def run_args(self, env: dict[str, str], publish: dict[int, int] | None = None) -> list[str]:
        args = [
            "--network",
            SLIRP,
            # the read-only claim: nothing but /tmp is writable
            "--read-only",
            "--tmpfs",
            "/tmp:rw,nosuid,nodev,size=64m",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
        ]
        for host_port, container_port in (publish or {}).items():
            args += ["-p", f"127.0.0.1:{host_port}:{container_port}"]
        for key, value in env.items():
            args += ["-e", f"{key}={value}"]
        return args

    def start(self, role: str, image: str, env: dict[str, str], publish: dict[int, int]) -> str:
        name = f"mr-{role}-{self.run_id}"
        self.names.append(name)
        podman("run", "-d", "--name", name, *self.run_args(env, publish), image)
        return name

    def logs(self, name: str) -> str:
        proc = podman("logs", name, check=False)
        return proc.stdout + proc.stderr

    def remove_all(self) -> None:
        for name in self.names:
            podman("rm", "-f", "-v", "-t", "0", name, check=False)


@pytest.fixture(scope="module")
def containers(run_id: str) -> Iterator[Containers]:
    c = Containers(run_id)
    try:
        yield c
    finally:
        for name in c.names:  # shown by pytest when something failed
            print(f"----- podman logs {name} -----\n{c.logs(name)[-6000:]}")
        c.remove_all()


@dataclass(frozen=True)
class Stack:
    ingestion: str
    api: str
    ingestion_url: str
    api_url: str
    env: dict[str, str]
    key: str


def service_env(database_url: str) -> dict[str, str]:
    """What the task definition sets; HOST and PORT stay the image's defaults.

    Bound to 0.0.0.0, the services require API keys (the default off loopback).
    """
    return {"DATABASE_URL": database_url, "ENVIRONMENT": "test"}


def wait_healthy(name: str, logs: Any, timeout: float = 90) -> None:
    """Call the image's HEALTHCHECK ourselves (no systemd timer here) until it passes."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        state = podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
        if state != "running":
            raise AssertionError(f"{name} is {state}:\n{logs(name)}")
        last = podman("healthcheck", "run", name, check=False)
        if last.returncode == 0:
            return
        time.sleep(1)
    raise AssertionError(
        f"{name} never healthy: {last and last.stdout + last.stderr}\n{logs(name)}"
    )


@pytest.fixture(scope="module")
def stack(images: Images, database_url: str, containers: Containers) -> Stack:
    ingestion_port, api_port = free_port(), free_port()
    env = service_env(database_url)
    # 1. migration, as the compose file and the ECS deployment run it: one-off, before the services
    migrate = podman(
        "run",
        "--rm",
        *containers.run_args(env),
        images.ingestion,
        "medrobotics",
        "db",
        "upgrade",
        check=False,
        timeout=180,
    )
    assert migrate.returncode == 0, f"migration failed:\n{migrate.stdout}\n{migrate.stderr}"
    # an API key, made the way an operator makes one: a one-off container
    created = podman(
        "run",
        "--rm",
        *containers.run_args(env),
        images.ingestion,
        "medrobotics",
        "keys",
        "create",
        "--name",
        "container-test",
        "--scope",
        "ingest:write",
        "--scope",
        "api:read",
        check=False,
        timeout=120,
    )
    assert created.returncode == 0, f"keys create failed:\n{created.stdout}\n{created.stderr}"
    key = created.stdout.strip().splitlines()[-1].strip()
    # 2. both services
    ingestion = containers.start("ingestion", images.ingestion, env, {ingestion_port: 8080})
    api = containers.start("api", images.api, env, {api_port: 5000})
    wait_healthy(ingestion, containers.logs)
    wait_healthy(api, containers.logs)
    return Stack(
        ingestion=ingestion,
        api=api,
        ingestion_url=f"http://127.0.0.1:{ingestion_port}",
        api_url=f"http://127.0.0.1:{api_port}",
        env=env,
        key=key,
    )


# --------------------------------------------------------------------------- tests


def test_images_metadata(images: Images) -> None:
    """Labels, user, ports, exec-form command and HEALTHCHECK as the Dockerfiles declare them."""
    print(f"built both images in {images.build_seconds:.0f}s from base {BASE}")
    for tag, port, service in (
        (images.ingestion, "8080", "ingestion"),
        (images.api, "5000", "api"),
    ):
        info = json.loads(podman("image", "inspect", tag).stdout)[0]
        cfg = info["Config"]
        assert cfg["User"] == f"{NON_ROOT_UID}:{NON_ROOT_UID}"
        assert cfg["WorkingDir"] == "/app"
        assert f"{port}/tcp" in cfg["ExposedPorts"]
        assert "/tmp" in (cfg.get("Volumes") or {})
        assert cfg["Cmd"] == ["medrobotics", "serve", service]
        assert not cfg.get("Entrypoint")
        env = dict(item.split("=", 1) for item in cfg["Env"])
        assert env["PORT"] == port
        assert env["PYTHONDONTWRITEBYTECODE"] == "1"
        assert env["PYTHONUNBUFFERED"] == "1"
        labels = cfg["Labels"]
        for key in ("title", "description", "source", "version", "revision", "created", "licenses"):
            assert labels.get(f"org.opencontainers.image.{key}"), key
        health = info.get("Healthcheck") or cfg.get("Healthcheck")
        assert health, "HEALTHCHECK missing (built without --format docker?)"
        assert health["Test"][:2] == ["CMD", "python"]
        assert f"'{port}'" in health["Test"][-1]


def test_sbom_lists_what_is_installed_and_the_api_has_no_pyarrow(images: Images) -> None:
    """Each image carries the CycloneDX SBOM of its /opt/venv; only ingestion has pyarrow."""
    probe = (
        "import importlib.util, json, sys; "
        "bom = json.load(open(sys.argv[1])); "
        "names = sorted(c['name'].lower() for c in bom['components']); "
        "print(json.dumps({'format': bom['bomFormat'], 'names': names, "
        "'pyarrow': importlib.util.find_spec('pyarrow') is not None}))"
    )
    for tag, service, has_pyarrow in (
        (images.ingestion, "data-ingestion", True),
        (images.api, "api-service", False),
    ):
        sbom = f"/usr/share/sbom/medrobotics-{service}.cdx.json"
        out = podman("run", "--rm", "--network", "none", tag, "python", "-c", probe, sbom).stdout
        report = json.loads(out.strip().splitlines()[-1])
        assert report["format"] == "CycloneDX"
        assert {"fastapi", "sqlalchemy", "psycopg", "uvicorn"} <= set(report["names"]), service
        assert ("pyarrow" in report["names"]) is has_pyarrow, service
        assert report["pyarrow"] is has_pyarrow, service
        assert "cyclonedx-bom" not in report["names"], "the SBOM tool stays in the builder"


def test_final_image_has_no_compiler(images: Images) -> None:
    probe = (
        "import shutil, sys; "
        "tools = ('gcc', 'cc', 'c++', 'g++', 'clang', 'make', 'ld'); "
        "found = [c for c in tools if shutil.which(c)]; "
        "print(sys.version.split()[0], found); sys.exit(1 if found else 0)"
    )
    for tag in (images.ingestion, images.api):
        proc = podman("run", "--rm", "--network", "none", tag, "python", "-c", probe, check=False)
        assert proc.returncode == 0, f"{tag}: {proc.stdout}{proc.stderr}"


def test_runs_as_non_root_on_read_only_root(stack: Stack) -> None:
    for name in (stack.ingestion, stack.api):
        assert podman("exec", name, "id", "-u").stdout.strip() == NON_ROOT_UID
        top = podman("top", name, "user", "huser", "args").stdout.splitlines()
        rows = [line.split() for line in top[1:] if line.strip()]
        assert rows, top
        for row in rows:
            assert row[0] != "root" and row[1] not in ("root", "0"), top
        # read-only root, writable /tmp
        writes = (
            "import os, tempfile\n"
            "try:\n"
            "    open('/app/probe', 'w')\n"
            "    raise SystemExit('root filesystem is writable')\n"
            "except OSError:\n"
            "    pass\n"
            "with tempfile.NamedTemporaryFile(dir='/tmp'):\n"
            "    pass\n"
        )
        proc = podman("exec", name, "python", "-c", writes, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        # the services wrote nothing outside /tmp: `podman diff` lists the container
        # layer's changes, where only podman's own mount points may appear
        changes = [line.split(None, 1)[-1] for line in podman("diff", name).stdout.splitlines()]
        outside = [c for c in changes if c not in PODMAN_MOUNT_POINTS and not c.startswith("/tmp")]
        assert not outside, changes


def test_ingest_then_read_back_through_the_api(stack: Stack) -> None:
    # secure by default when bound to 0.0.0.0: no key, no entry
    status, body = http("POST", f"{stack.ingestion_url}/ingest/telemetry", TELEMETRY)
    assert status == 401, body
    status, body = http("POST", f"{stack.ingestion_url}/ingest/procedure", PROCEDURE, key=stack.key)
    assert status == 201, body
    status, body = http("POST", f"{stack.ingestion_url}/ingest/telemetry", TELEMETRY, key=stack.key)
    assert status == 201, body
    assert telemetry_samples(stack) == 1
    status, body = http("GET", f"{stack.api_url}/api/procedures/test-123")
    assert status == 401, body


def telemetry_samples(stack: Stack, *, expect: int | None = None, timeout: float = 15) -> int:
    """Samples the API reports for test-123 (polls briefly when `expect` is given)."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = http("GET", f"{stack.api_url}/api/procedures/test-123", key=stack.key)
        assert status == 200, body
        assert body["procedure_id"] == "test-123"
        count = _sample_count(body)
        if expect is None or count == expect or time.monotonic() > deadline:
            return count
        time.sleep(0.5)


def _sample_count(body: dict[str, Any]) -> int:
    """GET /api/procedures/{id} answers a ProcedureDetail with a `telemetry` summary."""
    assert body["procedure_type"] == PROCEDURE["procedure_type"], body
    assert body["robot_id"] == PROCEDURE["robot_id"], body
    return int(body["telemetry"]["sample_count"])


def test_healthchecks_report_healthy(stack: Stack) -> None:
    for name in (stack.ingestion, stack.api):
        assert podman("healthcheck", "run", name).returncode == 0
        health = podman("inspect", "--format", "{{.State.Health.Status}}", name).stdout.strip()
        assert health == "healthy", health


def test_sigterm_drains_in_flight_request_and_exits_zero(stack: Stack) -> None:
    """ECS stops a task with SIGTERM, then SIGKILL after stopTimeout (30 s).

    A request whose headers have arrived but whose body is still on its way is
    in flight: after SIGTERM the service must refuse new connections, still
    answer that request, store it, and exit 0 well within the stop timeout.
    """
    sample = dict(TELEMETRY, timestamp="2025-10-27T10:00:01")
    body = json.dumps(sample).encode()
    host, port = stack.ingestion_url.removeprefix("http://").split(":")
    head = (
        f"POST /ingest/telemetry HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {stack.key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=20) as conn:
        conn.sendall(head + body[:10])
        time.sleep(1.0)  # the server has the headers and is waiting for the body
        signalled = time.monotonic()
        podman("kill", "--signal", "TERM", stack.ingestion)
        time.sleep(1.5)
        # stops accepting (inside the container the port is closed; from outside a new
        # request gets no answer) ...
        refused = podman(
            "exec",
            stack.ingestion,
            "python",
            "-c",
            "import socket; socket.create_connection(('127.0.0.1', 8080), timeout=2)",
            check=False,
        )
        assert "ConnectionRefusedError" in refused.stderr, refused.stdout + refused.stderr
        with pytest.raises(OSError):
            http("GET", f"{stack.ingestion_url}/health", timeout=3)
        assert (
            podman("inspect", "--format", "{{.State.Status}}", stack.ingestion).stdout.strip()
            == "running"
        )
        # ... but finishes the request in flight
        conn.sendall(body[10:])
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = conn.recv(65536)
            if not chunk:
                break
            response += chunk
    status_line = response.split(b"\r\n", 1)[0].decode(errors="replace")
    assert " 201 " in status_line + " ", response[:500]

    exit_code = podman(
        "wait", "--condition", "stopped", stack.ingestion, timeout=STOP_TIMEOUT_S + 10
    ).stdout.strip()
    took = time.monotonic() - signalled
    assert exit_code == "0", f"exit code {exit_code}"
    assert took < STOP_TIMEOUT_S, f"shutdown took {took:.1f}s"
    state = podman(
        "inspect", "--format", "{{.State.ExitCode}} {{.State.OOMKilled}}", stack.ingestion
    )
    assert state.stdout.split() == ["0", "false"]
    # flushed: the sample sent during shutdown is stored
    assert telemetry_samples(stack, expect=2) == 2

    # the API container, stopped the way ECS/compose do it
    start = time.monotonic()
    podman("stop", "-t", str(STOP_TIMEOUT_S), stack.api, timeout=STOP_TIMEOUT_S + 10)
    assert time.monotonic() - start < STOP_TIMEOUT_S
    code = podman("inspect", "--format", "{{.State.ExitCode}}", stack.api).stdout.strip()
    assert code == "0", f"api exit code {code}"


def test_images_ship_the_dashboard_and_docs_libraries(images: Images) -> None:
    # `make assets` (a step of `make venv`) puts them under src/, which the images copy.
    probe = (
        "import sys; from medrobotics.ui import STATIC, VENDOR; "
        "names = ['uplot/uPlot.iife.min.js', 'swagger-ui/swagger-ui-bundle.js', "
        "'redoc/redoc.standalone.js']; "
        "missing = [n for n in names if not (VENDOR / n).is_file()]; "
        "missing += [] if (STATIC / 'index.html').is_file() else ['index.html']; "
        "print(missing); sys.exit(1 if missing else 0)"
    )
    for tag in (images.ingestion, images.api):
        proc = podman("run", "--rm", "--network", "none", tag, "python", "-c", probe, check=False)
        assert proc.returncode == 0, f"{tag}: {proc.stdout}{proc.stderr}"
