"""A private PostgreSQL cluster for the benchmark: settings are the harness's, not the host's."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

# Written to postgresql.conf; reported with the results. Durability is on (fsync,
# synchronous_commit): the figures are for committed data.
SETTINGS: dict[str, str] = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "200",
    "shared_buffers": "2GB",
    "effective_cache_size": "12GB",
    "work_mem": "32MB",
    "maintenance_work_mem": "512MB",
    "wal_buffers": "64MB",
    "max_wal_size": "16GB",
    "checkpoint_timeout": "30min",
    "random_page_cost": "1.1",
    "fsync": "on",
    "synchronous_commit": "on",
    "jit": "off",
    # Plans of slow statements go to the server log; the harness keeps them with the results.
    "session_preload_libraries": "'auto_explain'",
    "auto_explain.log_min_duration": "'50ms'",
}


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"PostgreSQL binary {name} not found")
    return path


def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


class Cluster:
    """initdb + pg_ctl in a folder under /tmp (mode 755: the server runs as `postgres`)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.root = Path(tempfile.mkdtemp(prefix="mr-bench-pg-"))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        subprocess.run(
            _as_postgres([_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"]),
            check=True,
            capture_output=True,
        )
        conf = "".join(f"{k} = {v}\n" for k, v in {**SETTINGS, "port": str(port)}.items())
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(conf + f"unix_socket_directories = '{self.root}'\n")

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        log = str(self.root / "log")
        subprocess.run(
            _as_postgres([_bin("pg_ctl"), "-D", str(self.data), "-l", log, "-w", "start"]),
            check=True,
            capture_output=True,
        )
        for _ in range(100):
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                time.sleep(0.1)
        raise RuntimeError("benchmark PostgreSQL did not start")

    def slow_plans(self) -> str:
        """Return one auto_explain entry per distinct slow statement (over 50 ms), slowest kept."""
        try:
            text = (self.root / "log").read_text(errors="replace")
        except OSError:
            return ""
        blocks: list[list[str]] = []
        for line in text.splitlines():
            if "LOG:  duration:" in line and "plan:" in line:
                blocks.append([line])
            elif blocks and line[:1] in ("\t", " ") and blocks[-1][0]:
                blocks[-1].append(line)
            elif blocks and blocks[-1][0]:
                blocks.append([""])  # end of the current entry
        best: dict[str, tuple[float, list[str]]] = {}
        for block in blocks:
            if not block[0]:
                continue
            ms = float(block[0].split("duration:")[1].split("ms")[0])
            body = block[1:]
            plan_at = next((i for i, x in enumerate(body) if "  ->  " in x or "(cost=" in x), 0)
            key = "\n".join(body[:plan_at])  # the query text
            if key not in best or ms > best[key][0]:
                best[key] = (ms, block)
        ordered = sorted(best.values(), key=lambda v: -v[0])
        return "\n\n".join("\n".join(block) for _, block in ordered)

    def remove(self) -> None:
        subprocess.run(
            _as_postgres([_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]),
            check=False,
            capture_output=True,
        )
        shutil.rmtree(self.root, ignore_errors=True)

    def recreate(self, db: str) -> str:
        """Drop and create database `db`; return its URL."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{db}"')
        return self.url(db)
