"""The web console (`da serve` at /console/): a static app shipped in the package (plain HTML,
CSS and JavaScript modules, no build step) that signs in with an API key and speaks the /v1 API
like any other client. Every path under /console/ that is not an asset gets index.html, so a
link to a session (`/console/sessions/ID`) works when it is opened or reloaded."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC = Path(__file__).parent / "static"
PREFIX = "/console"
# The app is small and changes with the package: the browser asks again each time (ETags make it cheap).
NO_CACHE = {"cache-control": "no-cache"}


class _Assets(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(NO_CACHE)
        return response


def routes() -> list[BaseRoute]:
    """/console/assets/* (the files), /console and /console/* (the app's page)."""

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=NO_CACHE)

    async def to_slash(request: Request) -> Response:
        return RedirectResponse(f"{PREFIX}/", status_code=308)

    return [
        Mount(f"{PREFIX}/assets", app=_Assets(directory=STATIC), name="console-assets"),
        Route(PREFIX, to_slash, methods=["GET"]),
        Route(f"{PREFIX}/{{path:path}}", page, methods=["GET"]),
    ]
