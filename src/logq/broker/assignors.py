"""Partition assignment strategies for `ordered` groups.

A strategy maps the group's partitions to its members. It is given the
current assignment so it can keep partitions where they are: the fewer
partitions move, the fewer consumers pause. `sticky` (the default) keeps
every partition it can while staying balanced (member loads differ by at
most one); `range` gives contiguous blocks in member order, Kafka's classic.
More can be registered with `register_assignor`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from logq.errors import BadArgumentError

# (partition count, members in join order, current owner of each partition)
# -> owner of each partition
Assignor = Callable[[int, Sequence[str], Mapping[int, str]], dict[int, str]]

_ASSIGNORS: dict[str, Assignor] = {}


def register_assignor(name: str, assignor: Assignor) -> None:
    """Make `assignor` available to groups as `assignor: <name>`."""
    _ASSIGNORS[name] = assignor


def assignor(name: str) -> Assignor:
    found = _ASSIGNORS.get(name)
    if found is None:
        known = ", ".join(sorted(_ASSIGNORS))
        raise BadArgumentError(f"unknown assignor {name!r}; known: {known}")
    return found


def assignor_names() -> list[str]:
    return sorted(_ASSIGNORS)


def sticky(count: int, members: Sequence[str], current: Mapping[int, str]) -> dict[int, str]:
    """Balanced, moving as few partitions as possible.

    Each member may hold `count // n` partitions, and the first `count % n`
    members (most loaded first, so they keep what they have) one more. A
    member keeps its current partitions up to its quota; the rest, and the
    partitions of members that left, go to the least loaded members.
    """
    if not members:
        return {}
    held: dict[str, list[int]] = {name: [] for name in members}
    for partition in range(count):
        owner = current.get(partition)
        if owner in held:
            held[owner].append(partition)
    base, extra = divmod(count, len(members))
    by_load = sorted(members, key=lambda name: -len(held[name]))  # stable: join order on ties
    quota = {name: base + (1 if rank < extra else 0) for rank, name in enumerate(by_load)}
    result: dict[int, str] = {}
    free: list[int] = []
    for name in members:
        keep = held[name][: quota[name]]
        free += held[name][quota[name] :]
        for partition in keep:
            result[partition] = name
    free += [p for p in range(count) if p not in result and p not in free]
    free.sort()
    load = {name: len(held[name][: quota[name]]) for name in members}
    for partition in free:
        name = min(
            (n for n in members if load[n] < quota[n]), key=lambda n: (load[n], members.index(n))
        )
        result[partition] = name
        load[name] += 1
    return result


def contiguous(count: int, members: Sequence[str], current: Mapping[int, str]) -> dict[int, str]:
    """Blocks of consecutive partitions in member order, ignoring the current owners."""
    if not members:
        return {}
    base, extra = divmod(count, len(members))
    result: dict[int, str] = {}
    partition = 0
    for rank, name in enumerate(members):
        for _ in range(base + (1 if rank < extra else 0)):
            result[partition] = name
            partition += 1
    return result


register_assignor("sticky", sticky)
register_assignor("range", contiguous)
