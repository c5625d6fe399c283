"""Graceful shutdown of a real `logq serve`: SIGTERM stops accepting, lets
requests in flight finish, flushes and exits 0; what was published is there
after a restart."""

from __future__ import annotations

import signal
import socket
import threading
from pathlib import Path

from logq.client import Client
from logq.protocol import NEED_MORE, Parser, encode_command
from tests.harness import start_process, stop_process


def test_sigterm_finishes_requests_in_flight_then_exits_cleanly(tmp_path: Path) -> None:
    server = start_process(tmp_path)
    try:
        with Client(server.native) as client:
            client.create_topic("jobs", partitions=1)
            client.publish_many("jobs", [f"{i}".encode() for i in range(100)])
        # A long poll is in flight on a raw connection when the signal comes.
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(encode_command(["RECV", "jobs", "empty-group", "c", "COUNT", "1"]))
        parser = Parser()
        parser.feed(sock.recv(65536))
        assert parser.next_value() is not NEED_MORE  # the group read works; now drain it
        sock.sendall(encode_command(["SEEK", "jobs", "empty-group", "LATEST"]))
        sock.sendall(
            encode_command(["RECV", "jobs", "empty-group", "c", "COUNT", "1", "WAIT", "3s"])
        )
        replies: list[object] = []

        def read() -> None:
            while len(replies) < 2:
                data = sock.recv(65536)
                if not data:
                    return
                parser.feed(data)
                while (value := parser.next_value()) is not NEED_MORE:
                    replies.append(value)

        reader = threading.Thread(target=read)
        reader.start()
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        reader.join(20)
        assert len(replies) == 2 and replies[1] == []  # the long poll was answered, not cut
        assert server.process.wait(20) == 0
        sock.close()
    finally:
        if server.process is not None and server.process.poll() is None:
            server.process.kill()
    restarted = start_process(tmp_path)
    try:
        with Client(restarted.native) as client:
            assert client.describe_topic("jobs")["messages"] == 100
            assert "stopped" in b"".join(server.output).decode()
    finally:
        assert stop_process(restarted) == 0
