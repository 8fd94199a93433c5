"""A REST worker for the benchmark on the public SDK ``avtomatika-worker``
(run with the interpreter of a virtualenv that has 1.0b7 or 1.0b20;
configured by the SDK's own environment variables). 1.0b7 declares a
handler with ``worker.task``, 1.0b20 with ``worker.skill``."""

from avtomatika_worker import Worker  # type: ignore[import-not-found]

worker = Worker()
declare = getattr(worker, "skill", None) or worker.task


@declare("echo")
async def echo(params, **kwargs):  # type: ignore[no-untyped-def]
    return {"status": "success", "data": {"n": params.get("n")}}


if __name__ == "__main__":
    worker.run()
