"""BatchPolicy: when a batch is cut, as plain numbers the queue can act on."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """``max_batch_size`` rows per run; 0, or a model without a batch dimension, means one
    request per run. ``max_queue_size`` bounds waiting requests; ``default_timeout_s`` is the
    deadline of a request that brings none (None: no deadline)."""

    max_batch_size: int = 32
    max_delay_s: float = 0.002
    preferred_batch_sizes: frozenset[int] = field(default_factory=frozenset)
    max_queue_size: int = 1024
    default_timeout_s: float | None = None

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 0
