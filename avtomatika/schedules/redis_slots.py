"""Schedule slots claimed in Redis, so that of all the instances on one Redis
exactly one creates the job of each firing of a schedule.

A claim is ``SET <slot key> <claimant> NX PX <ttl> GET``
(:meth:`Keys.schedule_slot`): the first scheduler to set the key owns the
slot. The claimant is this instance's id plus a token of this scheduler, so
a claim retried after its reply was lost (Redis went away mid-command) is
recognised as ours, and two orchestrators in one process (same instance id)
still compete. The key expires after ``ttl``, which bounds the keys a
schedule leaves behind to those of its last couple of minutes.
"""

from __future__ import annotations

import os
from typing import Any

from avtomatika.storage.redis import Keys, check_cancelled, unavailable

__all__ = ["RedisSlots"]


class RedisSlots:
    """Slot claims shared by every instance on one Redis."""

    durable = True

    def __init__(self, client: Any, keys: Keys, instance_id: str) -> None:
        self._client = client
        self._keys = keys
        self._claimant = f"{instance_id}/{os.urandom(4).hex()}".encode()

    async def claim(self, schedule: str, due_ms: int, ttl_ms: int) -> bool:
        """Take the slot unless another scheduler holds it."""
        with unavailable(f"schedule {schedule}: claim the firing due at {due_ms}"):
            previous = await self._client.set(
                self._keys.schedule_slot(schedule, due_ms),
                self._claimant,
                nx=True,
                px=ttl_ms,
                get=True,
            )
        check_cancelled()
        return previous is None or previous == self._claimant
