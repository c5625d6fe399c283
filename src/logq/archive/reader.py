"""Reading archived segments: ranged requests through a bounded disk cache.

A read of offsets below the broker's local start finds its segment in the
manifest, then its object's footer (one ranged request for the last 64 KiB,
kept in a small memory cache), then the chunk of data that holds the
offset's batch. Data moves in fixed chunks (`chunk_bytes`, 4 MiB by
default), each kept in a disk cache of bounded size (least recently used
chunks go first), so a second pass over the same range costs no request.

- Concurrent misses of one chunk are merged: one request, every reader
  waits for it.
- A reader that goes on to the next chunk of an object (a sequential scan:
  a group catching up, a replay) starts the read of the chunk after it
  (read-ahead), so the scan rarely waits for the store.
- Requests to the store run under their own bound (`requests_max`), so
  remote reads never take every thread or connection from local work; the
  cache's disk work runs in threads, off the event loop.
- A request not answered within `request_timeout_s` (its wait for a slot
  included) fails with ArchiveUnavailableError, as a store that refuses
  does: the reader's client hears UNAVAILABLE and may try again, and a
  hung store never holds a read, nor a storage thread, for longer.
- Every batch handed on has passed its CRC (segment_object.whole_batches):
  a damaged object or chunk raises ArchiveDamagedError and is dropped from
  the cache, never served.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from logq.archive.errors import ArchiveDamagedError, ArchiveUnavailableError
from logq.archive.manifest import ArchivedSegment
from logq.archive.segment_object import (
    TAIL_READ_BYTES,
    Footer,
    decode_footer,
    footer_span,
    whole_batches,
)
from logq.archive.store import ArchiveStore

CHUNK_BYTES = 4 << 20
CACHE_BYTES = 1 << 30
REQUESTS_MAX = 8
REQUEST_TIMEOUT_S = 10.0  # a 4 MiB chunk at 400 KiB/s; a reader's client waits 30 s
FOOTERS_KEPT = 1024


@dataclass(slots=True)
class ReaderStats:
    requests: int = 0
    bytes_read: int = 0  # from the store
    hits: int = 0  # chunks found in the cache
    misses: int = 0
    merged: int = 0  # misses that joined a request in flight
    read_ahead: int = 0
    evicted: int = 0


class ChunkCache:
    """Chunks of objects on local disk, at most `limit_bytes` of them."""

    def __init__(self, directory: Path, limit_bytes: int) -> None:
        self.directory = directory
        self.limit_bytes = limit_bytes
        self._sizes: OrderedDict[str, int] = OrderedDict()  # file name -> bytes, LRU first
        self._total = 0
        directory.mkdir(parents=True, exist_ok=True)
        for path in directory.iterdir():  # a cache survives no restart: what it held may be stale
            path.unlink()

    @staticmethod
    def name(key: str, chunk: int) -> str:
        return f"{hashlib.sha256(key.encode()).hexdigest()[:32]}-{chunk}"

    def has(self, name: str) -> bool:
        return name in self._sizes

    def get(self, name: str) -> bytes | None:
        if name not in self._sizes:
            return None
        try:
            data = (self.directory / name).read_bytes()
        except OSError:
            self._forget(name)
            return None
        self._sizes.move_to_end(name)
        return data

    def put(self, name: str, data: bytes) -> int:
        """Keep a chunk; returns how many were evicted for it."""
        if len(data) > self.limit_bytes:
            return 0
        evicted = 0
        while self._total + len(data) > self.limit_bytes and self._sizes:
            oldest = next(iter(self._sizes))
            self.drop(oldest)
            evicted += 1
        temporary = self.directory / f".{name}.tmp"
        temporary.write_bytes(data)
        os.replace(temporary, self.directory / name)
        self._sizes[name] = len(data)
        self._total += len(data)
        return evicted

    def drop(self, name: str) -> None:
        self._forget(name)
        with contextlib.suppress(FileNotFoundError):
            (self.directory / name).unlink()

    def _forget(self, name: str) -> None:
        self._total -= self._sizes.pop(name, 0)

    @property
    def bytes(self) -> int:
        return self._total


class ArchiveReader:
    """Reads of archived segments (see the module doc)."""

    def __init__(
        self,
        store: ArchiveStore,
        cache: ChunkCache,
        *,
        chunk_bytes: int = CHUNK_BYTES,
        requests_max: int = REQUESTS_MAX,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> None:
        self.store = store
        self.cache = cache
        self.chunk_bytes = chunk_bytes
        self.request_timeout_s = request_timeout_s
        self.stats = ReaderStats()
        self._requests = asyncio.Semaphore(requests_max)
        self._footers: OrderedDict[str, Footer] = OrderedDict()
        self._in_flight: dict[str, asyncio.Future[bytes]] = {}
        self._ahead: set[asyncio.Task[None]] = set()
        self._last_chunk: dict[str, int] = {}  # per object: the chunk read last
        self._cache_lock = asyncio.Lock()  # the cache's index is changed by one thread at a time

    async def close(self) -> None:
        for task in list(self._ahead):
            task.cancel()
        await asyncio.gather(*self._ahead, return_exceptions=True)

    async def footer(self, segment: ArchivedSegment) -> Footer:
        found = self._footers.get(segment.key)
        if found is not None:
            self._footers.move_to_end(segment.key)
            return found
        size = segment.size
        tail = await self._request(segment.key, max(0, size - TAIL_READ_BYTES), size)
        start, _ = footer_span(size, tail)
        if start < size - len(tail):
            tail = await self._request(segment.key, start, size)
        footer = decode_footer(size, tail)
        if footer.data_length < size - len(tail):  # indexes larger than the tail read
            tail = await self._request(segment.key, footer.data_length, size)
            footer = decode_footer(size, tail)
        if (footer.base_offset, footer.next_offset) != (segment.base_offset, segment.next_offset):
            raise ArchiveDamagedError(
                f"{segment.key} holds offsets {footer.base_offset}-{footer.next_offset},"
                f" the manifest says {segment.base_offset}-{segment.next_offset}"
            )
        self._footers[segment.key] = footer
        while len(self._footers) > FOOTERS_KEPT:
            self._footers.popitem(last=False)
        return footer

    async def read(self, segment: ArchivedSegment, offset: int, max_bytes: int) -> bytes:
        """Whole, verified batches from the one that holds `offset`, about
        `max_bytes` of them (at least one batch, at most the segment's rest)."""
        footer = await self.footer(segment)
        position = footer.position_of(offset)
        out = bytearray()
        pending = b""
        start = position
        while position < footer.data_length and (not out or len(out) < max_bytes):
            chunk = position // self.chunk_bytes
            data = await self._chunk(segment.key, footer, chunk)
            within = position - chunk * self.chunk_bytes
            piece = pending + data[within:]
            try:
                got, end = whole_batches(piece, start, offset, footer)
            except ArchiveDamagedError:
                async with self._cache_lock:
                    self.cache.drop(ChunkCache.name(segment.key, chunk))
                raise
            out += got
            pending = piece[end - start :]
            start = end
            position = (chunk + 1) * self.chunk_bytes
            if len(pending) > 0 and position >= footer.data_length:
                raise ArchiveDamagedError(f"{segment.key}: the data ends inside a batch")
        return bytes(out)

    async def _chunk(self, key: str, footer: Footer, chunk: int) -> bytes:
        name = ChunkCache.name(key, chunk)
        async with self._cache_lock:
            cached = await asyncio.to_thread(self.cache.get, name)
        sequential = self._last_chunk.get(key) == chunk - 1
        self._last_chunk[key] = chunk
        if cached is not None:
            self.stats.hits += 1
        else:
            cached = await self._fetch(key, footer, chunk, name)
        if sequential and (chunk + 1) * self.chunk_bytes < footer.data_length:
            self._read_ahead(key, footer, chunk + 1)
        return cached

    async def _fetch(self, key: str, footer: Footer, chunk: int, name: str) -> bytes:
        waiting = self._in_flight.get(name)
        if waiting is not None:
            self.stats.merged += 1
            return await asyncio.shield(waiting)
        self.stats.misses += 1
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._in_flight[name] = future
        try:
            start = chunk * self.chunk_bytes
            data = await self._request(
                key, start, min(start + self.chunk_bytes, footer.data_length)
            )
            async with self._cache_lock:
                self.stats.evicted += await asyncio.to_thread(self.cache.put, name, data)
            future.set_result(data)
            return data
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved here: a merged reader re-raises it
            raise
        finally:
            del self._in_flight[name]

    def _read_ahead(self, key: str, footer: Footer, chunk: int) -> None:
        name = ChunkCache.name(key, chunk)
        if name in self._in_flight:
            return

        async def fetch() -> None:
            async with self._cache_lock:
                present = self.cache.has(name)
            if not present:
                self.stats.read_ahead += 1
                with contextlib.suppress(Exception):
                    await self._fetch(key, footer, chunk, name)

        task = asyncio.get_running_loop().create_task(fetch())
        self._ahead.add(task)
        task.add_done_callback(self._ahead.discard)

    async def _request(self, key: str, start: int, end: int) -> bytes:
        try:
            async with asyncio.timeout(self.request_timeout_s), self._requests:
                data = await self.store.get_range(key, start, end)
        except TimeoutError:
            raise ArchiveUnavailableError(
                f"{self.store.description}: {key}: no answer within {self.request_timeout_s:g} s"
            ) from None
        self.stats.requests += 1
        self.stats.bytes_read += len(data)
        return data
