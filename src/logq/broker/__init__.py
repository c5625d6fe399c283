"""The domain: topics, partitions, groups, delivery, dead letters.

`Broker` is the one facade every front end (native protocol, REST API,
embedded client) calls.
"""

from logq.broker.broker import BatchResult, Broker
from logq.broker.clock import Clock, FakeClock, SystemClock
from logq.broker.config import BrokerConfig
from logq.broker.delivery import Delivery, decode_delivery
from logq.broker.messages import Message, MessageId, OutgoingMessage, PublishResult
from logq.broker.settings import GroupMode, GroupSettings, TopicSettings

__all__ = [
    "BatchResult",
    "Broker",
    "BrokerConfig",
    "Clock",
    "Delivery",
    "FakeClock",
    "GroupMode",
    "GroupSettings",
    "Message",
    "MessageId",
    "OutgoingMessage",
    "PublishResult",
    "SystemClock",
    "TopicSettings",
    "decode_delivery",
]
