"""Fixtures of the infrastructure tests: parsed templates and a moto server."""

from __future__ import annotations

import subprocess
import time
import urllib.request

import pytest
from infra_support import TEMPLATES, find_tool, free_port, load_template


@pytest.fixture(scope="session")
def templates() -> dict[str, dict]:
    return {name: load_template(name) for name in TEMPLATES}


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory):
    """A moto server of its own on a free loopback port, for the whole session."""
    server = find_tool("moto_server")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [server, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"moto server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
