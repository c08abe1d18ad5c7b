"""What people see in a browser, served from the package: the dashboard and the API docs.

The browser libraries (uPlot, Swagger UI, ReDoc) come from the npm registry at build time
(`make assets`: package-lock.json, `npm ci`) into static/vendor/; nothing loads from another
host at run time.
"""

from __future__ import annotations

from pathlib import Path

STATIC = Path(__file__).parent / "static"
VENDOR = STATIC / "vendor"
