"""The Dramatiq side of the comparison, run with the interpreter of a
throwaway virtualenv that has ``dramatiq[redis]`` (never the project's):
one actor, ``echo``, on a Redis broker with the Results middleware, the
Redis in ``REDIS_URL``.

As a module it is what ``dramatiq benchmarks.dramatiq_app`` loads in the
worker processes; as a script it is the client load: C threads, each a
closed loop of ``echo.send(n)`` then ``message.get_result(block=True)``,
printing one JSON line as :mod:`benchmarks.load` does. It starts once the
workers answer and the harness writes a line to its stdin.

    python benchmarks/dramatiq_app.py JOBS CLIENTS
"""

import json
import os
import sys
import threading
import time

import dramatiq  # type: ignore[import-not-found]
from dramatiq.brokers.redis import RedisBroker  # type: ignore[import-not-found]
from dramatiq.results import Results  # type: ignore[import-not-found]
from dramatiq.results.backends import RedisBackend  # type: ignore[import-not-found]

broker = RedisBroker(url=os.environ["REDIS_URL"])
broker.add_middleware(Results(backend=RedisBackend(url=os.environ["REDIS_URL"])))
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True, max_retries=0)
def echo(n):  # type: ignore[no-untyped-def]
    return {"n": n}


def load(jobs: int, clients: int) -> None:
    numbers = iter(range(jobs))
    lock = threading.Lock()
    latencies: list[float] = []

    def client() -> None:
        while True:
            with lock:
                n = next(numbers, None)
            if n is None:
                return
            started = time.perf_counter()
            echo.send(n).get_result(block=True, timeout=30_000)
            latencies.append((time.perf_counter() - started) * 1000)

    # Once the workers answer, say so and wait for the harness's go, so
    # what it counts is the load, not Dramatiq's start-up.
    echo.send(-1).get_result(block=True, timeout=60_000)
    print("ready", flush=True)
    sys.stdin.readline()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    began, cpu_began = time.perf_counter(), time.process_time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report = {
        "created": jobs,
        "seconds": time.perf_counter() - began,
        "cpu_seconds": time.process_time() - cpu_began,
        "latencies_ms": latencies,
        "statuses": {"finished": len(latencies)},
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    load(int(sys.argv[1]), int(sys.argv[2]))
