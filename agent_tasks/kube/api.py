"""The connection to the hub's Kubernetes API: credentials, paged lists, watches, and errors with a clear reason.

Built on the official ``kubernetes`` client for what it does well (kubeconfig and in-cluster credentials, client
certificates, bearer tokens, exec plugins, token refresh, TLS); lists and watches read the raw responses and parse
them with orjson, so a 10,000-object list is not turned into model classes first.

Credentials, in client-go's order: a kubeconfig when ``GH_KUBECONFIG`` or ``KUBECONFIG`` names one (the first wins;
``GH_KUBE_CONTEXT`` picks a context); otherwise the pod's service account when running in a cluster; otherwise
``~/.kube/config``. They are read again on every :meth:`Connector.open`,
so a fixed kubeconfig or a rotated token takes effect at the next retry.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import urllib3
from kubernetes import config as kube_config
from kubernetes.client import ApiClient, Configuration, CustomObjectsApi
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from agent_tasks.kube.resources import Resource

CONNECT_TIMEOUT = 10.0
LIST_READ_TIMEOUT = 60.0
WATCH_READ_MARGIN = 30.0  # a watch that has said nothing for its timeout plus this long is dead
STREAM_CHUNK = 64 * 1024


class KubeError(Exception):
    """The API server could not be used; the message says why and what to check."""


class Gone(KubeError):
    """410: the resourceVersion is older than the server keeps (compacted); only a new list helps."""


class Unauthorized(KubeError):
    """401: the server does not accept the credentials."""


class Forbidden(KubeError):
    """403: the credentials are accepted but lack a permission."""


class NotServed(KubeError):
    """404: the server does not serve the resource (its CRD is not installed)."""


class Unreachable(KubeError):
    """No answer: connection refused, timed out, TLS failed, or the connection broke."""


class BadCredentials(KubeError):
    """The kubeconfig or service account cannot be loaded."""


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    resource_version: str
    continue_token: str


@dataclass(frozen=True)
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED, BOOKMARK, ERROR
    object: dict[str, Any]

    @property
    def resource_version(self) -> str:
        metadata = self.object.get("metadata") or {}
        return str(metadata.get("resourceVersion") or "")


@dataclass(frozen=True)
class Credentials:
    kubeconfig: str | None = None  # None: ~/.kube/config, unless in a cluster
    context: str | None = None
    in_cluster: bool = False  # the pod's service account

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Credentials:
        env = os.environ if environ is None else environ
        kubeconfig = env.get("GH_KUBECONFIG") or env.get("KUBECONFIG") or None
        return cls(
            kubeconfig=kubeconfig,
            context=env.get("GH_KUBE_CONTEXT") or None,
            in_cluster=kubeconfig is None and bool(env.get("KUBERNETES_SERVICE_HOST")),
        )

    def describe(self) -> str:
        if self.in_cluster:
            return "the pod's service account"
        context = f" (context {self.context})" if self.context else ""
        return f"kubeconfig {self.kubeconfig or '~/.kube/config'}{context}"


class Connector:
    """Opens connections to the API server with freshly read credentials."""

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials

    def client(self) -> ApiClient:
        """A client of the official library, with the credentials as they are now."""
        configuration = Configuration()
        try:
            if self.credentials.in_cluster:
                kube_config.load_incluster_config(client_configuration=configuration)
            else:
                kube_config.load_kube_config(
                    config_file=self.credentials.kubeconfig,
                    context=self.credentials.context,
                    client_configuration=configuration,
                    persist_config=False,
                )
        except (ConfigException, OSError, ValueError, TypeError) as error:
            raise BadCredentials(f"cannot load {self.credentials.describe()}: {error}") from None
        configuration.retries = 0  # callers retry, with backoff; urllib3 must not retry on its own
        return ApiClient(configuration)

    def open(self) -> KubeApi:
        return KubeApi(self.client())


class KubeApi:
    """One connection pool to the API server; lists and watches of custom resources."""

    def __init__(self, client: ApiClient) -> None:
        self._client = client
        self._api = CustomObjectsApi(client)
        self.server = str(client.configuration.host)
        self._response: urllib3.BaseHTTPResponse | None = None

    def close(self) -> None:
        self.interrupt()
        self._client.close()

    def interrupt(self) -> None:
        """Break a watch that is waiting for the server (from another thread: a clean stop)."""
        response = self._response
        if response is not None:
            # Already closed, or never connected: then there is nothing to interrupt.
            with contextlib.suppress(Exception):
                response.shutdown()

    def list_page(self, resource: Resource, *, limit: int, continue_token: str = "") -> Page:
        """One page of every object of the resource (all namespaces), read consistently from the server."""
        kwargs: dict[str, Any] = {"limit": limit}
        if continue_token:
            kwargs["_continue"] = continue_token
        response = self._call(resource, "list", kwargs, (CONNECT_TIMEOUT, LIST_READ_TIMEOUT))
        try:
            body = orjson.loads(response.data)
        except orjson.JSONDecodeError as error:
            raise Unreachable(f"listing {resource.name} on {self.server}: the answer is not JSON ({error})") from None
        finally:
            response.release_conn()
        metadata = body.get("metadata") or {}
        return Page(
            items=list(body.get("items") or []),
            resource_version=str(metadata.get("resourceVersion") or ""),
            continue_token=str(metadata.get("continue") or ""),
        )

    def watch(self, resource: Resource, resource_version: str, *, timeout_seconds: int) -> Iterator[WatchEvent]:
        """Changes after ``resource_version``, with bookmarks, until the server ends the watch (or it breaks).

        The request is made before this returns (so a refused watch raises here); the events are read as the
        caller iterates. ``ERROR`` events are raised as :class:`KubeError` (410 as :class:`Gone`), a broken stream
        as :class:`Unreachable`.
        """
        kwargs: dict[str, Any] = {
            "watch": True,
            "resource_version": resource_version,
            "allow_watch_bookmarks": True,
            "timeout_seconds": timeout_seconds,
        }
        response = self._call(resource, "watch", kwargs, (CONNECT_TIMEOUT, timeout_seconds + WATCH_READ_MARGIN))
        self._response = response
        return self._stream(resource, response)

    def _stream(self, resource: Resource, response: urllib3.BaseHTTPResponse) -> Iterator[WatchEvent]:
        try:
            yield from self._events(resource, response)
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise Unreachable(f"the watch of {resource.name} on {self.server} broke: {_reason(error)}") from None
        finally:
            self._response = None
            response.release_conn()

    def _events(self, resource: Resource, response: urllib3.BaseHTTPResponse) -> Iterator[WatchEvent]:
        pending = b""
        for chunk in response.stream(STREAM_CHUNK):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip():
                    yield self._event(resource, line)
        if pending.strip():
            yield self._event(resource, pending)

    def _event(self, resource: Resource, line: bytes) -> WatchEvent:
        try:
            raw = orjson.loads(line)
            event = WatchEvent(str(raw["type"]), dict(raw["object"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise Unreachable(f"the watch of {resource.name} sent a line that is not an event ({error})") from None
        if event.type == "ERROR":
            raise status_error(resource, self.server, "watch", event.object)
        return event

    def _call(
        self, resource: Resource, verb: str, kwargs: dict[str, Any], timeout: tuple[float, float]
    ) -> urllib3.BaseHTTPResponse:
        try:
            response: urllib3.BaseHTTPResponse = self._api.list_cluster_custom_object(
                resource.group,
                resource.version,
                resource.plural,
                _preload_content=False,
                _request_timeout=timeout,
                **kwargs,
            )
        except ApiException as error:
            raise http_error(resource, self.server, verb, error.status or 0, error.body) from None
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise Unreachable(f"cannot reach the API server at {self.server}: {_reason(error)}") from None
        return response


def http_error(resource: Resource, server: str, verb: str, status: int, body: Any) -> KubeError:
    """The error for an HTTP status, with the server's own message."""
    message = ""
    try:
        message = str(orjson.loads(body).get("message") or "")
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        message = str(body or "")[:300]
    return status_error(resource, server, verb, {"code": status, "message": message})


def status_error(resource: Resource, server: str, verb: str, status: Mapping[str, Any]) -> KubeError:
    """The error for a Kubernetes ``Status`` object (an HTTP error, or a watch's ERROR event)."""
    code = int(status.get("code") or 0)
    said = str(status.get("message") or status.get("reason") or "")
    where = f"{verb} {resource.name} on {server}"
    if code == 410:
        return Gone(f"{where}: 410 Gone, the resourceVersion was compacted ({said}); relisting")
    if code == 401:
        return Unauthorized(f"{where}: 401 Unauthorized, the API server rejects the credentials ({said})")
    if code == 403:
        return Forbidden(
            f"{where}: 403 Forbidden ({said}); the agent needs get, list and watch on {resource.name}"
            " (deploy/agent/base/rbac.yaml)"
        )
    if code == 404:
        return NotServed(f"{where}: 404 Not Found, the server does not serve {resource.name}: is its CRD installed?")
    return KubeError(f"{where}: HTTP {code} ({said})")


def _reason(error: BaseException) -> str:
    """The innermost useful reason of a urllib3 error (MaxRetryError wraps the real one)."""
    reason = getattr(error, "reason", None)
    return str(reason if reason is not None else error)
