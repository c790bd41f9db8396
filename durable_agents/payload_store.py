"""Large payloads outside Temporal's history: the SDK's external storage with a filesystem driver.

A payload over DA_PAYLOAD_THRESHOLD bytes (default 256 KiB) — a 5 MB tool output, a long context
carried into a continued run — is written to the payload store and history holds a small reference
instead, so no workflow task fails on Temporal's payload size limits (2 MB by default) and history
stays small. Every worker and client must reach the same store: the default is `payloads/` in the
data directory (DA_DATA_DIR, default `.data`; DA_PAYLOAD_DIR for this store alone; a shared
filesystem serves several hosts), or an S3-compatible bucket with DA_PAYLOAD_STORE=s3://BUCKET (the
SDK's S3 driver; needs `pip install 'durable-agents[s3]'` and the usual AWS_* settings).

Files are named by the SHA-256 of their content, so a retried store writes the same file and
equal payloads are kept once. Nothing deletes them: they live as long as the histories that
point at them might be read (delete files older than your namespace's retention period).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    ExternalStorage,
    StorageDriver,
    StorageDriverClaim,
    StorageDriverRetrieveContext,
    StorageDriverStoreContext,
)

from durable_agents.codec import payload_codec
from durable_agents.settings import Settings, settings


class FileStorageDriver(StorageDriver):
    """Payloads as files in a directory, named by content hash."""

    def __init__(self, root: Path | str | None = None, name: str = "file") -> None:
        self.root = Path(root or settings().payload_dir)
        self._name = name

    def name(self) -> str:
        return self._name

    def type(self) -> str:
        return "durable-agents.file"

    def _path(self, digest: str) -> Path:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"not a payload reference: {digest!r}")
        return self.root / digest[:2] / digest

    def _store_one(self, payload: Payload) -> StorageDriverClaim:
        data = payload.SerializeToString(deterministic=True)
        digest = hashlib.sha256(data).hexdigest()
        path = self._path(digest)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f"{digest}.{os.getpid()}.partial")
            partial.write_bytes(data)
            partial.replace(path)
        return StorageDriverClaim(claim_data={"sha256": digest, "bytes": str(len(data))})

    def _retrieve_one(self, claim: StorageDriverClaim) -> Payload:
        digest = claim.claim_data.get("sha256", "")
        path = self._path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(
                f"payload {digest} is not in the payload store {self.root} (do all workers and clients share "
                "DA_PAYLOAD_DIR?)"
            ) from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise ValueError(f"payload {digest} in {self.root} is corrupt (its content hash differs)")
        payload = Payload()
        payload.ParseFromString(data)
        return payload

    async def store(self, context: StorageDriverStoreContext, payloads: Sequence[Payload]) -> list[StorageDriverClaim]:
        return await asyncio.to_thread(lambda: [self._store_one(p) for p in payloads])

    async def retrieve(
        self, context: StorageDriverRetrieveContext, claims: Sequence[StorageDriverClaim]
    ) -> list[Payload]:
        return await asyncio.to_thread(lambda: [self._retrieve_one(c) for c in claims])


def _s3_driver(bucket: str) -> StorageDriver:
    try:
        import aioboto3  # type: ignore[import-not-found]
        from temporalio.contrib.aws.s3driver import S3StorageDriver, S3StorageDriverClient
    except ImportError:
        raise RuntimeError("DA_PAYLOAD_STORE=s3://… needs the S3 client: pip install 'durable-agents[s3]'") from None

    class _Client(S3StorageDriverClient):
        """One short-lived aioboto3 client per call: nothing to open or close around the worker."""

        def __init__(self) -> None:
            self._session = aioboto3.Session()

        async def put_object(self, *, bucket: str, key: str, data: bytes) -> None:
            async with self._session.client("s3") as s3:
                await s3.put_object(Bucket=bucket, Key=key, Body=data)

        async def object_exists(self, *, bucket: str, key: str) -> bool:
            async with self._session.client("s3") as s3:
                try:
                    await s3.head_object(Bucket=bucket, Key=key)
                except s3.exceptions.ClientError:
                    return False
                return True

        async def get_object(self, *, bucket: str, key: str) -> bytes:
            async with self._session.client("s3") as s3:
                response = await s3.get_object(Bucket=bucket, Key=key)
                return bytes(await response["Body"].read())

    return S3StorageDriver(client=_Client(), bucket=bucket)


def external_storage(config: Settings | None = None) -> ExternalStorage | None:
    """The configured store (DA_PAYLOAD_STORE: a directory, s3://BUCKET, or `off`; by default the
    data directory's payloads/)."""
    config = config or settings()
    where = config.payload_store
    if where == "off":
        return None
    if where.startswith("s3://"):
        driver = _s3_driver(where.removeprefix("s3://"))
    else:
        driver = FileStorageDriver(where or config.payload_dir)
    return ExternalStorage(drivers=[driver], payload_size_threshold=config.payload_threshold)


def data_converter(config: Settings | None = None) -> DataConverter:
    """Pydantic payloads, encrypted when DA_ENCRYPT_HISTORY is on (codec.py), large ones in the payload
    store (encrypted first): every client and worker uses this."""
    config = config or settings()
    return dataclasses.replace(
        pydantic_data_converter, payload_codec=payload_codec(config), external_storage=external_storage(config)
    )
