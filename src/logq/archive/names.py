"""Names of archive objects (docs/format.md, "Archive objects").

    topics/<topic>/<partition>/<base offset, 20 digits>-<next offset, 20 digits>-<upload id>.seg
    topics/<topic>/<partition>/manifest/<version, 20 digits>.json

A segment object's name carries a fresh upload id, so an upload that is
retried, or made again by another broker, never overwrites an object a
reader may be reading: the manifest says which of them is the partition's.
Manifest copies are numbered; each is written with `put_new`, so two
writers of one version cannot both succeed (a compare-and-swap by name).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

SEGMENT_SUFFIX = ".seg"
MANIFEST_DIRECTORY = "manifest"
_SEGMENT = re.compile(r"^(\d{20})-(\d{20})-([0-9a-f]{16})\.seg$")
_MANIFEST = re.compile(r"^(\d{20})\.json$")


@dataclass(frozen=True, slots=True)
class SegmentName:
    topic: str
    partition: int
    base_offset: int
    next_offset: int
    upload_id: str

    @property
    def key(self) -> str:
        return (
            f"{partition_prefix(self.topic, self.partition)}/"
            f"{self.base_offset:020d}-{self.next_offset:020d}-{self.upload_id}{SEGMENT_SUFFIX}"
        )


def topic_prefix(topic: str) -> str:
    return f"topics/{topic}"


def partition_prefix(topic: str, partition: int) -> str:
    return f"{topic_prefix(topic)}/{partition}"


def new_segment_name(topic: str, partition: int, base_offset: int, next_offset: int) -> SegmentName:
    return SegmentName(topic, partition, base_offset, next_offset, secrets.token_hex(8))


def manifest_key(topic: str, partition: int, version: int) -> str:
    return f"{partition_prefix(topic, partition)}/{MANIFEST_DIRECTORY}/{version:020d}.json"


def parse_segment_key(key: str) -> SegmentName | None:
    """The parts of a segment object's key, or None if it is not one."""
    parts = key.split("/")
    if len(parts) != 4 or parts[0] != "topics" or not parts[2].isdigit():
        return None
    found = _SEGMENT.match(parts[3])
    if found is None:
        return None
    return SegmentName(parts[1], int(parts[2]), int(found[1]), int(found[2]), found[3])


def parse_manifest_key(key: str) -> tuple[str, int, int] | None:
    """(topic, partition, version) of a manifest copy's key, or None."""
    parts = key.split("/")
    if len(parts) != 5 or parts[0] != "topics" or parts[3] != MANIFEST_DIRECTORY:
        return None
    found = _MANIFEST.match(parts[4])
    if found is None or not parts[2].isdigit():
        return None
    return parts[1], int(parts[2]), int(found[1])
