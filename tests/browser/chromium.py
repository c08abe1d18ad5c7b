"""How Debian's chromium is started for the browser tests and the dashboard benchmark."""

from __future__ import annotations

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    # No calls home: on a closed network they are refused, and a test asserts no request
    # leaves the machine.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
"""Flags for `chromium.launch(executable_path=shutil.which("chromium"), args=ARGS)`."""
