"""A loopback TCP relay in front of moto's S3 server, so a test can take the
store away and bring it back with everything it held: `cut()` refuses new
connections and drops the open ones (a store that is down), `hang()` takes
connections and never answers (a store that times out), `restore()` relays
again on the same port."""

from __future__ import annotations

import contextlib
import socket
import threading
from urllib.parse import urlsplit

RELAY_BYTES = 65536


class StoreLink:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        assert parts.hostname is not None and parts.port is not None, upstream
        self._upstream = (parts.hostname, parts.port)
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._state = "up"
        self._listener: socket.socket | None = None
        self.port = 0
        self._listen()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self) -> None:
        """Connections are refused, open ones dropped."""
        with self._lock:
            self._state = "cut"
            listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):  # wakes the accept() blocked on it
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        self._drop_all()

    def hang(self) -> None:
        """Connections are taken and never answered; open ones dropped."""
        with self._lock:
            self._state = "hung"
        self._drop_all()
        if self._listener is None:
            self._listen()

    def restore(self) -> None:
        with self._lock:
            self._state = "up"
        self._drop_all()
        if self._listener is None:
            self._listen()

    def close(self) -> None:
        self.cut()

    # -- the relay --------------------------------------------------------------------

    def _listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by cut()
            with self._lock:
                self._sockets.add(client)
                state = self._state
            if state == "up":
                threading.Thread(target=self._relay, args=(client,), daemon=True).start()
            elif state == "cut":
                self._drop(client)
                return
            # hung: held open, never read, until the state changes

    def _relay(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self._upstream, timeout=10)
        except OSError:
            self._drop(client)
            return
        server.settimeout(None)
        with self._lock:
            self._sockets.add(server)
        threading.Thread(target=self._pump, args=(server, client), daemon=True).start()
        self._pump(client, server)

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(RELAY_BYTES):
                target.sendall(data)
        except OSError:
            pass
        self._drop(source)
        self._drop(target)

    def _drop(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def _drop_all(self) -> None:
        with self._lock:
            open_sockets = list(self._sockets)
        for sock in open_sockets:
            self._drop(sock)
