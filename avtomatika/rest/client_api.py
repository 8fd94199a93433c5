"""Client endpoints under ``/api`` (``X-Client-Token``, checked by middleware).

Each handler parses, calls :class:`~avtomatika.services.client_api.ClientApi`
and renders; the rules are there.
"""

from __future__ import annotations

import dataclasses
import json

from aiohttp import web

from avtomatika.errors import InvalidArgument
from avtomatika.rest.bodies import job_request, read_json_object
from avtomatika.rest.render import JOB_FIELDS, job_body, worker_json
from avtomatika.rest.state import CLIENT_API, ENGINE, client_of
from avtomatika.services.client_api import JobFilter
from avtomatika.status import job_status_named
from avtomatika.v1.job_pb2 import Job

__all__ = [
    "approve_job",
    "cancel_job",
    "create_job",
    "get_job",
    "job_fields",
    "list_blueprints",
    "list_jobs",
    "list_workers",
    "retry_job",
    "wait_seconds",
]


async def create_job(request: web.Request) -> web.Response:
    request_ = job_request(
        await read_json_object(request, allow_empty=True),
        allow_private_webhooks=request.app[ENGINE].config.webhook_allow_private,
    )
    route = f"{request.match_info['api_version']}/{request.match_info['endpoint']}"
    job_id = await request.app[CLIENT_API].create_job(client_of(request), route, request_)
    return web.json_response({"status": "accepted", "job_id": job_id}, status=202)


async def get_job(request: web.Request) -> web.Response:
    """The job; with ``?wait=SECONDS``, once it changes (see :mod:`.follow_api`);
    with ``?fields=a,b``, only those fields (and ``id``)."""
    fields = job_fields(request)
    job = await request.app[CLIENT_API].get_job(
        client_of(request), request.match_info["job_id"], wait_seconds(request)
    )
    return _job_response(job, fields)


def job_fields(request: web.Request) -> frozenset[str] | None:
    """The ``fields`` query parameter: the job JSON fields to answer with
    (repeated or separated by commas; ``id`` is always there), or None when
    absent or empty (every field). An unknown name is refused, named."""
    selected = {
        name.strip()
        for raw in request.query.getall("fields", [])
        for name in raw.split(",")
        if name.strip()
    }
    if not selected:
        return None
    unknown = sorted(selected - set(JOB_FIELDS))
    if unknown:
        raise InvalidArgument(
            f"fields: {unknown[0]!r} is not a field of a job (one of {', '.join(JOB_FIELDS)})"
        )
    return frozenset(selected)


def wait_seconds(request: web.Request) -> float | None:
    """The ``wait`` query parameter; None when absent (its range is the
    service's to judge)."""
    raw = request.query.get("wait")
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        raise InvalidArgument(f"wait must be a number of seconds >= 0, got {raw!r}") from None


async def list_jobs(request: web.Request) -> web.Response:
    """``GET /api/v1/jobs``: ``{"jobs": [...], "next_page_token": "...",
    "counts": {"<status>": n, ...}}``, newest first; ``counts`` are the
    caller's jobs per status, whatever the filters. The query parameters
    are ListJobsRequest's fields; ``statuses`` takes the documented names
    (``running``), repeated or separated by commas; ``fields`` selects each
    job's fields as for one job."""
    query = request.query
    fields = job_fields(request)
    statuses: set[int] = set()
    for raw in query.getall("statuses", []):
        for name in filter(None, raw.split(",")):
            status = job_status_named(name)
            if status is None:
                raise InvalidArgument(f"statuses: {name!r} is not a job status")
            statuses.add(status)
    where = JobFilter(
        statuses=frozenset(statuses),
        blueprint=query.get("blueprint", ""),
        current_state=query.get("current_state", ""),
        created_after_ms=_whole("created_after_ms", query.get("created_after_ms", ""), 15),
    )
    api, client = request.app[CLIENT_API], client_of(request)
    jobs, token = await api.list_jobs(
        client,
        where,
        _whole("page_size", query.get("page_size", ""), 9),
        query.get("page_token", ""),
    )
    counts = await api.job_counts(client)
    rendered = (job_body(job, fields) for job in jobs)
    body = b'{"jobs":[' + b",".join(rendered) + b'],"next_page_token":'
    tail = json.dumps(token).encode() + b',"counts":' + json.dumps(counts).encode()
    return web.Response(
        body=body + tail + b"}",
        content_type="application/json",
        charset="utf-8",
    )


async def list_blueprints(request: web.Request) -> web.Response:
    """``GET /api/v1/blueprints``: ``{"blueprints": [{name, route, states,
    start_state, end_states, input_schema}]}``, by name."""
    blueprints = request.app[CLIENT_API].list_blueprints(client_of(request))
    return web.json_response({"blueprints": [dataclasses.asdict(bp) for bp in blueprints]})


def _whole(name: str, raw: str, digits: int) -> int:
    if raw == "":
        return 0
    if not (raw.isascii() and raw.isdigit()) or len(raw) > digits:
        raise InvalidArgument(f"{name} must be a whole number, got {raw!r}")
    return int(raw)


async def cancel_job(request: web.Request) -> web.Response:
    pushed = await request.app[CLIENT_API].cancel_job(
        client_of(request), request.match_info["job_id"]
    )
    status = "cancellation_request_sent" if pushed else "cancellation_request_accepted"
    return web.json_response({"status": status})


async def retry_job(request: web.Request) -> web.Response:
    """``POST /api/v1/jobs/{job_id}/retry`` (no body, or ``{}``): the job,
    running again from where it stopped."""
    await read_json_object(request, allow_empty=True)
    job = await request.app[CLIENT_API].retry_job(client_of(request), request.match_info["job_id"])
    return _job_response(job)


async def approve_job(request: web.Request) -> web.Response:
    """``POST /api/v1/jobs/{job_id}/approve`` ``{"decision": "..."}``: the
    owner's decision; the job after it."""
    body = await read_json_object(request)
    job = await request.app[CLIENT_API].approve_job(
        client_of(request), request.match_info["job_id"], body.get("decision")
    )
    return _job_response(job)


def _job_response(job: Job, fields: frozenset[str] | None = None) -> web.Response:
    return web.Response(
        body=job_body(job, fields), content_type="application/json", charset="utf-8"
    )


async def list_workers(request: web.Request) -> web.Response:
    workers = await request.app[CLIENT_API].list_workers(client_of(request))
    return web.json_response([worker_json(w) for w in workers])
