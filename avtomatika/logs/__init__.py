"""Logs worth reading: the formats (text or JSON lines), the request scope
(request id and caller) both transports open per request, the access line,
and the INFO lines of job and worker lifecycles.

Nothing is imported here: the services import :mod:`.scope` alone, and it
must not pull the engine in with it.
"""
