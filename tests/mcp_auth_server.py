"""An MCP server (official SDK) that checks a credential without ever echoing it, for the vault tests.

    python tests/mcp_auth_server.py stdio          # the credential in env API_TOKEN
    python tests/mcp_auth_server.py http PORT      # the credential as `Authorization: Bearer ...`

It knows only the SHA-256 of the expected credential (env EXPECTED_SHA256), so a test can check that
the secret reached the server while the secret itself appears nowhere but in the vault. Its one
tool, `whoami`, answers "authorized" or "unauthorized". Over HTTP, a request without the right
header gets 401, so a missing header is a connection failure.
"""

from __future__ import annotations

import hashlib
import os
import sys

from mcp.server.mcpserver import MCPServer

EXPECTED = os.environ.get("EXPECTED_SHA256", "")


def matches(value: str) -> bool:
    return bool(value) and hashlib.sha256(value.encode()).hexdigest() == EXPECTED


server = MCPServer("auth-check")


@server.tool()
def whoami() -> str:
    """Say whether this server was given the right credential."""
    if sys.argv[1] == "stdio":
        return "authorized" if matches(os.environ.get("API_TOKEN", "")) else "unauthorized"
    return "authorized"  # over HTTP, only authorized requests get this far


def http_app(port: int):  # type: ignore[no-untyped-def]
    from starlette.middleware.base import BaseHTTPMiddleware
    from starlette.responses import PlainTextResponse

    async def check(request, call_next):  # type: ignore[no-untyped-def]
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer ") or not matches(header.removeprefix("Bearer ")):
            return PlainTextResponse("unauthorized", status_code=401)
        return await call_next(request)

    app = server.streamable_http_app(host="127.0.0.1")
    app.add_middleware(BaseHTTPMiddleware, dispatch=check)
    return app


if __name__ == "__main__":
    if sys.argv[1] == "stdio":
        server.run("stdio")
    else:
        import uvicorn

        uvicorn.run(http_app(int(sys.argv[2])), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
