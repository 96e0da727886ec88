"""HTTP/1.1 over a raw socket, for tests that must control every byte a client sends:
stop halfway through a request, pipeline requests, speak HTTP/1.0."""

from __future__ import annotations

import socket
import time


def post_head(path: str, length: int, extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    """A JSON POST's request line and headers, declaring a body of ``length`` bytes;
    ``extra``: more header lines, each ending in CRLF."""
    return (
        b"POST %s HTTP/%s\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n%s\r\n" % (path.encode(), version, length, extra)
    )


def connect(port: int, timeout_s: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout_s)


class ResponseReader:
    """Reads responses off ``sock`` one after another; bytes of the next one that arrive
    with the current one are kept for it. The socket's timeout bounds every read."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _more(self, what: str) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, f"the connection closed {what} (got {self.buffer!r})"
        self.buffer += chunk

    def response(self) -> tuple[int, dict[str, str], bytes]:
        """The next response: status, lower-cased headers, body (by Content-Length)."""
        while b"\r\n\r\n" not in self.buffer:
            self._more("without a response")
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            self._more("in the middle of the response body")
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response on ``sock``; AssertionError if the connection ends first."""
    return ResponseReader(sock).response()


def closed_within(sock: socket.socket, limit_s: float) -> float:
    """Seconds until the server closes ``sock`` (reading nothing), at most ``limit_s``."""
    started = time.monotonic()
    sock.settimeout(limit_s)
    try:
        assert sock.recv(1024) == b"", "the server sent something instead of closing"
    except ConnectionResetError:
        pass
    return time.monotonic() - started
