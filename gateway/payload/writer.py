"""PayloadWriter: records leave the request path through a bounded queue.

``submit`` never blocks and never fails a request: with the queue full (the sink is
slow or down) the record is dropped and counted. One thread per worker takes records
off the queue in batches (gathered for ``GATHER_S``), encodes them
(``record.to_json``) and writes them to the sink; a batch the sink refuses is
dropped and counted, a warning is logged at most every ``WARN_EVERY_S``, and the
next batch tries again, so logging resumes by itself
once the sink is back. ``close`` writes what is still queued, for up to its timeout.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Protocol

from gateway.payload.record import PayloadEntry, to_json
from gateway.payload.sinks import PayloadSink

log = logging.getLogger("gateway.payload")

QUEUE_SIZE = 4096
BATCH = 1024
# after the first record of a batch, the writer waits this long for more: a wake-up
# (a GIL hand-over) and a write per record would cost the event loop more than the
# encoding does
GATHER_S = 0.05
WARN_EVERY_S = 10.0
_RETRY_S = 0.5  # after a failed batch: a sink that is down is not hammered
_STOP = object()


class PayloadObserver(Protocol):
    def wrote(self, count: int) -> None: ...
    def dropped_records(self, reason: str, count: int = 1) -> None: ...


class PayloadWriter:
    def __init__(self, sink: PayloadSink, observer: PayloadObserver, size: int = QUEUE_SIZE):
        self.sink = sink
        self.observer = observer
        self._queue: queue.Queue[object] = queue.Queue(maxsize=size)
        self._warned_at = -WARN_EVERY_S
        self._thread = threading.Thread(target=self._run, name="payload-writer", daemon=True)
        self._thread.start()

    def submit(self, entry: PayloadEntry) -> None:
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            self.observer.dropped_records("queue_full")

    def close(self, timeout_s: float) -> None:
        """Write what is queued (for up to ``timeout_s``), then close the sink; what is
        still queued after that is dropped and counted."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self._queue.put(_STOP, timeout=max(deadline - time.monotonic(), 0.01))
                break
            except queue.Full:
                if time.monotonic() >= deadline:
                    break
        self._thread.join(max(deadline - time.monotonic(), 0.0))
        left = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            left += item is not _STOP
        if left:
            self.observer.dropped_records("shutdown", left)
        if not self._thread.is_alive():
            self.sink.close()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is not _STOP:
                time.sleep(GATHER_S)
            batch = [first]
            while len(batch) < BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(item is _STOP for item in batch)
            entries = [item for item in batch if isinstance(item, PayloadEntry)]
            if entries:
                self._write(entries)
            if stop:
                return

    def _write(self, entries: list[PayloadEntry]) -> None:
        lines = []
        for entry in entries:
            try:
                lines.append(to_json(entry))
            except Exception:  # one odd record must not stop the log
                log.exception("payload record of request %s not encodable", entry.request_id)
                self.observer.dropped_records("sink_error")
        try:
            self.sink.write(lines)
        except Exception as exc:
            self.observer.dropped_records("sink_error", len(lines))
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
        self.observer.wrote(len(lines))
