"""How many chat requests the server holds at once: those the engine runs
(`max_num_seqs`) and a bounded queue behind them (`max_queued_requests`). Each holds
its decoded frames until it ends, so the bound is also one on memory. One request past
it gets a 429 with Retry-After before any media work, and is counted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeVar

from .errors import TooManyRequests
from .metrics import ServerMetrics

T = TypeVar("T")


class Admission:
    def __init__(self, capacity: int, retry_after_s: int, metrics: ServerMetrics):
        self.capacity, self.retry_after_s, self.metrics = capacity, retry_after_s, metrics
        self.admitted = 0

    def admit(self) -> Ticket:
        if self.admitted >= self.capacity:
            self.metrics.rejected_requests.inc()
            raise TooManyRequests(
                f"The server holds {self.capacity} requests and is full; retry after {self.retry_after_s} s",
                code="queue_full",
                headers={"Retry-After": str(self.retry_after_s)},
            )
        self.admitted += 1
        return Ticket(self)


class Ticket:
    """One admitted request's place, given back once (`release` is idempotent)."""

    def __init__(self, admission: Admission):
        self._admission: Admission | None = admission

    def release(self) -> None:
        if self._admission is not None:
            self._admission.admitted -= 1
            self._admission = None

    async def released_after(self, stream: AsyncIterator[T]) -> AsyncIterator[T]:
        """`stream`, giving the place back when it ends, fails or is closed."""
        try:
            async for item in stream:
                yield item
        finally:
            self.release()
