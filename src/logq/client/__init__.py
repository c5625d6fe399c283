"""logq.client: the Python SDK, `Client` (blocking) and `AsyncClient` (asyncio)."""

from logq.client.async_client import AsyncClient
from logq.client.connection import ConnectionLostError
from logq.client.consumer import AsyncConsumer
from logq.client.messages import AsyncMessage, Message
from logq.client.producer import AsyncProducer
from logq.client.records import MessageData, PublishResult
from logq.client.sync_client import Client, Consumer, Producer

__all__ = [
    "AsyncClient",
    "AsyncConsumer",
    "AsyncMessage",
    "AsyncProducer",
    "Client",
    "ConnectionLostError",
    "Consumer",
    "Message",
    "MessageData",
    "Producer",
    "PublishResult",
]
