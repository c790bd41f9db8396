"""Encrypted history: an AES-256-GCM payload codec, its keys, and the codec server.

With encryption on (DA_ENCRYPT_HISTORY=1), every payload a worker or client writes — workflow and
activity inputs and results, events, memos, summaries, failures' details — reaches Temporal as
ciphertext (`encoding: binary/encrypted`, the key's id in `encryption-key-id`). The server, the
`temporal` CLI and the Web UI see only that, unless pointed at `da codec-server`, which
decrypts for them and never hands out a key.

Keys: a JSON file (DA_CODEC_KEY_FILE, default codec-keys.json in the data directory, mode 0600)
`{"active": "k2", "keys": {"k1": "<base64 32 bytes>", "k2": "..."}}`, or DA_CODEC_KEYS
`k2:<base64>,k1:<base64>` (the first is active). New payloads use the active key; any listed key
decrypts, so rotation is: add a key and make it active (`da codec-key rotate`), roll it out
to every worker and client, and drop the old one once no retained history uses it.
Workers never create keys: a worker with encryption on and no keys stops at start, saying so.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from durable_agents.errors import UserError
from durable_agents.settings import Settings, settings
from durable_agents.vault import aes256_key

if TYPE_CHECKING:
    from starlette.applications import Starlette

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"


class CodecKeyError(UserError):
    """Keys missing or malformed, or a payload sealed with a key this process does not hold."""


def encryption_enabled(config: Settings | None = None) -> bool:
    return (config or settings()).encrypt_history


def key_file(config: Settings | None = None) -> Path:
    return (config or settings()).codec_key_file


@dataclass(frozen=True)
class KeyRing:
    active: str
    keys: dict[str, bytes]

    @classmethod
    def parse(cls, data: dict[str, object], where: str) -> KeyRing:
        raw = data.get("keys")
        active = data.get("active")
        if not isinstance(raw, dict) or not raw or not isinstance(active, str):
            raise CodecKeyError(f"{where}: expected {{'active': ID, 'keys': {{ID: base64 key}}}}")
        keys = {str(k): _key(str(v), f"{where}, key {k!r}") for k, v in raw.items()}
        if active not in keys:
            raise CodecKeyError(f"{where}: the active key {active!r} is not among its keys ({', '.join(keys)})")
        return cls(active, keys)

    @classmethod
    def load(cls, config: Settings | None = None) -> KeyRing:
        """This process's keys: DA_CODEC_KEYS, else the key file. A clear error if there are none."""
        config = config or settings()
        inline = config.codec_keys.get_secret_value().strip() if config.codec_keys else ""
        if inline:
            pairs = [p.strip().partition(":") for p in inline.split(",") if p.strip()]
            if any(not sep or not kid for kid, sep, _ in pairs):
                raise CodecKeyError("DA_CODEC_KEYS: expected ID:BASE64KEY[,ID:BASE64KEY...]")
            return cls(pairs[0][0], {kid: _key(v, f"DA_CODEC_KEYS, key {kid!r}") for kid, _, v in pairs})
        path = config.codec_key_file
        if not path.exists():
            raise CodecKeyError(
                f"history encryption is on (DA_ENCRYPT_HISTORY) but this process has no codec keys: {path} does not "
                "exist and DA_CODEC_KEYS is unset (create keys with `da codec-key new` and give every "
                "worker and client the same file)"
            )
        try:
            data = json.loads(path.read_text())
        except ValueError as e:
            raise CodecKeyError(f"{path} is not JSON: {e}") from None
        return cls.parse(data, str(path))

    def rotated(self) -> KeyRing:
        kid = f"k{len(self.keys) + 1}-{secrets.token_hex(3)}"
        return KeyRing(kid, {**self.keys, kid: AESGCM.generate_key(bit_length=256)})

    def to_json(self) -> str:
        keys = {k: base64.b64encode(v).decode() for k, v in self.keys.items()}
        return json.dumps({"active": self.active, "keys": keys}, indent=1)


def _key(text: str, where: str) -> bytes:
    return aes256_key(text, where, CodecKeyError)


def write_key_file(ring: KeyRing, path: Path | None = None) -> Path:
    path = path or key_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(ring.to_json() + "\n")
    tmp.replace(path)
    return path


def new_key_file(path: Path | None = None) -> KeyRing:
    """A key file with one fresh key (or, if one exists, the same file with a new active key)."""
    path = path or key_file()
    ring = KeyRing.parse(json.loads(path.read_text()), str(path)).rotated() if path.exists() else None
    if ring is None:
        ring = KeyRing("k1", {"k1": AESGCM.generate_key(bit_length=256)})
    write_key_file(ring, path)
    return ring


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over each serialized payload; a random 96-bit nonce is prefixed to the ciphertext."""

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring
        self._ciphers = {kid: AESGCM(key) for kid, key in ring.keys.items()}

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        kid = self.ring.active
        cipher = self._ciphers[kid]
        out = []
        for p in payloads:
            nonce = os.urandom(12)
            sealed = nonce + cipher.encrypt(nonce, p.SerializeToString(), kid.encode())
            out.append(Payload(metadata={"encoding": ENCODING, KEY_ID: kid.encode()}, data=sealed))
        return out

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        out = []
        for p in payloads:
            if p.metadata.get("encoding") != ENCODING:
                out.append(p)  # written before encryption was turned on, or not ours
                continue
            kid = p.metadata.get(KEY_ID, b"").decode()
            cipher = self._ciphers.get(kid)
            if cipher is None:
                raise CodecKeyError(
                    f"a payload is encrypted with codec key {kid!r}, which this process does not hold "
                    f"(it has: {', '.join(self._ciphers)}); give it the same key file as the clients"
                )
            try:
                plain = cipher.decrypt(p.data[:12], p.data[12:], kid.encode())
            except Exception:
                raise CodecKeyError(f"a payload does not decrypt with codec key {kid!r}: the key differs") from None
            decoded = Payload()
            decoded.ParseFromString(plain)
            out.append(decoded)
        return out


def payload_codec(config: Settings | None = None) -> EncryptionCodec | None:
    """The codec every client and worker uses: None unless DA_ENCRYPT_HISTORY is on."""
    config = config or settings()
    return EncryptionCodec(KeyRing.load(config)) if config.encrypt_history else None


def codec_server_app(codec: PayloadCodec, cors_origins: Sequence[str]) -> Starlette:
    """Temporal's remote codec protocol: POST /encode and /decode with `{"payloads": [...]}` (the
    protobuf JSON of Payloads). The Web UI calls it from the browser, hence CORS for its origin."""
    from google.protobuf import json_format
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.cors import CORSMiddleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route
    from temporalio.api.common.v1 import Payloads

    def handler(encode: bool) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                payloads = json_format.Parse(await request.body(), Payloads())
            except json_format.ParseError as e:
                return JSONResponse({"error": f"the body is not Payloads JSON: {e}"}, status_code=400)
            try:
                done = await (codec.encode if encode else codec.decode)(list(payloads.payloads))
            except CodecKeyError as e:
                return JSONResponse({"error": str(e)}, status_code=400)
            body = json_format.MessageToJson(Payloads(payloads=done))
            return Response(body, media_type="application/json")

        return endpoint

    return Starlette(
        routes=[Route("/encode", handler(True), methods=["POST"]), Route("/decode", handler(False), methods=["POST"])],
        middleware=[
            Middleware(
                CORSMiddleware,
                allow_origins=list(cors_origins),
                allow_methods=["POST", "OPTIONS"],
                allow_headers=["content-type", "x-namespace", "authorization"],
                allow_credentials=True,
            )
        ],
    )
