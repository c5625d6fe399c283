"""Which topics are dead-letter topics, kept up to date per change.

A dead-letter topic is one only the broker writes to (so a letter's origin
headers can be trusted): a name some topic's `dlq` setting gives, or a topic
the broker made as one (`made`: it stays closed to clients after its origin
topic is deleted, and its metadata record says so). Each change of a topic
updates the counts of that topic alone: the cost of a create does not grow
with the number of topics.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from logq.broker.topic import Topic

# the internal group of a dead-letter topic: a letter is in the DLQ until it settles it
DLQ_GROUP = "~dlq"


class DeadLetterNames:
    def __init__(self, made: Iterable[str] = ()) -> None:
        self.made: set[str] = set(made)  # existing topics made as dead-letter topics
        self._named: Counter[str] = Counter()  # dlq name -> topics that name it
        self._dlq_of: dict[str, str] = {}  # topic -> the dlq it names

    def __contains__(self, name: object) -> bool:
        return name in self._named or name in self.made

    def note(self, name: str, topics: Mapping[str, Topic]) -> set[str]:
        """Take topic `name`'s current state (gone when not in `topics`);
        return the topics this marks as made dead-letter topics."""
        old = self._dlq_of.pop(name, None)
        if old is not None:
            self._named[old] -= 1
            if self._named[old] <= 0:
                del self._named[old]
        topic = topics.get(name)
        if topic is None:
            self.made.discard(name)
            return set()
        marked: set[str] = set()
        dlq = topic.settings.dlq_topic(name)
        if dlq != name:
            self._dlq_of[name] = dlq
            self._named[dlq] += 1
            if dlq in topics and dlq not in self.made:
                self.made.add(dlq)
                marked.add(dlq)
        # an existing topic that is some topic's DLQ was made as one (data
        # from before the broker kept the list included)
        if name in self._named and name not in self.made:
            self.made.add(name)
            marked.add(name)
        return marked
