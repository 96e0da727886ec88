"""Where payload records go: JSONL files rotated by size, or a Redis Stream.

``--payload-log file:///DIR``: each worker appends to ``DIR/payload-PID-N.jsonl``,
starting ``N + 1`` once a file passes ``FILE_BYTES`` (64 MiB), and keeps its last
``FILES_KEPT`` (20) files, deleting older ones, so the log's disk use is bounded
(1.25 GiB a worker).

``--payload-log redis://HOST:PORT/STREAM`` (``rediss://`` too; ``?db=N`` picks the
database): each record is one ``XADD STREAM MAXLEN ~ MAX_LEN * record JSON`` entry,
trimmed to about ``--payload-max-len`` entries, for a consumer group to read.

Both are called from the writer thread only, with a batch's blocks: each block holds
one or more records, each a line ending in a newline.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import parse_qs, urlsplit, urlunsplit

FILE_BYTES = 64 * 1024 * 1024
FILES_KEPT = 20
DEFAULT_STREAM = "gateway:payload"
_PREFIX = "payload-"


class PayloadSink(Protocol):
    description: str

    def write(self, blocks: Sequence[bytes]) -> None: ...
    def close(self) -> None: ...


class FileSink:
    def __init__(self, directory: Path, max_bytes: int, pid: int | None = None) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.pid = os.getpid() if pid is None else pid
        self.description = f"files in {directory}"
        directory.mkdir(parents=True, exist_ok=True)
        self._number = 1 + max((n for n, _ in self._mine()), default=0)
        self._file = self._open()

    def write(self, blocks: Sequence[bytes]) -> None:
        self._file.write(b"".join(blocks))
        self._file.flush()
        if self._file.tell() >= self.max_bytes:
            self._file.close()
            self._number += 1
            self._file = self._open()
            for _, old in self._mine()[:-FILES_KEPT]:
                old.unlink(missing_ok=True)

    def close(self) -> None:
        self._file.close()

    def _open(self) -> BinaryIO:
        return (self.directory / f"{_PREFIX}{self.pid}-{self._number}.jsonl").open("ab")

    def _mine(self) -> list[tuple[int, Path]]:
        """This worker's files, oldest first."""
        found = []
        for path in self.directory.glob(f"{_PREFIX}{self.pid}-*.jsonl"):
            number = path.stem.rsplit("-", 1)[1]
            if number.isdigit():
                found.append((int(number), path))
        return sorted(found)


class RedisStreamSink:
    def __init__(self, url: str, max_len: int) -> None:
        import redis

        server, self.stream = stream_address(url)
        parts = urlsplit(url)
        self.max_len = max_len
        self.description = f"the Redis Stream {self.stream!r} at {parts.hostname}:{parts.port}"
        self._client = redis.Redis.from_url(server, socket_timeout=2.0, socket_connect_timeout=2.0)

    def write(self, blocks: Sequence[bytes]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for block in blocks:
            for line in block.split(b"\n")[:-1]:
                pipe.xadd(self.stream, {"record": line}, maxlen=self.max_len, approximate=True)
        pipe.execute()

    def close(self) -> None:
        self._client.close()


def stream_address(url: str) -> tuple[str, str]:
    """``redis://HOST:PORT/STREAM?db=N`` as the server's URL (with its database) and
    the stream's name."""
    parts = urlsplit(url)
    database = parse_qs(parts.query).get("db", ["0"])[0]
    server = urlunsplit((parts.scheme, parts.netloc, f"/{database}", "", ""))
    return server, parts.path.strip("/") or DEFAULT_STREAM


def open_sink(url: str, max_len: int) -> PayloadSink:
    """The sink ``--payload-log`` names (checked by the settings already)."""
    if url.startswith("file://"):
        return FileSink(Path(urlsplit(url).path), FILE_BYTES)
    return RedisStreamSink(url, max_len)
