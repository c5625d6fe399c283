"""The object store an archive lives in: S3, a local directory, or memory.

One small async interface over obstore's stores, so the archive's logic
never branches on where its objects are:

- `put_new` writes an object that must not exist yet (S3 `If-None-Match: *`,
  an exclusive create on a directory): archived segments are written under
  names that are never reused, and two writers of one name cannot both win.
- `get`, `get_range` (a ranged read), `head`, `list` (by prefix, recursive)
  and `delete` (idempotent: an object already gone is no error).

Errors are the storage engine's: `ObjectExistsError`, `ObjectNotFoundError`,
and `ArchiveUnavailableError` for everything that may pass by itself (the
store down, a timeout, throttling), which callers retry with backoff. An S3
request is tried again by obstore a few times within a few seconds only
(`STORE_RETRIES_MAX`, `STORE_RETRY_TIMEOUT_S`; its defaults are ten tries
within three minutes): uploads back off by themselves, and a read that
meets a store refusing connections answers UNAVAILABLE in about a second,
for its client to try again, instead of holding the request for a minute.

URLs (`logq serve --archive URL`): `s3://bucket/prefix` (credentials from the
usual AWS sources: environment, profile; `endpoint` for S3-compatible
servers), `file:///absolute/directory`, `memory://` (tests).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import obstore
from obstore.exceptions import AlreadyExistsError, NotFoundError
from obstore.store import LocalStore, MemoryStore, ObjectStore, S3Store

from logq.archive.errors import (
    ArchiveError,
    ArchiveUnavailableError,
    ObjectExistsError,
    ObjectNotFoundError,
)

LIST_CHUNK = 1000
STORE_RETRIES_MAX = 3  # obstore's own tries of a failed S3 request (connection, 5xx)
STORE_RETRY_TIMEOUT_S = 5.0  # and no new try this long after the first
STORE_CONNECT_TIMEOUT_S = 5.0  # a store that drops connections fails as fast


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    modified_ms: int


@dataclass(frozen=True, slots=True)
class ArchiveLocation:
    """Where an archive lives, as parsed from its URL and settings."""

    url: str
    endpoint: str | None = None
    region: str | None = None


class ArchiveStore:
    """Objects under one prefix of one store (keys are relative to it)."""

    def __init__(self, store: ObjectStore, description: str) -> None:
        self._store = store
        self.description = description

    def __repr__(self) -> str:
        return f"ArchiveStore({self.description})"

    async def put_new(self, key: str, data: bytes | memoryview) -> None:
        try:
            await obstore.put_async(self._store, key, data, mode="create")
        except (AlreadyExistsError, FileExistsError):
            raise ObjectExistsError(f"{self.description}: {key} exists already") from None
        except Exception as error:
            raise _unavailable(self, key, error) from error

    async def get(self, key: str) -> bytes:
        try:
            result = await obstore.get_async(self._store, key)
            return bytes(await result.bytes_async())
        except Exception as error:
            raise _mapped(self, key, error) from error

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of an object (fewer if it ends before `end`)."""
        if end <= start:
            return b""
        try:
            return bytes(await obstore.get_range_async(self._store, key, start=start, end=end))
        except Exception as error:
            raise _mapped(self, key, error) from error

    async def head(self, key: str) -> ObjectInfo:
        try:
            meta = await obstore.head_async(self._store, key)
        except Exception as error:
            raise _mapped(self, key, error) from error
        return _info(meta)

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Every object whose key starts with the path `prefix` (whole path
        segments: `a/b` lists `a/b/c`, not `a/bc`), in no promised order."""
        try:
            stream = obstore.list(self._store, prefix or None, chunk_size=LIST_CHUNK)
            async for chunk in stream:
                for meta in chunk:
                    yield _info(meta)
        except (FileNotFoundError, NotFoundError):
            return  # a directory store with nothing under the prefix yet
        except Exception as error:
            raise _unavailable(self, prefix, error) from error

    async def delete(self, key: str) -> None:
        try:
            await obstore.delete_async(self._store, key)
        except (NotFoundError, FileNotFoundError):
            return
        except Exception as error:
            raise _unavailable(self, key, error) from error


def _info(meta: obstore.ObjectMeta) -> ObjectInfo:
    return ObjectInfo(
        key=meta["path"],
        size=int(meta["size"]),
        modified_ms=int(meta["last_modified"].timestamp() * 1000),
    )


def _mapped(store: ArchiveStore, key: str, error: Exception) -> ArchiveError:
    if isinstance(error, (NotFoundError, FileNotFoundError)):
        return ObjectNotFoundError(f"{store.description}: no object {key}")
    return _unavailable(store, key, error)


def _unavailable(store: ArchiveStore, key: str, error: Exception) -> ArchiveError:
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return ArchiveUnavailableError(f"{store.description}: {key}: {first_line[:300]}")


def open_store(location: ArchiveLocation) -> ArchiveStore:
    """The store a URL names (see the module doc); ValueError if it is not one."""
    parts = urlsplit(location.url)
    prefix = parts.path.strip("/")
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ValueError(f"archive URL {location.url!r} names no bucket (s3://bucket/prefix)")
        options: dict[str, str] = {}
        if location.endpoint:
            options["endpoint"] = location.endpoint
        if location.region:
            options["region"] = location.region
        client_options: dict[str, object] = {
            "connect_timeout": timedelta(seconds=STORE_CONNECT_TIMEOUT_S)
        }
        if (location.endpoint or "").startswith("http:"):
            client_options["allow_http"] = True
        store: ObjectStore = S3Store(
            parts.netloc,
            prefix=prefix or None,
            config=options,  # type: ignore[arg-type]
            client_options=client_options,  # type: ignore[arg-type]
            retry_config={
                "max_retries": STORE_RETRIES_MAX,
                "retry_timeout": timedelta(seconds=STORE_RETRY_TIMEOUT_S),
            },
        )
        return ArchiveStore(store, f"s3://{parts.netloc}/{prefix}")
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"archive URL {location.url!r}: a file URL names a local path")
        directory = Path(parts.path)
        if not directory.is_absolute():
            raise ValueError(f"archive URL {location.url!r}: the path must be absolute")
        directory.mkdir(parents=True, exist_ok=True)
        return ArchiveStore(LocalStore(directory, mkdir=True), f"file://{directory}")
    if parts.scheme == "memory":
        return ArchiveStore(MemoryStore(), "memory://")
    raise ValueError(
        f"archive URL {location.url!r}: use s3://bucket/prefix, file:///directory or memory://"
    )
