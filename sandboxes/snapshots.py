"""Where workspace snapshots live: a blob store. The default keeps them on the local disk in the
data directory's `blobs/` (DA_DATA_DIR, or DA_BLOB_DIR); a shared directory (NFS) serves several
sandbox hosts, and any store with put/get by key (an S3-compatible bucket) can stand in through
`BlobStore`.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import BinaryIO, Protocol

from durable_agents.settings import settings


class BlobStore(Protocol):
    def writer(self, key: str) -> AbstractContextManager[BinaryIO]: ...
    def read(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def delete_prefix(self, prefix: str) -> None: ...


class LocalBlobStore:
    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root or settings().blob_dir)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"blob key escapes the store: {key!r}")
        return path

    @contextmanager
    def writer(self, key: str) -> Iterator[BinaryIO]:
        """Write a blob; it appears under its key only once complete."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        with open(partial, "wb") as f:
            yield f
        partial.replace(path)

    def read(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self._path(prefix), ignore_errors=True)
