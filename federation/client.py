"""The controller's REST API as the command line sees it.

Only the standard library (``urllib``) is used so that ``edgefed get`` starts
fast and works wherever the package is installed. Every failure, whether the
controller is unreachable, answers with an error status, or sends something
that is not JSON, is mapped in one place (:meth:`ApiClient.request`) to
:class:`ApiError`, whose message is fit to show to an operator as is.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from http.client import HTTPException, RemoteDisconnected
from typing import Any

DEFAULT_SERVER = "http://127.0.0.1:7070"
SERVER_ENV = "EDGEFED_SERVER"
DEFAULT_TIMEOUT = 30.0
_HINT = "is `edgefed controller` running? set --server or EDGEFED_SERVER"
_USER_AGENT = "edgefed-cli/1"


class ApiError(Exception):
    """A request that did not give a usable answer.

    ``status`` is the HTTP status, or None when no HTTP answer arrived at all
    (refused, unresolvable, timed out). ``body`` is the parsed JSON error body
    when the controller sent one (e.g. the unschedulable slots of a 409), else
    the raw text, else None.
    """

    def __init__(self, status: int | None, message: str, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.body = body


def server_url(value: str) -> str:
    """The controller's base URL; ``host:port`` alone means plain http.

    Raises ValueError with a message naming the bad value.
    """
    text = value.strip().rstrip("/")
    if "://" not in text:
        text = f"http://{text}"
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"--server {value!r}: expected an http:// or https:// URL")
    try:
        parts.port  # noqa: B018 - validates the port number
    except ValueError:
        raise ValueError(f"--server {value!r}: the port is not a number in 1-65535") from None
    if not parts.hostname:
        raise ValueError(f"--server {value!r}: no host name")
    return text


def quote(segment: str | int) -> str:
    """One path segment, safe to put between slashes."""
    return urllib.parse.quote(str(segment), safe="")


class ApiClient:
    """JSON over HTTP to one controller; each method returns the parsed body."""

    def __init__(
        self,
        server: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        trace: Callable[[str], None] | None = None,
    ) -> None:
        self.server = server_url(server)
        self.timeout = timeout
        self._trace = trace

    def get(self, path: str, query: Mapping[str, object] | None = None) -> Any:
        return self.request("GET", path, query=query)

    def put(self, path: str, body: Any, query: Mapping[str, object] | None = None) -> Any:
        return self.request("PUT", path, body=body, query=query)

    def post(self, path: str, body: Any, query: Mapping[str, object] | None = None) -> Any:
        return self.request("POST", path, body=body, query=query)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def confirm_lost(self, node: str) -> Any:
        """Tell the controller node ``node`` is gone for good (``edgefed confirm-lost``)."""
        return self.post(f"/api/v1/nodes/{quote(node)}/confirm-lost", None)

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, object] | None = None,
    ) -> Any:
        url = self.server + path
        if query:
            url += "?" + urllib.parse.urlencode({k: _query_value(v) for k, v in query.items()})
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json", "User-Agent": _USER_AGENT}
        if data is not None:
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        started = time.monotonic()
        what = f"{method} {path}"
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                status, raw = resp.status, resp.read()
                content_type = resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            self._log(method, url, str(exc.code), started)
            raise _from_http_error(exc, what) from None
        except (urllib.error.URLError, OSError, HTTPException) as exc:
            self._log(method, url, "failed", started)
            raise ApiError(None, self._unreachable(exc)) from exc
        self._log(method, url, str(status), started)
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError(
                status,
                f"the server at {self.server} answered {what} with something that is not "
                f"JSON ({content_type or 'no content type'}); is it an edgefed controller?",
                raw.decode(errors="replace"),
            ) from None

    def _unreachable(self, exc: BaseException) -> str:
        reason: object = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        where = f"cannot reach the controller at {self.server}"
        if isinstance(reason, ConnectionRefusedError):
            return f"{where}: connection refused ({_HINT})"
        if isinstance(reason, socket.gaierror):
            host = urllib.parse.urlsplit(self.server).hostname
            return f"{where}: cannot resolve host {host!r} (set --server or EDGEFED_SERVER)"
        if isinstance(reason, TimeoutError):
            return f"{where}: no answer within {self.timeout:g}s"
        if isinstance(reason, ssl.SSLError):
            return f"{where}: TLS failed: {reason.reason or reason}"
        if isinstance(reason, RemoteDisconnected | ConnectionResetError):
            return f"{where}: the connection was closed before an answer arrived"
        if isinstance(reason, OSError) and reason.strerror:
            return f"{where}: {reason.strerror.lower()}"
        return f"{where}: {reason}"

    def _log(self, method: str, url: str, outcome: str, started: float) -> None:
        if self._trace is not None:
            elapsed_ms = (time.monotonic() - started) * 1000
            self._trace(f"{method} {url} -> {outcome} ({elapsed_ms:.0f} ms)")


def _query_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _from_http_error(exc: urllib.error.HTTPError, what: str) -> ApiError:
    status = exc.code
    try:
        raw = exc.read()
    except (OSError, HTTPException):
        raw = b""
    finally:
        exc.close()
    text = raw.decode(errors="replace")
    body: Any = text or None
    error: str | None = None
    with contextlib.suppress(ValueError):
        body = json.loads(raw) if raw.strip() else None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        error = body["error"]
    reason = exc.reason if isinstance(exc.reason, str) else ""
    if error is None:
        # Not a controller's error document: a proxy, another service on the port,
        # or a route this controller does not have.
        excerpt = " ".join(text.split())[:200]
        message = f"{what}: HTTP {status} {reason}".rstrip()
        if excerpt:
            message += f": {excerpt}"
        if status == 404:
            message += " (is the server an edgefed controller of the same version?)"
        return ApiError(status, message, body)
    if status >= 500:
        return ApiError(status, f"{error} (HTTP {status} from {what})", body)
    return ApiError(status, error, body)
