"""The Redis backend: shared state for several orchestrator instances."""

from avtomatika.storage.redis.connection import (
    DOWN,
    Redis,
    check_cancelled,
    connect,
    outage_backoff,
    unavailable,
)
from avtomatika.storage.redis.keys import Keys
from avtomatika.storage.redis.pubsub import Subscriber
from avtomatika.storage.redis.storage import RedisStorage

__all__ = [
    "DOWN",
    "Keys",
    "Redis",
    "RedisStorage",
    "Subscriber",
    "check_cancelled",
    "connect",
    "outage_backoff",
    "unavailable",
]
