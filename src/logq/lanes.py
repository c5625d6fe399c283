"""Priority lanes: their names, their order, and the index each batch carries.

A batch carries its lane as a 3-bit index (attribute bits 3-5), so there
are at most 8 lanes. Index 0 is always `normal`, the lane of a batch built
without one; the other names take indexes 1, 2, ... in the order they are
configured. The configured order is the priority order, highest first: by
default high, normal, low (indexes 1, 0, 2, as the format has always had).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from logq.errors import BadArgumentError

NORMAL = "normal"
DEFAULT_ORDER: tuple[str, ...] = ("high", NORMAL, "low")
LANES_MAX = 8
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


class Lanes:
    __slots__ = ("by_index", "index", "order", "rank")

    def __init__(self, order: Sequence[str] = DEFAULT_ORDER) -> None:
        names = list(order)
        if not 1 <= len(names) <= LANES_MAX or len(set(names)) != len(names):
            raise BadArgumentError(f"lanes: 1..{LANES_MAX} distinct names, got {names!r}")
        for name in names:
            if not isinstance(name, str) or not _NAME.match(name):
                raise BadArgumentError(f"lane name {name!r}: lowercase letters, digits, - and _")
        if NORMAL not in names:
            raise BadArgumentError(f"lanes must include {NORMAL!r} (the lane of unmarked batches)")
        self.order = tuple(names)
        self.by_index: tuple[str, ...] = (NORMAL, *(name for name in names if name != NORMAL))
        self.index = {name: index for index, name in enumerate(self.by_index)}
        self.rank = {self.index[name]: position for position, name in enumerate(names)}

    def index_of(self, name: object) -> int:
        if not isinstance(name, str) or name not in self.index:
            raise BadArgumentError(f"priority must be one of {', '.join(self.order)}; got {name!r}")
        return self.index[name]

    def name_of(self, index: int) -> str:
        return self.by_index[index] if 0 <= index < len(self.by_index) else str(index)


DEFAULT_LANES = Lanes()
