"""Shares of an outbound resource: at most `total` calls at once, at most `per_namespace` of them
from one namespace, so one tenant's slow webhooks or heavy queries cannot starve the others."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass
class Slots:
    total: int
    per_namespace: int
    _all: asyncio.Semaphore | None = None
    _namespaces: dict[str, asyncio.Semaphore] = field(default_factory=dict)

    @contextlib.asynccontextmanager
    async def held(self, namespace: str) -> AsyncIterator[None]:
        """Wait for a slot of `namespace` and one of the total, then hold both."""
        if self._all is None:
            self._all = asyncio.Semaphore(self.total)  # made on the loop that uses it
        mine = self._namespaces.setdefault(namespace, asyncio.Semaphore(self.per_namespace))
        async with mine, self._all:
            yield
