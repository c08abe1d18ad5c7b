"""The dashboard in a real browser: Debian's chromium, driven by Playwright, on a seeded platform.

These run only when asked for (`-m browser`, as .ci/browser.sh does): a plain `pytest` (the
`make test` step) leaves them out, so a machine without chromium still passes `make test`.
The platform is `medrobotics up` with keys required, seeded through its front port; every
page's requests are recorded and must stay on this machine. Screenshots go to
.work/browser/ (BROWSER_ARTIFACTS overrides it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.browser import chromium as chromium_args

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("BROWSER_ARTIFACTS", ROOT / ".work" / "browser"))
CLI = [sys.executable, "-m", "medrobotics"]
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
KEY_STORAGE = "medrobotics.apiKey"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.option.markexpr:
        return
    keep, drop = [], []
    for item in items:
        (drop if item.get_closest_marker("browser") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Platform:
    """The running platform: its front URL and the keys made for the tests."""

    url: str
    viewer: str  # api:read
    quality: str  # api:read and phi:read
    ingest: str  # ingest:write only

    def get(self, path: str, key: str | None = None, **params: Any) -> Any:
        headers = {"Authorization": f"Bearer {key or self.viewer}"}
        answer = httpx.get(self.url + path, params=params, headers=headers, timeout=30)
        answer.raise_for_status()
        return answer.json()


def _key(env: dict[str, str], data: Path, name: str, *scopes: str) -> str:
    argv = [*CLI, "keys", "create", "--name", name, "--data-dir", str(data)]
    for scope in scopes:
        argv += ["--scope", scope]
    out = subprocess.run(argv, env=env, check=True, capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """`medrobotics up` with keys required, on free ports, seeded with a small fleet."""
    data = tmp_path_factory.mktemp("platform")
    env = {
        **os.environ,
        "MEDROBOTICS_AUTH": "required",
        "MEDROBOTICS_LOG_LEVEL": "WARNING",
        "MEDROBOTICS_ARCHIVE": "0",
    }
    for name in ("DATABASE_URL", "RDS_HOST", "ENVIRONMENT"):
        env.pop(name, None)
    subprocess.run([*CLI, "db", "upgrade", "--data-dir", str(data)], env=env, check=True)
    ingest = _key(env, data, "seeder", "ingest:write")
    viewer = _key(env, data, "viewer", "api:read")
    quality = _key(env, data, "quality", "api:read", "phi:read")
    front, api, ingestion = _free_port(), _free_port(), _free_port()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = (ARTIFACTS / "platform.log").open("w")
    argv = [*CLI, "up", "--data-dir", str(data), "--port", str(front)]
    argv += ["--api-port", str(api), "--ingestion-port", str(ingestion)]
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{front}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the platform did not start: see {ARTIFACTS / 'platform.log'}")
            time.sleep(0.3)
        seed = [*CLI, "seed", "--url", url, "--api-key", ingest, "--robots", "12"]
        seed += ["--facilities", "3", "--procedures", "600", "--telemetry-per-procedure", "400"]
        subprocess.run(seed, env=env, check=True, stdout=log, stderr=subprocess.STDOUT)
        yield Platform(url=url, viewer=viewer, quality=quality, ingest=ingest)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's chromium (never a downloaded build), headless."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is missing: .ci/browser.sh installs it (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=chromium_args.ARGS)
        yield b
        b.close()


@dataclass
class Watch:
    """What a page did: its requests, console errors and uncaught exceptions."""

    page: Any
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    sent_keys: list[str] = field(default_factory=list)

    def outside(self) -> list[str]:
        # blob: URLs (ReDoc's web worker) are made by the page from its own origin
        urls = [u.removeprefix("blob:") for u in self.requests]
        return [u for u in urls if urlsplit(u).hostname not in LOCAL_HOSTS]

    def assert_clean(self, *, allow: tuple[str, ...] = ()) -> None:
        """No request left the machine; no console error but the ones `allow` names."""
        assert self.requests, "no request recorded"
        assert not self.outside(), self.outside()
        errors = [e for e in self.errors if not any(a in e for a in allow)]
        assert not errors, errors

    def shot(self, name: str) -> Path:
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


def _record(page: Any) -> Watch:
    watch = Watch(page)

    def on_request(request: Any) -> None:
        if request.url.startswith("data:"):
            return
        watch.requests.append(request.url)
        authorization = request.headers.get("authorization")
        if authorization:
            watch.sent_keys.append(authorization.removeprefix("Bearer "))

    page.on("request", on_request)
    page.on("console", lambda m: m.type == "error" and watch.errors.append(m.text))
    page.on("pageerror", lambda e: watch.errors.append(f"uncaught: {e}"))
    return watch


@pytest.fixture
def open_page(browser: Any) -> Iterator[Any]:
    """Make a page in a fresh browser context (own sessionStorage), optionally with a key."""
    contexts: list[Any] = []

    def make(key: str | None = None) -> Watch:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        if key is not None:
            # As if the person had typed it into the prompt earlier in this tab.
            script = f"sessionStorage.setItem({json.dumps(KEY_STORAGE)}, {json.dumps(key)})"
            context.add_init_script(script)
        contexts.append(context)
        return _record(context.new_page())

    yield make
    for context in contexts:
        context.close()
