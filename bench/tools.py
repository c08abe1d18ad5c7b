"""Running things: wrk with the harness's Lua scripts, server processes, RSS sampling."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
LUA = HERE / "lua"
BIN = Path(sys.executable).parent
COMMANDS: list[str] = []  # every load and server command run, for the report


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _script(name: str) -> Path:
    """Return a Lua file: the common part followed by the named script (wrk takes one -s)."""
    out = Path(tempfile.gettempdir()) / f"mr-bench-{name}"
    out.write_text((LUA / "common.lua").read_text() + "\n" + (LUA / name).read_text())
    return out


KEY = ""
"""The API key wrk sends (`Authorization: Bearer`); the services run with authentication on."""


def wrk(
    url: str,
    *,
    script: str = "get.lua",
    args: list[str] | None = None,
    connections: int,
    threads: int = 2,
    seconds: float,
    timeout: str = "10s",
) -> dict[str, Any]:
    """Run wrk and return its figures (requests/s of 2xx answers, latency in ms, errors)."""
    threads = min(threads, connections)
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={timeout}",
        "-s",
        str(_script(script)),
        url,
    ]
    if args:
        cmd += ["--", *args]
    shown = " ".join(shlex.quote(c) for c in cmd).replace(
        str(_script(script)), f"bench/lua/{script}"
    )
    if shown not in COMMANDS:
        COMMANDS.append(shown)
    env = {**os.environ, "MR_BENCH_KEY": KEY}
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("BENCHJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {proc.stdout}\n{proc.stderr}")
    raw = json.loads(line.split(" ", 1)[1])
    seconds_run = raw["duration_us"] / 1e6
    errors = raw["status_errors"] + raw["connect_errors"] + raw["read_errors"]
    errors += raw["write_errors"] + raw["timeouts"]
    if raw["requests"] == 0:
        errors += 1  # nothing completed within the run: not a figure
    ok = raw["requests"] - raw["status_errors"]
    return {
        "requests": raw["requests"],
        "ok": ok,
        "errors": errors,
        "non_2xx": raw["status_errors"],
        "timeouts": raw["timeouts"],
        "seconds": seconds_run,
        "rps": ok / seconds_run,
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p95_ms": raw["p95_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["lat_max_us"] / 1000,
    }


@dataclass
class Service:
    """A server subprocess on loopback, stopped with SIGINT (graceful) then SIGKILL."""

    argv: list[str]
    port: int
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    started_s: float = 0.0

    def start(self, *, health: str = "/health", timeout: float = 30.0) -> float:
        """Start; return seconds from spawn to the first 200 on `health`."""
        env = {**os.environ, **self.env}
        shown = " ".join(f"{k}={v}" for k, v in self.env.items()) + " " + " ".join(self.argv)
        shown = shown.replace(str(BIN) + "/", ".venv/bin/").strip()
        if shown not in COMMANDS:
            COMMANDS.append(shown)
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            self.argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        url = f"http://127.0.0.1:{self.port}{health}"
        with httpx.Client(timeout=1.0) as client:
            while time.perf_counter() - t0 < timeout:
                if self.proc.poll() is not None:
                    err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    raise RuntimeError(f"{self.argv} exited: {err[-2000:]}")
                try:
                    if client.get(url).status_code == 200:
                        self.started_s = time.perf_counter() - t0
                        return self.started_s
                except httpx.TransportError:
                    pass
                time.sleep(0.005)
        self.stop()
        raise RuntimeError(f"{self.argv} not healthy within {timeout} s")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def rss_mb(pid: int) -> float:
    """Resident set size of `pid` in MB (VmRSS)."""
    return _status_mb(pid, "VmRSS:")


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB since it started its program (VmHWM).

    Not `getrusage(RUSAGE_SELF).ru_maxrss`: Linux carries the parent's peak across fork and
    exec into it, so a child of the harness (which holds the request bodies) reported the
    harness's own 584 MB as its peak.
    """
    return _status_mb("self", "VmHWM:")


def _status_mb(pid: int | str, field: str) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return 0.0


class RssSampler:
    """Samples a process's RSS every `interval` seconds in a thread; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid, self.interval = pid, interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(rss_mb(self.pid))
            except OSError:
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak(self) -> float:
        return max(self.samples, default=0.0)


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": len(values),
    }
