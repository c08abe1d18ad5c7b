"""Hostile bodies against the local platform: `python -m bench.bombs [--out docs/benchmarks.md]`.

Runs `medrobotics up` (both services and the front port in one process, one event loop, the
embedded database), then sends each body to the ingestion service while a thread asks the API
service for `/health` every 20 ms and another samples the process's RSS every 20 ms. Writes
bench/results/bombs-<timestamp>.json and bench/bombs.md, and puts the same section in the
markdown report (bench/report.py includes it when the full benchmark rewrites the report).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from tests.factories import gzip_bomb

from bench.report import ANALYSIS
from bench.tools import BIN, COMMANDS, RssSampler, Service, free_port, rss_mb
from medrobotics import seed
from medrobotics.config import Settings

ROOT = Path(__file__).resolve().parent.parent
SECTION = ROOT / "bench" / "bombs.md"
BEGIN, END = "<!-- bench.bombs -->", "<!-- /bench.bombs -->"
MiB = 1 << 20


@dataclass
class Body:
    """One request body and what it should get."""

    name: str
    content: bytes
    path: str
    headers: dict[str, str]
    expect: int


def bodies() -> list[Body]:
    ndjson = {"content-type": "application/x-ndjson"}
    gz = ndjson | {"content-encoding": "gzip"}
    data = seed.generate(seed=42, robots=10, procedure_count=500, telemetry_per_procedure=200)
    real = b"".join(json.dumps(s).encode() + b"\n" for s in data.telemetry())
    return [
        Body("gzip of 1 GiB of newlines", gzip_bomb(b"\n" * MiB, 1024), "telemetry", gz, 413),
        Body("gzip of 1 GiB of NULs", gzip_bomb(b"\0" * MiB, 1024), "telemetry", gz, 413),
        Body(
            "gzip of one 1 GiB line",
            gzip_bomb(b"r" * MiB, 1024, head=b'{"robot_id": "'),
            "robots",
            gz,
            413,
        ),
        Body(
            "gzip of 1 GiB of blank lines, about 170-fold: under the ratio limit, so read "
            "to the end (accepted, no record)",
            gzip_bomb(_sprinkled(b"\n" * MiB, every=250), 1024),
            "telemetry",
            gz,
            201,
        ),
        Body("plain 32 MiB line", b'{"robot_id": "' + b"r" * (32 * MiB), "robots", ndjson, 413),
        Body(
            f"seeded telemetry, {len(real) / MiB:.0f} MiB NDJSON in gzip (accepted)",
            gzip.compress(real, compresslevel=6),
            "telemetry",
            gz,
            201,
        ),
    ]


def _sprinkled(unit: bytes, *, every: int) -> bytes:
    # A space at a random place in every `every` bytes: blank lines that compress less.
    rng = random.Random(5)
    out = bytearray(unit)
    for start in range(0, len(out) - every, every):
        out[start + rng.randrange(every)] = 32
    return bytes(out)


class HealthProbe:
    """Asks `url` for /health every `interval` seconds in a thread; keeps every latency."""

    def __init__(self, url: str, interval: float = 0.02) -> None:
        self.url, self.interval = url, interval
        self.latencies: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._answered = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=60.0) as client:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    ok = client.get(self.url).status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.latencies.append(time.perf_counter() - t0)
                self.failures += not ok
                self._answered.set()
                self._stop.wait(self.interval)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        self._answered.wait(30.0)  # probing before the body is sent, however busy the machine
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def send(base: str, body: Body) -> dict[str, Any]:
    """Send one body; return status, time to the answer, and the answer's size."""
    with httpx.Client(timeout=600.0) as client:
        t0 = time.perf_counter()
        try:
            r = client.post(
                f"{base}/ingest/batch?type={body.path}", content=body.content, headers=body.headers
            )
        except httpx.HTTPError as exc:  # the server may close while a long body is sent
            return {
                "status": None,
                "error": type(exc).__name__,
                "seconds": time.perf_counter() - t0,
            }
        return {
            "status": r.status_code,
            "seconds": time.perf_counter() - t0,
            "answer_bytes": len(r.content),
            "message": r.json()["error"]["message"] if r.status_code >= 400 else None,
        }


def measure(ingestion: str, api: str, pid: int, body: Body) -> dict[str, Any]:
    """Send `body` while probing the API's /health and sampling the process's RSS."""
    time.sleep(1.0)  # let the previous request's memory settle
    before = rss_mb(pid)
    load = os.getloadavg()[0]
    with RssSampler(pid, interval=0.02) as rss, HealthProbe(f"{api}/health") as health:
        time.sleep(0.2)  # a few idle probes first
        result = send(ingestion, body)
        time.sleep(0.2)
    lat = sorted(health.latencies)
    return {
        "body": body.name,
        "compressed_bytes": len(body.content),
        "expected": body.expect,
        **result,
        "rss_before_mb": before,
        "rss_peak_mb": rss.peak,
        "rss_growth_mb": rss.peak - before,
        "health_probes": len(lat),
        "health_failures": health.failures,
        "health_median_ms": statistics.median(lat) * 1000 if lat else None,
        "health_p99_ms": lat[int(0.99 * (len(lat) - 1))] * 1000 if lat else None,
        "health_max_ms": lat[-1] * 1000 if lat else None,
        "loadavg": load,
    }


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = [
        BEGIN,
        "## Hostile bodies (`python -m bench.bombs`)",
        "",
        f"Run on {result['started']} at commit {result['commit']}: the local platform "
        "(`medrobotics up`: both services and the front port in one process and one event loop, "
        "embedded SQLite, log level WARNING, archiver off). Each body is sent once to "
        "`POST /ingest/batch` on the ingestion port while a thread asks the API port for "
        "`/health` every 20 ms and another samples the process's RSS every 20 ms. Limits in "
        f"force (defaults): gzip ratio {s['max_gzip_ratio']}, gzip allowance "
        f"{s['gzip_allowance_bytes'] // MiB} MiB, line {s['max_line_bytes'] // MiB} MiB, "
        f"stream {s['max_stream_bytes'] // MiB:,} MiB. Before these limits the newline bomb "
        "took 46 s and 2.5 GB, the NUL bomb 3.5 GB, and `/health` 33 s.",
        "",
        f"The machine ({result['nproc']} cores) is shared: 1-minute load average "
        + ", ".join(f"{c['loadavg']:.1f}" for c in result["cases"])
        + " as each body was sent.",
        "",
        "| body | sent | status | time to answer | RSS before | RSS growth (peak) | "
        "API /health median | p99 | max | target met? |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for c in result["cases"]:
        ok = (
            c["status"] == c["expected"]
            and c["health_max_ms"] is not None
            and c["health_max_ms"] < 1000
            and c["health_failures"] == 0
            and (c["expected"] != 413 or (c["seconds"] < 2 and c["rss_growth_mb"] < 100))
        )
        lines.append(
            f"| {c['body']} | {c['compressed_bytes'] / MiB:,.1f} MiB | {c['status']} | "
            f"{c['seconds']:.2f} s | {c['rss_before_mb']:.0f} MB | {c['rss_growth_mb']:.0f} MB | "
            f"{c['health_median_ms']:.1f} ms | {c['health_p99_ms']:.1f} ms | "
            f"{c['health_max_ms']:.1f} ms | "
            f"{'yes' if ok else '**no**'} |"
        )
    lines += [
        "",
        "Targets: a refused body answers 413 within 2 s and the process grows by less than "
        "100 MB; the other service answers `/health` within a second throughout. The "
        "accepted upload is there for comparison (its time is the embedded database's "
        "write). Answers: "
        + "; ".join(f'{c["body"]}: "{c["message"]}"' for c in result["cases"] if c["message"])
        + ".",
        "",
        "```",
        *result["commands"],
        "```",
        END,
    ]
    return "\n".join(lines) + "\n"


def splice(report: Path, section: str) -> None:
    """Put `section` in the markdown report, in place of its previous run if there is one."""
    text = report.read_text() if report.exists() else ""
    analysis = ANALYSIS.read_text().split("\n", 1)[0] if ANALYSIS.exists() else None
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section.rstrip("\n") + rest.split(END, 1)[1]
    elif analysis and analysis in text:
        # Where bench/report.py puts it: before the analysis.
        head, rest = text.split(analysis, 1)
        text = head + section + "\n" + analysis + rest
    else:
        text = text.rstrip("\n") + "\n\n" + section
    report.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args()
    started = datetime.now(UTC).isoformat(timespec="seconds")
    cases = bodies()
    ports = {"front": free_port(), "api": free_port(), "ingestion": free_port()}
    with tempfile.TemporaryDirectory(prefix="medrobotics-bombs-") as folder:
        service = Service(
            [
                str(BIN / "medrobotics"),
                "up",
                "--port",
                str(ports["front"]),
                "--api-port",
                str(ports["api"]),
                "--ingestion-port",
                str(ports["ingestion"]),
                "--data-dir",
                folder,
            ],
            port=ports["ingestion"],
            env={"MEDROBOTICS_LOG_LEVEL": "WARNING", "MEDROBOTICS_ARCHIVE": "0"},
        )
        service.start(timeout=60.0)
        try:
            ingestion = f"http://127.0.0.1:{ports['ingestion']}"
            api = f"http://127.0.0.1:{ports['api']}"
            results = []
            for body in cases:
                results.append(measure(ingestion, api, service.pid, body))
                print(json.dumps(results[-1]), flush=True)
        finally:
            service.stop()
    commit = _commit()
    result = {
        "started": started,
        "commit": commit,
        "nproc": os.cpu_count(),
        "settings": Settings().model_dump(
            include={"max_gzip_ratio", "gzip_allowance_bytes", "max_line_bytes", "max_stream_bytes"}
        ),
        "cases": results,
        "commands": [
            "python -m bench.bombs",
            *(c.replace(str(ROOT) + "/", "").replace(folder, "<tmp>") for c in COMMANDS),
        ],
    }
    out = ROOT / "bench" / "results" / f"bombs-{started.replace(':', '')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    section = markdown(result)
    SECTION.write_text(section)
    splice(Path(args.out), section)
    print(section)


def _commit() -> str:
    import subprocess

    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    ).stdout.strip()


if __name__ == "__main__":
    main()
