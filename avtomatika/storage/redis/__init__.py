"""The Redis backend: shared state for several orchestrator instances."""

from avtomatika.storage.redis.connection import Redis, connect, connect_pipelined
from avtomatika.storage.redis.keys import Keys
from avtomatika.storage.redis.outages import (
    DOWN,
    Outage,
    check_cancelled,
    run_forever,
    unavailable,
    until_up,
)
from avtomatika.storage.redis.pipelined import Pipelined, Script
from avtomatika.storage.redis.pubsub import Subscriber
from avtomatika.storage.redis.storage import RedisStorage

__all__ = [
    "DOWN",
    "Keys",
    "Outage",
    "Pipelined",
    "Redis",
    "RedisStorage",
    "Script",
    "Subscriber",
    "check_cancelled",
    "connect",
    "connect_pipelined",
    "run_forever",
    "unavailable",
    "until_up",
]
