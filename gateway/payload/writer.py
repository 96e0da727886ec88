"""PayloadWriter: records leave the request path through a bounded queue.

``submit`` never blocks and never fails a request: it appends to a deque (one atomic
step, no lock or wake-up) unless ``QUEUE_SIZE`` records wait already, in which case
the record is dropped and counted. One thread per worker wakes every ``GATHER_S``,
takes what is queued, encodes it (``columns.encode_batch``) and writes it to the sink in
batches of up to ``BATCH``; a batch the sink refuses is dropped and counted, a
warning is logged at most every ``WARN_EVERY_S``, and the next batch tries again, so
logging resumes by itself once the sink is back. ``close`` writes what is still
queued, for up to its timeout.

Why polling and not a ``queue.Queue``: its put and get take a lock and signal a
condition, and every wake-up hands the GIL to the writer in the middle of the event
loop's work; on the one core a worker has, that cost more than the encoding.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Protocol

from gateway.payload.columns import encode_batch
from gateway.payload.record import PayloadEntry, WallClock
from gateway.payload.sinks import PayloadSink

log = logging.getLogger("gateway.payload")

QUEUE_SIZE = 4096
BATCH = 1024
GATHER_S = 0.05
WARN_EVERY_S = 10.0
_RETRY_S = 0.5  # after a failed batch: a sink that is down is not hammered


class PayloadObserver(Protocol):
    def wrote(self, count: int) -> None: ...
    def dropped_records(self, reason: str, count: int = 1) -> None: ...


class PayloadWriter:
    def __init__(self, sink: PayloadSink, observer: PayloadObserver, size: int = QUEUE_SIZE):
        self.sink = sink
        self.observer = observer
        self.size = size
        self._queue: deque[PayloadEntry] = deque()
        self._closing = threading.Event()
        self._abandoned = False
        self._warned_at = -WARN_EVERY_S
        self._thread = threading.Thread(target=self._run, name="payload-writer", daemon=True)
        self._thread.start()

    def submit(self, entry: PayloadEntry) -> None:
        # only the event loop submits (a shadow's completion too runs on it), so no
        # other append comes between the check and this one
        if len(self._queue) < self.size:
            self._queue.append(entry)
        else:
            self.observer.dropped_records("queue_full")

    def close(self, timeout_s: float) -> None:
        """Write what is queued (for up to ``timeout_s``), then close the sink; what is
        still queued after that is dropped and counted."""
        self._closing.set()
        self._thread.join(timeout_s)
        self._abandoned = True  # a writer still at it stops after its current batch
        left = len(self._queue)
        if left:
            self.observer.dropped_records("shutdown", left)
        if not self._thread.is_alive():
            self.sink.close()

    def _run(self) -> None:
        queue = self._queue
        while True:
            closing = self._closing.wait(GATHER_S)
            while queue and not self._abandoned:
                self._write([queue.popleft() for _ in range(min(len(queue), BATCH))])
            if closing or self._abandoned:
                return

    def _write(self, entries: list[PayloadEntry]) -> None:
        encoded = encode_batch(entries, WallClock())
        if encoded.failed:
            self.observer.dropped_records("sink_error", encoded.failed)
        if not encoded.records:
            return
        try:
            self.sink.write(encoded.blocks)
        except Exception as exc:
            self.observer.dropped_records("sink_error", encoded.records)
            now = time.monotonic()
            if now - self._warned_at >= WARN_EVERY_S:
                self._warned_at = now
                log.warning(
                    "payload log (%s) failed: %s; records are dropped and counted in "
                    "gateway_payload_dropped_total until it works again",
                    self.sink.description,
                    exc,
                )
            time.sleep(_RETRY_S)
            return
        self.observer.wrote(encoded.records)
