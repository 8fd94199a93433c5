"""The orchestrator's REST client API, spoken with the standard library
(``urllib``), so the client commands run on ``pip install avtomatika`` alone,
without the server's aiohttp.

An ``https://`` server is checked against ``AVTOMATIKA_TLS_CA`` (the
system's roots without it), and ``AVTOMATIKA_TLS_CERT`` with
``AVTOMATIKA_TLS_KEY`` are presented for mutual TLS: the variables the
worker SDK and the Python client read (:mod:`avtomatika.channel_tls`).

Every failure becomes a :class:`~avtomatika.cli.command.CommandError` with
one line to show: the API's own ``{"error"}`` message and status when it
refused, or what kept the request from reaching it. The token travels only
in the ``X-Client-Token`` header and appears in no message.
"""

from __future__ import annotations

import argparse
import http.client
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from avtomatika.channel_tls import ENV_CA, ENV_CERT, ENV_KEY, TlsFiles
from avtomatika.cli.command import CommandError
from avtomatika.cli.version import package_version

__all__ = ["Answer", "Api", "ServerEvent", "path_of"]

_TIMEOUT_SECONDS = 30.0
# The event stream sends a keep-alive comment every 15 s, so a stream silent
# for four of those is a dead connection, not a job taking its time.
_STREAM_TIMEOUT_SECONDS = 60.0

Query = Sequence[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Answer:
    """A response body and its media type (for the non-JSON answers)."""

    content_type: str
    body: bytes


@dataclass(frozen=True, slots=True)
class ServerEvent:
    """One Server-Sent Event: its ``event:`` name and its JSON ``data:``."""

    kind: str
    data: dict[str, Any]


def path_of(*segments: str) -> str:
    """An API path from its segments, each percent-encoded (a job id is
    the user's input: a ``/`` or ``?`` in it must not change the path)."""
    return "/" + "/".join(urllib.parse.quote(segment, safe="") for segment in segments)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """The API never redirects; following one would send the token to
    wherever it points, so a redirect is reported as the error it is."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Api:
    """The client API of the orchestrator at ``url``, as ``token``'s client."""

    def __init__(self, url: str, token: str | None) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise CommandError(f"invalid server URL {url!r}: expected http(s)://HOST:PORT")
        self.url = url.rstrip("/")
        self._headers = {"User-Agent": f"avtomatika-cli/{package_version()}"}
        if token:
            self._headers["X-Client-Token"] = token
        handlers: list[urllib.request.BaseHandler] = [_NoRedirects()]
        if parts.scheme == "https":
            handlers.append(urllib.request.HTTPSHandler(context=_tls_context()))
        self._opener = urllib.request.build_opener(*handlers)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Api:
        """The client the connection options (``--url``, ``--token``) name."""
        url: str = args.url
        token: str | None = args.token
        return cls(url, token)

    def get(self, path: str, query: Query = ()) -> Any:
        """``GET path``'s JSON answer."""
        return _json(self.fetch(path, query))

    def post(self, path: str, body: Any) -> Any:
        """``POST path`` with a JSON ``body``; the JSON answer."""
        return _json(self._call("POST", path, (), json.dumps(body).encode()))

    def fetch(self, path: str, query: Query = ()) -> Answer:
        """``GET path``'s answer, whatever its media type."""
        return self._call("GET", path, query, None)

    def events(self, path: str) -> Iterator[ServerEvent]:
        """The Server-Sent Events of ``GET path``, as they arrive, until the
        server ends the stream."""
        response = self._open("GET", path, (), None, _STREAM_TIMEOUT_SECONDS)
        with response:
            kind, data = "message", []
            try:
                for raw in response:
                    line = raw.decode("utf-8").rstrip("\r\n")
                    if line.startswith(":"):
                        continue  # a comment: the keep-alive
                    if line:
                        name, _, value = line.partition(":")
                        if name == "event":
                            kind = value.strip()
                        elif name == "data":
                            data.append(value.removeprefix(" "))
                        continue
                    if data:  # a blank line ends an event
                        yield ServerEvent(kind, _object("\n".join(data)))
                    kind, data = "message", []
            except (OSError, http.client.HTTPException) as exc:
                raise CommandError(f"lost the connection to {self.url}: {_reason(exc)}") from exc

    def _call(self, method: str, path: str, query: Query, body: bytes | None) -> Answer:
        with self._open(method, path, query, body, _TIMEOUT_SECONDS) as response:
            try:
                content = response.read()
            except (OSError, http.client.HTTPException) as exc:
                raise CommandError(f"lost the connection to {self.url}: {_reason(exc)}") from exc
            return Answer(response.headers.get_content_type(), content)

    def _open(
        self, method: str, path: str, query: Query, body: bytes | None, timeout: float
    ) -> http.client.HTTPResponse:
        url = self.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        headers = dict(self._headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=body, headers=headers, method=method)
        try:
            response: http.client.HTTPResponse = self._opener.open(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            with exc:
                if exc.code == 401 and "X-Client-Token" not in headers:
                    # The API's 401 cannot tell a missing token from a wrong one; we can.
                    raise CommandError(
                        "no client token: pass --token or set AVTOMATIKA_TOKEN"
                    ) from None
                raise CommandError(_refusal(exc)) from None
        except urllib.error.URLError as exc:
            raise CommandError(f"cannot reach {self.url}: {_reason(exc.reason)}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise CommandError(f"cannot reach {self.url}: {_reason(exc)}") from None
        return response


def _tls_context() -> ssl.SSLContext:
    """The HTTPS context of the ``AVTOMATIKA_TLS_*`` files."""
    try:
        return TlsFiles.from_env().ssl_context()
    except ValueError as exc:  # a variable naming no file
        raise CommandError(f"TLS: {exc} ({ENV_CA}, {ENV_CERT}, {ENV_KEY})") from None
    except (OSError, ssl.SSLError) as exc:  # a file that is not PEM, a key that does not fit
        raise CommandError(f"TLS: cannot load the certificate files: {_reason(exc)}") from None


def _refusal(exc: urllib.error.HTTPError) -> str:
    """The API's ``{"error"}`` message with the status; the status line
    alone when the answer is not the API's (a proxy's page, a redirect)."""
    try:
        message = json.loads(exc.read()).get("error")
    except (OSError, ValueError, AttributeError):
        message = None
    if isinstance(message, str) and message:
        return f"{message} (HTTP {exc.code})"
    return f"HTTP {exc.code} {exc.reason}"


def _reason(reason: object) -> str:
    """Why a connection failed, as the end of a sentence: ``connection
    refused``, ``timed out``, ``name or service not known``."""
    if isinstance(reason, OSError) and reason.strerror:
        text = reason.strerror
    else:
        text = str(reason) or type(reason).__name__
    return text[:1].lower() + text[1:]


def _json(answer: Answer) -> Any:
    return _json_text(answer.body.decode("utf-8", errors="replace"))


def _object(text: str) -> dict[str, Any]:
    value = _json_text(text)
    if not isinstance(value, dict):
        raise CommandError(f"the server sent an event that is not a JSON object: {text[:80]!r}")
    return value


def _json_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise CommandError(f"the server's answer is not JSON: {text[:80]!r}") from None
