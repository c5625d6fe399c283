"""The archive's object store contract, on memory, a directory and S3 (moto):
writes that never overwrite, ranged reads, listing by prefix, idempotent
deletes, and the reconciler that removes what no manifest references."""

from __future__ import annotations

import asyncio

import pytest

from logq.archive.errors import ObjectExistsError, ObjectNotFoundError
from logq.archive.names import manifest_key, new_segment_name, parse_segment_key
from logq.archive.reconcile import MANIFEST_COPIES_KEPT, reconcile
from logq.archive.store import ArchiveLocation, ArchiveStore, open_store


async def keys(store: ArchiveStore, prefix: str = "") -> list[str]:
    return sorted([info.key async for info in store.list(prefix)])


def test_an_object_is_written_once_and_never_overwritten(store: ArchiveStore) -> None:
    async def main() -> None:
        await store.put_new("topics/t/0/a.seg", b"first")
        with pytest.raises(ObjectExistsError):
            await store.put_new("topics/t/0/a.seg", b"second")
        assert await store.get("topics/t/0/a.seg") == b"first"
        assert (await store.head("topics/t/0/a.seg")).size == 5

    asyncio.run(main())


def test_concurrent_writers_of_one_name_have_one_winner(store: ArchiveStore) -> None:
    async def main() -> None:
        outcomes = await asyncio.gather(
            *(store.put_new("race", f"writer {n}".encode()) for n in range(8)),
            return_exceptions=True,
        )
        winners = [n for n, outcome in enumerate(outcomes) if outcome is None]
        assert len(winners) == 1
        assert all(isinstance(o, ObjectExistsError) for o in outcomes if o is not None)
        assert await store.get("race") == f"writer {winners[0]}".encode()

    asyncio.run(main())


def test_ranged_reads_return_exactly_the_bytes_asked_for(store: ArchiveStore) -> None:
    data = bytes(range(256)) * 64

    async def main() -> None:
        await store.put_new("blob", data)
        for start, end in [(0, 1), (10, 300), (4000, len(data)), (len(data) - 7, len(data))]:
            assert await store.get_range("blob", start, end) == data[start:end]
        assert await store.get_range("blob", 5, 5) == b""

    asyncio.run(main())


def test_missing_objects_are_reported_and_deletes_are_idempotent(store: ArchiveStore) -> None:
    async def main() -> None:
        with pytest.raises(ObjectNotFoundError):
            await store.get("nothing")
        with pytest.raises(ObjectNotFoundError):
            await store.head("nothing")
        with pytest.raises(ObjectNotFoundError):
            await store.get_range("nothing", 0, 10)
        await store.put_new("gone", b"x")
        await store.delete("gone")
        await store.delete("gone")
        await store.delete("never-was")
        assert await keys(store) == []

    asyncio.run(main())


def test_listing_goes_by_whole_path_segments(store: ArchiveStore) -> None:
    async def main() -> None:
        assert await keys(store, "topics") == []  # nothing yet (a directory not made)
        for key in ["topics/a/0/x", "topics/a/1/y", "topics/ab/0/z", "other"]:
            await store.put_new(key, b"-")
        assert await keys(store, "topics/a") == ["topics/a/0/x", "topics/a/1/y"]
        assert await keys(store, "topics") == ["topics/a/0/x", "topics/a/1/y", "topics/ab/0/z"]
        assert len(await keys(store)) == 4

    asyncio.run(main())


def test_many_objects_are_listed_across_pages(store: ArchiveStore) -> None:
    async def main() -> None:
        for first in range(0, 1200, 50):  # a few at a time: a loaded test machine
            await asyncio.gather(
                *(store.put_new(f"p/{n:05d}", b"") for n in range(first, first + 50))
            )
        assert await keys(store, "p") == [f"p/{n:05d}" for n in range(1200)]

    asyncio.run(main())


def test_the_reconciler_removes_old_orphans_and_nothing_else(store: ArchiveStore) -> None:
    async def main() -> None:
        kept = new_segment_name("t", 0, 0, 100)
        orphan = new_segment_name("t", 0, 100, 200)  # an upload the manifest never took
        retried = new_segment_name("t", 0, 0, 100)  # a second try of the first upload
        for name in (kept, orphan, retried):
            await store.put_new(name.key, b"segment")
        await store.put_new("topics/t/0/notes.txt", b"not ours")
        for version in range(1, 6):
            await store.put_new(manifest_key("t", 0, version), b"{}")
        listed = [info async for info in store.list("topics")]
        newest_ms = max(info.modified_ms for info in listed)
        referenced = {kept.key}

        young = await reconcile(
            store, "topics", referenced.__contains__, now_ms=newest_ms, min_age_ms=3_600_000
        )
        # orphans within the safety bound stay; only old manifest copies go
        assert young.young == 2
        assert sorted(young.removed) == [manifest_key("t", 0, 1), manifest_key("t", 0, 2)]

        report = await reconcile(
            store,
            "topics",
            referenced.__contains__,
            now_ms=newest_ms + 7_200_000,
            min_age_ms=3_600_000,
        )
        assert sorted(report.removed) == sorted([orphan.key, retried.key])
        left = await keys(store, "topics")
        assert kept.key in left and "topics/t/0/notes.txt" in left
        assert [k for k in left if "/manifest/" in k] == [
            manifest_key("t", 0, v) for v in range(6 - MANIFEST_COPIES_KEPT, 6)
        ]

    asyncio.run(main())


def test_the_reconciler_removes_the_manifest_copies_of_partitions_not_held(
    store: ArchiveStore,
) -> None:
    async def main() -> None:
        for version in range(1, 3):
            await store.put_new(manifest_key("gone", 0, version), b"{}")
            await store.put_new(manifest_key("kept", 0, version), b"{}")
        listed = [info async for info in store.list("topics")]
        newest_ms = max(info.modified_ms for info in listed)

        def held(topic: str, partition: int) -> bool:
            return topic == "kept"

        young = await reconcile(
            store,
            "topics",
            lambda key: False,
            now_ms=newest_ms,
            min_age_ms=3_600_000,
            partition_held=held,
        )
        assert young.removed == [] and young.young == 2
        report = await reconcile(
            store,
            "topics",
            lambda key: False,
            now_ms=newest_ms + 7_200_000,
            min_age_ms=3_600_000,
            partition_held=held,
        )
        assert sorted(report.removed) == [manifest_key("gone", 0, v) for v in (1, 2)]
        assert sorted(await keys(store, "topics")) == [manifest_key("kept", 0, v) for v in (1, 2)]

    asyncio.run(main())


def test_segment_names_carry_their_range_and_never_repeat() -> None:
    first = new_segment_name("orders", 3, 1000, 2000)
    second = new_segment_name("orders", 3, 1000, 2000)
    assert first.key != second.key
    assert parse_segment_key(first.key) == first
    assert parse_segment_key("topics/orders/3/garbage.seg") is None


def test_bad_archive_urls_are_refused_with_the_reason() -> None:
    for url, words in [
        ("ftp://host/x", "use s3://"),
        ("s3:///prefix", "no bucket"),
        ("file://relative/path", "local path"),
    ]:
        with pytest.raises(ValueError, match=words):
            open_store(ArchiveLocation(url))
