"""The system we replace, avtomatika 1.0b13 from PyPI, as its users run it,
for ``make bench``'s REST path (:mod:`benchmarks.rest_path`).

Run by the interpreter of a throwaway virtualenv with
``avtomatika[redis]==1.0b13`` (never imported by the project, which has its
own ``avtomatika``). The one-task echo blueprint is written the way its
README writes blueprints: a start state that dispatches an ``echo`` task
whose ``success`` leads to the end state ``finished`` (1.0b13 ends a job
``finished`` only in an end state of that name).

Configured the 1.0b13 way, by its ``Config`` from the environment:
``CLIENTS_CONFIG_PATH`` (a ``clients.toml`` with the client's token and
quota: 1.0b13 admits clients by that file only), ``GLOBAL_WORKER_TOKEN``,
``RATE_LIMITING_ENABLED=false`` (its limiter answers 429 past 60 polls a
minute per worker), ``WORKER_HEALTH_CHECK_INTERVAL_SECONDS`` (see
:func:`benchmarks.rest_path.measure_reference`), ``LOG_LEVEL``, ``API_HOST``.
Two settings of this script: ``REFERENCE_STORE`` (``memory``, its ``MemoryStorage``, or ``redis``,
its ``RedisStorage`` on ``REDIS_HOST``/``REDIS_PORT``, read by its Config),
and the port, always 0: the port the system chose is announced.

Talks to the harness by lines: on stderr ``@@ port N version V`` once
listening, and ``@@ requests {...}`` (the requests answered since the last
``reset``, by request line and status, from aiohttp's access log, counted
rather than written, as our server's is in the benchmark) when ``requests``
arrives on stdin; ``reset`` on stdin empties the count; end of stdin stops
the server.
"""

import asyncio
import json
import logging
import os
import sys
from collections import Counter

import redis.asyncio

import avtomatika
from avtomatika import OrchestratorEngine, StateMachineBlueprint
from avtomatika.config import Config
from avtomatika.storage import MemoryStorage, RedisStorage

echo = StateMachineBlueprint("echo", api_version="v1", api_endpoint="/jobs/echo")


@echo.handler_for("start", is_start=True)
async def start(initial_data, actions):
    actions.dispatch_task("echo", params=initial_data, transitions={"success": "finished"})


@echo.handler_for("finished", is_end=True)
async def finished():
    return None


class RequestCounter(logging.Handler):
    """aiohttp's access lines counted by request line and status."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.counts = Counter()

    def emit(self, record):
        line = getattr(record, "first_request_line", "")
        method, _, rest = line.partition(" ")
        target = rest.rpartition(" ")[0]
        self.counts[f"{method} {target} {getattr(record, 'response_status', '-')}"] += 1


def announce(line):
    print(f"@@ {line}", file=sys.stderr, flush=True)


async def main():
    config = Config()
    config.API_PORT = 0
    if os.environ.get("REFERENCE_STORE", "memory") == "redis":
        client = redis.asyncio.Redis(host=config.REDIS_HOST, port=config.REDIS_PORT)
        storage = RedisStorage(client)
    else:
        storage = MemoryStorage()
    engine = OrchestratorEngine(storage, config)
    engine.register_blueprint(echo)

    # Set up after the engine, whose logging setup turns the root logger to
    # DEBUG with a handler on stdout: the access lines come here instead.
    counter = RequestCounter()
    access = logging.getLogger("aiohttp.access")
    access.propagate = False
    access.setLevel(logging.INFO)
    access.addHandler(counter)

    await engine.start()
    announce(f"port {engine.runner.addresses[0][1]} version {avtomatika.__version__}")
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    try:
        while line := (await commands.readline()).strip():
            if line == b"reset":
                counter.counts.clear()
            elif line == b"requests":
                announce(f"requests {json.dumps(counter.counts)}")
    finally:
        await engine.stop()


if __name__ == "__main__":
    asyncio.run(main())
