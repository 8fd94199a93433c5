"""What makes several orchestrator instances on one Redis act as one, beyond
shared storage: where workers are (:mod:`.presence`) and job events for
followers on other instances (:mod:`.relay`).

:class:`Cluster` is the one service the composition root adds when the store
is Redis; the engine and the transports only ever talk to the
:class:`~avtomatika.presence.Presence` interface of the worker registry, and
followers receive relayed events as if they were local.
"""

from __future__ import annotations

from typing import Any

from avtomatika.cluster.relay import JobRelay
from avtomatika.config import Settings
from avtomatika.engine.core import Engine
from avtomatika.engine.followers import JobFollowers
from avtomatika.presence.redis import RedisPresence
from avtomatika.storage.redis import Keys, Pipelined, Subscriber, connect

__all__ = ["Cluster", "JobRelay", "RedisPresence"]


class Cluster:
    """A service: connects to ``REDIS_URL`` at :meth:`start` (its own client,
    so it outlives the storage's, which closes with the engine) and joins
    the engine's worker registry and the followers to the other instances."""

    def __init__(
        self, settings: Settings, instance_id: str, engine: Engine, followers: JobFollowers
    ) -> None:
        if not settings.redis_url:
            raise ValueError("a Cluster needs REDIS_URL")
        self._settings = settings
        self.instance_id = instance_id
        self._engine = engine
        self._followers = followers
        self._client: Any = None
        self._pipelined: Pipelined | None = None
        self._subscriber: Subscriber | None = None
        self.presence: RedisPresence | None = None
        self.relay: JobRelay | None = None

    async def start(self) -> None:
        if self._client is not None:
            return
        assert self._settings.redis_url is not None
        client = await connect(
            self._settings.redis_url, timeout=self._settings.redis_command_timeout_seconds
        )
        keys = Keys(self._settings.redis_prefix)
        subscriber = Subscriber(self._settings.redis_url)
        engine = self._engine
        self.presence = RedisPresence(
            client,
            keys,
            self.instance_id,
            self._settings,
            engine.workers,
            leased_to=engine.storage.leased_to,
            read_tasks=engine.storage.get_tasks,
            requeue=engine.requeue_task,
            subscriber=subscriber,
        )
        # The relay publishes at every commit: on the pipelined connection.
        timeout = self._settings.redis_command_timeout_seconds
        self._pipelined = Pipelined(
            self._settings.redis_url, timeout=timeout, connect_timeout=timeout
        )
        self.relay = JobRelay(
            self._pipelined, keys, self.instance_id, engine.events, self._followers, subscriber
        )
        self._client, self._subscriber = client, subscriber
        await self.presence.start()
        await self.relay.start()
        await subscriber.start()

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        if self.relay is not None:
            await self.relay.stop()
        if self.presence is not None:
            await self.presence.stop()
        if self._subscriber is not None:
            await self._subscriber.stop()
        if self._pipelined is not None:
            await self._pipelined.close()
        await client.aclose()
