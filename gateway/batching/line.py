"""WaitingLine: the queued requests of one batcher, in arrival order.

Requests that leave before running (cancelled, expired) are only marked GONE and
stay in the deque until they reach its head; ``count`` and ``rows`` count the
live ones.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection

from gateway.batching.request import QueuedRequest, State, total_rows


class WaitingLine:
    __slots__ = ("_requests", "count", "rows")

    def __init__(self) -> None:
        self._requests: deque[QueuedRequest] = deque()
        self.count = 0  # live requests
        self.rows = 0  # and their rows

    def add(self, request: QueuedRequest) -> None:
        self._requests.append(request)
        self.count += 1
        self.rows += request.rows

    def leave(self, request: QueuedRequest) -> None:
        """A queued request stops counting (it is marked GONE by the caller)."""
        self.count -= 1
        self.rows -= request.rows

    def take(self, max_rows: int, batching: bool) -> list[QueuedRequest]:
        """Remove and return the oldest live request and the queued requests with its key,
        up to ``max_rows`` rows (only the oldest without batching)."""
        taken: list[QueuedRequest] = []
        skipped: list[QueuedRequest] = []
        rows = 0
        limit = max(max_rows, 1)
        key: object = None
        line = self._requests
        while line:
            request = line[0]
            if request.state is not State.QUEUED:
                line.popleft()
                continue
            if not taken:
                key = request.key
            elif request.key != key:
                skipped.append(line.popleft())
                continue
            elif rows + request.rows > limit:
                break
            line.popleft()
            request.state = State.CLAIMED
            taken.append(request)
            rows += request.rows
            if rows >= limit or not batching:
                break
        if skipped:
            line.extendleft(reversed(skipped))
        self.count -= len(taken)
        self.rows -= rows
        return taken

    def put_back(self, requests: list[QueuedRequest]) -> None:
        """Return claimed requests to the head of the line, in their order."""
        for request in requests:
            request.state = State.QUEUED
        self.count += len(requests)
        self.rows += total_rows(requests)
        self._requests.extendleft(reversed(requests))

    def trim_to_preferred(
        self, batch: list[QueuedRequest], sizes: Collection[int]
    ) -> list[QueuedRequest]:
        """The longest prefix of the batch whose rows add up to a preferred size; the rest
        goes back to the line. Without such a prefix, the whole batch."""
        total, best = 0, 0
        for index, request in enumerate(batch):
            total += request.rows
            if total in sizes:
                best = index + 1
        if best == 0 or best == len(batch):
            return batch
        self.put_back(batch[best:])
        return batch[:best]
