"""PostgreSQL as a queue through asyncpg: COPY in batches, and
`DELETE … FOR UPDATE SKIP LOCKED … RETURNING` to take (and settle) messages.

A queue is one table with a partition column. A publish is one COPY (one
INSERT for a single message), its own transaction: committed, and so
fsync'd, before it returns. Consumers poll; an empty poll waits 1 ms.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from logq.bench.compare.system import Conn, OnBatch, PeerUnavailableError, Queue, System

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:25432/postgres"

TAKE = """
DELETE FROM {table} WHERE id IN (
    SELECT id FROM {table} ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
) RETURNING payload
"""


def _table(queue: Queue) -> str:
    return '"' + queue.name.replace('"', "") + '"'


class PostgresConn(Conn):
    def __init__(self, connection: Any) -> None:
        self.connection = connection

    async def publish(self, queue: Queue, partition: int, values: Sequence[bytes]) -> None:
        if len(values) == 1:
            await self.connection.execute(
                f"INSERT INTO {_table(queue)} (partition, payload) VALUES ($1, $2)",
                partition,
                values[0],
            )
            return
        await self.connection.copy_records_to_table(
            queue.name, records=[(partition, v) for v in values], columns=("partition", "payload")
        )

    async def close(self) -> None:
        await self.connection.close()


class PostgresSystem(System):
    name = "postgresql"

    def __init__(self, dsn: str = DEFAULT_DSN) -> None:
        self.dsn = dsn
        self.rest_url = None
        self.admin: Any = None
        self.settings = "fsync on, synchronous_commit on; asyncpg; a transaction per batch"

    async def open(self) -> None:
        try:
            import asyncpg  # noqa: PLC0415
        except ImportError as error:
            raise PeerUnavailableError(
                "asyncpg is not installed (pip install 'logq[bench]')"
            ) from error
        self._asyncpg = asyncpg
        try:
            self.admin = await asyncpg.connect(self.dsn, timeout=5)
        except Exception as error:  # asyncpg raises its own family, and OSError
            raise PeerUnavailableError(f"no PostgreSQL at {self.dsn}: {error}") from error
        fsync = await self.admin.fetchval("SHOW fsync")
        commit = await self.admin.fetchval("SHOW synchronous_commit")
        self.settings = (
            f"fsync {fsync}, synchronous_commit {commit}; asyncpg; "
            "a transaction per batch; consumers poll every 1 ms when empty"
        )

    async def close(self) -> None:
        if self.admin is not None:
            await self.admin.close()

    async def connect(self) -> Conn:
        return PostgresConn(await self._asyncpg.connect(self.dsn, timeout=30))

    async def create(self, queue: Queue) -> None:
        await self.admin.execute(
            f"CREATE TABLE {_table(queue)} (id bigserial PRIMARY KEY, "
            "partition int NOT NULL, payload bytea NOT NULL)"
        )

    async def drop(self, queue: Queue) -> None:
        await self.admin.execute(f"DROP TABLE IF EXISTS {_table(queue)}")

    async def consume(
        self, queue: Queue, count: int, *, ordered: bool, workers: int, on_batch: OnBatch | None
    ) -> None:
        left = [count]
        take = TAKE.format(table=_table(queue))
        await asyncio.gather(
            *(self._worker(take, left, on_batch) for _ in range(1 if ordered else workers))
        )

    async def _worker(self, take: str, left: list[int], on_batch: OnBatch | None) -> None:
        connection = await self._asyncpg.connect(self.dsn)
        try:
            while left[0] > 0:
                rows = await connection.fetch(take, 1000)
                if not rows:
                    await asyncio.sleep(0.001)
                    continue
                if on_batch is not None:
                    on_batch([row[0] for row in rows])
                left[0] -= len(rows)
        finally:
            await connection.close()
