"""Per-worker limits on webhook bodies in flight: a memory budget shared by all requests, and
a count of not-yet-verified bodies per client address.

Anyone can send a webhook body: only once it is read whole can its signature be checked. So
what one worker holds for bodies it has not verified yet must be bounded, whoever sends them
and however slowly. Both limits live in the worker process (a gevent loop: one thread, many
greenlets); the lock only matters under the threaded development server.

Standard library only, and no Flask: the limits are plain counters that
:mod:`app.webhooks` consults.
"""

from __future__ import annotations

import threading
from collections import Counter


class MemoryBudget:
    """Bytes of request bodies held in memory at once, at most ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def reserve(self, size: int) -> bool:
        """Take ``size`` bytes of the budget; False, taking nothing, when they do not fit."""
        with self._lock:
            if self.used + size > self.limit:
                return False
            self.used += size
            return True

    def release(self, size: int) -> None:
        with self._lock:
            self.used -= size


class ClientSlots:
    """How many bodies each client address has in flight, at most ``limit`` each."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def take(self, address: str) -> bool:
        with self._lock:
            if self._counts[address] >= self.limit:
                return False
            self._counts[address] += 1
            return True

    def give_back(self, address: str) -> None:
        with self._lock:
            self._counts[address] -= 1
            if self._counts[address] <= 0:
                del self._counts[address]  # no memory kept for addresses gone quiet

    def in_flight(self, address: str) -> int:
        with self._lock:
            return self._counts[address]
