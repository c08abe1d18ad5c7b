"""A throwaway PostgreSQL server in a temporary folder, for tests that stop and start it."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    """Return a TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"PostgreSQL server binary {name} not found")
    return path


def _as_postgres(args: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


class Cluster:
    """initdb + pg_ctl start/stop on a private port and folder."""

    def __init__(self) -> None:
        # Not under pytest's tmp_path: its parents are private to root, and the server runs
        # as the postgres user.
        self.root = Path(tempfile.mkdtemp(prefix="medrobotics-pg-"))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        subprocess.run(
            _as_postgres(
                [_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"]
            ),
            check=True,
            capture_output=True,
        )

    @property
    def url(self) -> str:
        """Return the SQLAlchemy URL of the cluster's `postgres` database."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=on"
        subprocess.run(
            _as_postgres(
                [
                    _bin("pg_ctl"),
                    "-D",
                    str(self.data),
                    "-o",
                    opts,
                    "-l",
                    str(self.root / "log"),
                    "-w",
                    "-t",
                    "30",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )
        for _ in range(100):
            if (
                subprocess.run(
                    [_bin("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
                ).returncode
                == 0
            ):
                return
            time.sleep(0.1)
        raise RuntimeError("temporary PostgreSQL did not start")

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server (`immediate` is a crash: no checkpoint, clients cut off)."""
        subprocess.run(
            _as_postgres([_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]),
            check=False,
            capture_output=True,
        )

    def remove(self) -> None:
        """Stop the server and delete its folder."""
        self.stop("fast")
        shutil.rmtree(self.root, ignore_errors=True)
