"""The dashboard at /api/dashboard: static files, and its page for every client-side route.

The server side only serves files: the page calls the JSON API with the key the person gives
it, so the files need no key (they hold no data) and every data call is checked as any other.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from medrobotics.ui import STATIC

PREFIX = "/api/dashboard"
HEADERS = {
    # The page talks to its own origin only; uPlot sets inline styles.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'",
    "Cache-Control": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def install_dashboard(app: FastAPI) -> None:
    """Serve the dashboard's files and its index for the client-side routes under PREFIX."""
    # Before the catch-all route: a missing file is a 404, not the index.
    app.mount(f"{PREFIX}/static", StaticFiles(directory=STATIC), name="dashboard-static")
    index = STATIC / "index.html"

    @app.get(PREFIX, include_in_schema=False)
    @app.get(PREFIX + "/{view:path}", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(index, media_type="text/html", headers=HEADERS)
