"""logq.protocol: the sans-IO RESP codec shared by the server and the client.

Bytes in, values out, and back; no sockets, no asyncio, nothing else of logq.
See docs/protocol.md for the commands that travel in these frames.
"""

from logq.protocol.encoder import encode, encode_command, encode_into
from logq.protocol.parser import NEED_MORE, Limits, Parser
from logq.protocol.values import ProtocolError, Push, RespError, SimpleString

__all__ = [
    "NEED_MORE",
    "Limits",
    "Parser",
    "ProtocolError",
    "Push",
    "RespError",
    "SimpleString",
    "encode",
    "encode_command",
    "encode_into",
]
