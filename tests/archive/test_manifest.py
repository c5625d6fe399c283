"""The archive manifest: records applied in order give one answer, whatever
repeats, and readers find each offset in exactly one live segment."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from logq.archive.manifest import (
    ArchivedSegment,
    Copied,
    Manifest,
    Purged,
    Record,
    Retired,
    StartMoved,
    decode_record,
    encode_record,
)


def segment(base: int, next_offset: int, key: str | None = None) -> ArchivedSegment:
    return ArchivedSegment(
        key or f"k{base}-{next_offset}", base, next_offset, 100, base * 10, next_offset * 10 - 1
    )


def test_segments_are_found_by_offset_and_time() -> None:
    manifest = Manifest()
    for base, end in [(0, 100), (100, 250), (250, 300)]:
        manifest.apply(Copied(segment(base, end)))
    assert manifest.segment_for(0) == segment(0, 100)
    assert manifest.segment_for(99) == segment(0, 100)
    assert manifest.segment_for(100) == segment(100, 250)
    assert manifest.segment_for(299) == segment(250, 300)
    assert manifest.segment_for(300) is None
    assert manifest.offset_for_time(1500) == 100  # segment 100-250 holds times 1000-2499
    assert manifest.offset_for_time(10**9) is None


def test_a_repeated_upload_never_replaces_the_first() -> None:
    manifest = Manifest()
    manifest.apply(Copied(segment(0, 100, "first")))
    manifest.apply(Copied(segment(0, 100, "second")))  # a retried upload, recorded twice
    assert [s.key for s in manifest.segments] == ["first"]
    assert manifest.holds("first") and not manifest.holds("second")
    assert manifest.check(Copied(segment(150, 200))) is not None  # a gap is refused


def test_below_the_start_only_audit_reads_see_segments_until_retired() -> None:
    manifest = Manifest()
    for base in range(0, 400, 100):
        manifest.apply(Copied(segment(base, base + 100)))
    manifest.apply(StartMoved(200))
    assert manifest.segment_for(150) is None
    assert manifest.segment_for(150, include_deleted=True) == segment(100, 200)
    manifest.apply(Retired(200, at_ms=5_000))
    assert manifest.segment_for(150, include_deleted=True) is None
    assert manifest.first_offset == 200
    # retired objects stay the manifest's until purged after the grace
    assert manifest.holds("k0-100") and manifest.holds("k100-200")
    assert manifest.due_for_purge(now_ms=6_000, grace_ms=10_000) == []
    due = manifest.due_for_purge(now_ms=15_000, grace_ms=10_000)
    assert sorted(due) == ["k0-100", "k100-200"]
    manifest.apply(Purged(due))
    assert not manifest.holds("k0-100")


records = st.lists(
    st.one_of(
        st.builds(lambda n: ("copy", n), st.integers(1, 50)),
        st.builds(lambda n: ("again", n), st.integers(0, 5)),
        st.builds(lambda n: ("start", n), st.integers(0, 500)),
        st.builds(lambda n: ("retire", n), st.integers(0, 500)),
        st.just(("purge", 0)),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(records)
def test_replaying_the_encoded_records_gives_the_same_manifest(
    steps: list[tuple[str, int]],
) -> None:
    manifest = Manifest()
    log: list[Record] = []
    for now, (kind, n) in enumerate(steps, start=1):
        record: Record
        end = manifest.archived_end or 0
        if kind == "copy":
            record = Copied(segment(end, end + n, f"u{now}"))
        elif kind == "again" and manifest.segments:
            old = manifest.segments[min(n, len(manifest.segments) - 1)]
            record = Copied(segment(old.base_offset, old.next_offset, f"retry{now}"))
        elif kind == "start":
            record = StartMoved(n)
        elif kind == "retire":
            record = Retired(n, now)
        else:
            record = Purged(manifest.due_for_purge(now, 3))
        assert manifest.check(record) is None
        manifest.apply(record)
        log.append(decode_record(encode_record(record)))
        # the live segments are contiguous and each offset has one home
        for before, after in zip(manifest.segments, manifest.segments[1:], strict=False):
            assert before.next_offset == after.base_offset
    replayed = Manifest()
    for record in log:
        replayed.apply(record)
    assert replayed.state() == manifest.state()
    assert Manifest.restored(manifest.state()).state() == manifest.state()
