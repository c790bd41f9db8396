"""The egress proxy: a sandbox whose spec lists `egress` hosts reaches those hosts, and only those,
through a proxy on its sandbox worker, which adds each host's credential on the way out.

- The container sits on `da-egress`, an internal Docker network (no route out) with inter-container
  traffic off, and no DNS; host-side, iptables lets it reach only the proxies' ports on the bridge.
- Inside, HTTP_PROXY points at the proxy. The sandbox speaks plain HTTP (`http://api.host/...`); the
  proxy checks the host against the container's rules (kept in a label: host names and secret
  *names* only), connects upstream over the rule's scheme (https by default), sets the rule's header
  from the vault, and strips the secret from the response if the upstream echoes it. HTTPS tunnels
  (CONNECT) are refused: a tunnel could not carry an added header.
- So the secret is never in the container: not in its env, its files, or anything it receives.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import threading
from typing import Any
from urllib.parse import urlsplit

import docker
import httpx
import structlog
import uvicorn
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from durable_agents.contracts import EgressRule
from durable_agents.vault import VaultError, load_vault

NETWORK = "da-egress"
BRIDGE = "da-egress0"
RULES_LABEL = "durable-agents.egress"
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}
MAX_BODY = 64 * 2**20
log = structlog.get_logger("egress")


def rules_label(rules: list[EgressRule]) -> str:
    return json.dumps([r.model_dump(mode="json") for r in rules], separators=(",", ":"))


class EgressProxy:
    """One per sandbox worker; started on the first sandbox that needs it."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.docker = client
        self.gateway = ""
        self.port = 0
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._http: httpx.AsyncClient | None = None

    # --- setup ------------------------------------------------------------------------------

    def ensure(self) -> None:
        """The network, the proxy and the firewall rule exist (idempotent, thread-safe)."""
        with self._lock:
            if self._server is not None:
                return
            network = self._network()
            self.gateway = network.attrs["IPAM"]["Config"][0]["Gateway"]
            with socket.socket() as s:
                s.bind((self.gateway, 0))
                self.port = s.getsockname()[1]
            config = uvicorn.Config(self.app(), host=self.gateway, port=self.port, log_level="warning", lifespan="off")
            self._server = uvicorn.Server(config)
            self._thread = threading.Thread(target=self._server.run, name="egress-proxy", daemon=True)
            self._thread.start()
            self._firewall()
            log.info("egress proxy started", address=f"{self.gateway}:{self.port}", network=NETWORK)

    def _network(self) -> Any:
        try:
            return self.docker.networks.get(NETWORK)
        except docker.errors.NotFound:
            pass
        try:
            return self.docker.networks.create(
                NETWORK,
                driver="bridge",
                internal=True,
                options={"com.docker.network.bridge.enable_icc": "false", "com.docker.network.bridge.name": BRIDGE},
            )
        except docker.errors.APIError:  # another worker created it meanwhile
            return self.docker.networks.get(NETWORK)

    def _firewall(self) -> None:
        """From the egress bridge the host accepts only its proxies' ports (not, say, a service
        listening on 0.0.0.0): ACCEPT rules for each proxy before one DROP for the rest."""
        drop = ["INPUT", "-i", BRIDGE, "-j", "DROP"]
        accept = ["INPUT", "-i", BRIDGE, "-p", "tcp", "--dport", str(self.port), "-j", "ACCEPT"]
        if subprocess.run(["iptables", "-C", *drop], capture_output=True).returncode != 0:
            subprocess.run(["iptables", "-A", *drop], check=True, capture_output=True)
        subprocess.run(["iptables", "-I", *accept], check=True, capture_output=True)

    def environment(self) -> dict[str, str]:
        url = f"http://{self.gateway}:{self.port}"
        return {"HTTP_PROXY": url, "http_proxy": url, "HTTPS_PROXY": url, "https_proxy": url, "NO_PROXY": ""}

    def close(self) -> None:
        if self._server is None:
            return
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        accept = ["INPUT", "-i", BRIDGE, "-p", "tcp", "--dport", str(self.port), "-j", "ACCEPT"]
        subprocess.run(["iptables", "-D", *accept], capture_output=True)
        self._server = None

    # --- requests ---------------------------------------------------------------------------

    def _rules_of(self, ip: str) -> list[EgressRule] | None:
        """The rules of the running container with this address, read from its label each time (an
        address is reused once its container is gone: nothing cached can go stale)."""
        # One list call: its summaries carry addresses and labels (containers.list would inspect each).
        for summary in self.docker.api.containers(filters={"network": NETWORK, "label": RULES_LABEL}):
            address = summary["NetworkSettings"]["Networks"].get(NETWORK, {}).get("IPAddress")
            if address == ip:
                return [EgressRule.model_validate(r) for r in json.loads(summary["Labels"][RULES_LABEL])]
        return None

    def app(self) -> ASGIApp:
        """A bare ASGI app: a proxy's request targets are absolute URLs, which routing would refuse."""

        async def proxy(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                return
            response = await self._forward(Request(scope, receive))
            await response(scope, receive, send)

        return proxy

    def _upstream(self) -> httpx.AsyncClient:
        """One client for the proxy's life (made in its own event loop): connections and the TLS
        context are reused, not rebuilt per request."""
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=60, follow_redirects=False)
        return self._http

    async def _forward(self, request: Request) -> Response:
        if request.method == "CONNECT":
            return _refuse(
                405,
                "HTTPS tunnels are not allowed: request http://HOST/... and the proxy reaches allowed hosts over "
                "https itself, adding their credentials",
            )
        raw = request.scope.get("raw_path", b"").decode() or request.scope.get("path", "/")
        target = urlsplit(raw if raw.startswith("http://") else f"http://{request.headers.get('host', '')}{raw}")
        host = (target.hostname or "").lower()
        ip = request.client.host if request.client else ""
        rules = await asyncio.to_thread(self._rules_of, ip)
        if rules is None:
            return _refuse(403, f"no egress policy for {ip} (not a sandbox of this host)")
        rule = next((r for r in rules if r.host.lower() == host), None)
        if rule is None:
            allowed = ", ".join(r.host for r in rules) or "none"
            return _refuse(403, f"{host or '(no host)'} is not in this sandbox's egress list (allowed: {allowed})")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        secret = None
        if rule.secret is not None:
            try:
                secret = load_vault().resolve(rule.secret.secret)
            except VaultError as e:
                return _refuse(502, str(e))
            headers = {k: v for k, v in headers.items() if k.lower() != rule.header.lower()}
            headers[rule.header] = rule.secret.prefix + secret
        query_string = request.scope.get("query_string", b"").decode()
        query = f"?{query_string}" if query_string else ""
        upstream = f"{rule.scheme}://{rule.connect_to or host}:{rule.upstream_port()}{target.path or '/'}{query}"
        headers["Host"] = host
        body = await request.body()
        try:
            answer = await self._upstream().request(request.method, upstream, headers=headers, content=body)
        except httpx.HTTPError as e:
            return _refuse(502, f"{host}: {type(e).__name__}: {e}")
        content = answer.content[:MAX_BODY]
        if secret:
            content = content.replace(secret.encode(), b"[redacted by the egress proxy]")
        out_headers = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP | {"content-encoding"}}
        if secret:
            out_headers = {k: v.replace(secret, "[redacted]") for k, v in out_headers.items()}
        log.info(
            "egress", host=host, method=request.method, status=answer.status_code, credential=rule.secret is not None
        )
        return Response(content, status_code=answer.status_code, headers=out_headers)


def _refuse(status: int, text: str) -> Response:
    return PlainTextResponse(f"egress proxy: {text}\n", status_code=status)
