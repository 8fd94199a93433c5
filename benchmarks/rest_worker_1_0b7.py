"""A legacy REST worker for the benchmark, built on the public SDK
``avtomatika-worker==1.0b7`` (run with the interpreter of a virtualenv that
has it; configured by the SDK's own environment variables)."""

from avtomatika_worker import Worker  # type: ignore[import-not-found]

worker = Worker()


@worker.task("echo")
async def echo(params, **kwargs):  # type: ignore[no-untyped-def]
    return {"status": "success", "data": {"n": params.get("n")}}


if __name__ == "__main__":
    worker.run()
