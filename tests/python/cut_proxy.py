"""A TCP proxy between clients and one broker that cuts a connection right after the broker
answered a Produce request, before the client sees the answer, so the client must retry a
batch the broker already appended. Start the broker with ``advertised.listeners`` pointing at
the proxy so clients reach it only through the proxy."""

from __future__ import annotations

import socket
import struct
import threading

PRODUCE = 0


def _read_frame(sock: socket.socket) -> bytes | None:
    head = _read_exact(sock, 4)
    if head is None:
        return None
    (size,) = struct.unpack(">i", head)
    body = _read_exact(sock, max(size, 0))
    return None if body is None else head + body


def _read_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = sock.recv(n - len(buf))
        except OSError:
            return None
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


class CutProxy:
    def __init__(self, cuts: int):
        self.cuts_left = cuts
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False

    def run(self, broker_host: str, broker_port: int) -> None:
        threading.Thread(target=self._accept, args=(broker_host, broker_port), daemon=True).start()

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def _take_cut(self) -> bool:
        with self._lock:
            if self.cuts_left > 0:
                self.cuts_left -= 1
                return True
            return False

    def _accept(self, host: str, port: int) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection((host, port))
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._serve, args=(client, upstream), daemon=True).start()

    def _serve(self, client: socket.socket, upstream: socket.socket) -> None:
        inflight: dict[int, int] = {}

        def requests() -> None:
            while (frame := _read_frame(client)) is not None:
                if len(frame) >= 12:
                    key, _version, corr = struct.unpack(">hhi", frame[4:12])
                    inflight[corr] = key
                try:
                    upstream.sendall(frame)
                except OSError:
                    break
            _shutdown(upstream)

        threading.Thread(target=requests, daemon=True).start()
        while (frame := _read_frame(upstream)) is not None:
            (corr,) = struct.unpack(">i", frame[4:8])
            if inflight.pop(corr, None) == PRODUCE and self._take_cut():
                break
            try:
                client.sendall(frame)
            except OSError:
                break
        _shutdown(client)
        _shutdown(upstream)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
