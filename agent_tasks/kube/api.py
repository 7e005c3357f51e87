"""The connection to the hub's Kubernetes API: credentials, paged lists, watches, writes, errors with a clear reason.

Credentials and TLS come from lightkube (``lightkube.config``): kubeconfig files with client certificates, bearer
tokens or exec plugins, and the pod's service account, whose token file is read again when the server answers 401
(the kubelet rotates it). lightkube is a small, typed, maintained client: importing it costs the watcher about
7 MB, where the official ``kubernetes`` package loads every model of the API (about 40 MB) that the watcher never
uses. The requests themselves are plain REST on lightkube's configured ``httpx`` client, and JSON is parsed with
orjson, so a 10,000-object list is never turned into model classes.

Which credentials, in client-go's order: a kubeconfig when ``GH_KUBECONFIG`` or ``KUBECONFIG`` names one (one file;
``GH_KUBE_CONTEXT`` picks a context); otherwise the pod's service account when running in a cluster; otherwise
``~/.kube/config``. They are read again at every :meth:`Connector.open`, so a fixed kubeconfig takes effect at the
next retry.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import orjson
from lightkube.config.client_adapter import Client as HttpClient
from lightkube.config.client_adapter import ConnectionParams
from lightkube.config.kubeconfig import SERVICE_ACCOUNT, KubeConfig, SingleConfig
from lightkube.core.exceptions import ConfigError

from agent_tasks.kube.resources import Resource

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
WATCH_READ_MARGIN = 30.0  # a watch that has said nothing for its timeout plus this long is dead
MERGE_PATCH = "application/merge-patch+json"


class KubeError(Exception):
    """The API server could not be used; the message says why and what to check."""


class Gone(KubeError):
    """410: the resourceVersion is older than the server keeps (compacted); only a new list helps."""


class Unauthorized(KubeError):
    """401: the server does not accept the credentials."""


class Forbidden(KubeError):
    """403: the credentials are accepted but lack a permission."""


class NotFound(KubeError):
    """404: no such object, or (for a list) the server does not serve the resource: its CRD is not installed."""


class Conflict(KubeError):
    """409: the object exists already, or changed meanwhile."""


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
    service_account: str = SERVICE_ACCOUNT  # where a pod finds its token, CA and namespace

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

    def load(self) -> SingleConfig:
        try:
            if self.in_cluster:
                config = KubeConfig.from_service_account(self.service_account).get()
            else:
                config = KubeConfig.from_file(self.kubeconfig or Path.home() / ".kube" / "config").get(self.context)
        except (ConfigError, OSError, KeyError, ValueError, TypeError) as error:
            raise BadCredentials(f"cannot load {self.describe()}: {error!r}") from None
        if config is None:
            raise BadCredentials(f"cannot load {self.describe()}: it names no context")
        return config


class Connector:
    """Opens connections to the API server with freshly read credentials."""

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials

    def open(self) -> KubeApi:
        config = self.credentials.load()
        timeout = httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)
        try:
            client = HttpClient(config, ConnectionParams(timeout=timeout, trust_env=False))
        except (ConfigError, OSError, ValueError) as error:  # unreadable certificate or key files
            raise BadCredentials(f"cannot use {self.credentials.describe()}: {error!r}") from None
        return KubeApi(client, str(config.cluster.server))


def resource_path(resource: Resource, namespace: str | None = None, name: str | None = None) -> str:
    path = f"/apis/{resource.group}/{resource.version}"
    if namespace:
        path += f"/namespaces/{namespace}"
    path += f"/{resource.plural}"
    return f"{path}/{name}" if name else path


class KubeApi:
    """One connection pool to the API server: lists, watches and writes of custom resources, as JSON."""

    def __init__(self, client: httpx.Client, server: str) -> None:
        self._client = client
        self.server = server
        self._watching: httpx.Response | None = None

    def close(self) -> None:
        self._client.close()

    def interrupt(self) -> None:
        """Break the open watch, if any, from another thread: its socket is shut down, so the read ends now."""
        response = self._watching
        stream = response.extensions.get("network_stream") if response is not None else None
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    # --- reads -------------------------------------------------------------------------------------------------------

    def list_page(self, resource: Resource, *, limit: int, continue_token: str = "", not_older_than: str = "") -> Page:
        """One page of every object of the resource (all namespaces).

        ``not_older_than`` (a resourceVersion) lets the server answer from its watch cache, with data at least that
        new; without it the read is consistent, straight from etcd, which is several times slower.
        """
        params: dict[str, Any] = {"limit": limit}
        if continue_token:
            params["continue"] = continue_token
        elif not_older_than:
            params.update({"resourceVersion": not_older_than, "resourceVersionMatch": "NotOlderThan"})
        body = self._json(resource, "list", "GET", resource_path(resource), params=params)
        metadata = body.get("metadata") or {}
        return Page(
            items=list(body.get("items") or []),
            resource_version=str(metadata.get("resourceVersion") or ""),
            continue_token=str(metadata.get("continue") or ""),
        )

    def cached_resource_version(self, resource: Resource) -> str:
        """The resourceVersion the server's watch cache of the resource has reached (an empty list from the cache).

        Lists not older than it are served from that cache at once; a resourceVersion from elsewhere (another
        resource's change, a consistent read) may be newer than this cache ever gets without a change of its own,
        and a list asking for it would wait and fail ("Too large resource version") where etcd cannot report
        progress.
        """
        params = {"resourceVersion": "0", "fieldSelector": "metadata.name=-"}  # "-" is no valid name
        body = self._json(resource, "list", "GET", resource_path(resource), params=params)
        return str((body.get("metadata") or {}).get("resourceVersion") or "")

    def list_all(self, resource: Resource, label_selector: str = "") -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else {}
        return list(self._json(resource, "list", "GET", resource_path(resource), params=params).get("items") or [])

    def get(self, resource: Resource, name: str, namespace: str | None = None) -> dict[str, Any]:
        return self._json(resource, "get", "GET", resource_path(resource, namespace, name))

    def watch(self, resource: Resource, resource_version: str, *, timeout_seconds: int) -> Generator[WatchEvent]:
        """Changes after ``resource_version``, with bookmarks, until the server ends the watch (or it breaks).

        The request is made before this returns (so a refused watch raises here); the events are read as the
        caller iterates. ``ERROR`` events are raised as :class:`KubeError` (410 as :class:`Gone`), a broken stream
        as :class:`Unreachable`.
        """
        params = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        timeout = httpx.Timeout(timeout_seconds + WATCH_READ_MARGIN, connect=CONNECT_TIMEOUT)
        response = self._send(resource, "watch", "GET", resource_path(resource), params=params, timeout=timeout)
        self._watching = response
        return self._events(resource, response)

    def _events(self, resource: Resource, response: httpx.Response) -> Generator[WatchEvent]:
        try:
            for line in response.iter_lines():
                if line.strip():
                    yield self._event(resource, line)
        except _TRANSPORT_ERRORS as error:
            raise Unreachable(f"the watch of {resource.name} on {self.server} broke: {error!r}") from None
        finally:
            self._watching = None
            response.close()

    def _event(self, resource: Resource, line: str) -> WatchEvent:
        try:
            raw = orjson.loads(line)
            event = WatchEvent(str(raw["type"]), dict(raw["object"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise Unreachable(f"the watch of {resource.name} sent a line that is not an event ({error})") from None
        if event.type == "ERROR":
            raise status_error(resource, self.server, "watch", event.object)
        return event

    # --- writes (the simulator's and the tests') -----------------------------------------------------------------

    def create(self, resource: Resource, body: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        return self._json(resource, "create", "POST", resource_path(resource, namespace), content=body)

    def patch(
        self,
        resource: Resource,
        name: str,
        patch: dict[str, Any],
        namespace: str | None = None,
        *,
        status: bool = False,
    ) -> dict[str, Any]:
        """A JSON merge patch of the object (or of its status subresource)."""
        path = resource_path(resource, namespace, name) + ("/status" if status else "")
        return self._json(resource, "patch", "PATCH", path, content=patch, content_type=MERGE_PATCH)

    def delete(self, resource: Resource, name: str, namespace: str | None = None) -> bool:
        """Delete the object; False when it did not exist."""
        try:
            self._json(resource, "delete", "DELETE", resource_path(resource, namespace, name))
        except NotFound:
            return False
        return True

    # --- plumbing ----------------------------------------------------------------------------------------------------

    def _json(
        self,
        resource: Resource,
        verb: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        content: dict[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        response = self._send(resource, verb, method, path, params=params, content=content, content_type=content_type)
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError as error:
            raise Unreachable(f"{verb} {resource.name} on {self.server}: the answer is not JSON ({error})") from None
        return body if isinstance(body, dict) else {}

    def _send(
        self,
        resource: Resource,
        verb: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        content: dict[str, Any] | None = None,
        content_type: str = "application/json",
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Response:
        """One request: the response of a 2xx (streamed when ``timeout`` is given, for a watch), or a KubeError."""
        stream = timeout is not None
        headers = {"Accept": "application/json"}
        data = None
        if content is not None:
            data = orjson.dumps(content)
            headers["Content-Type"] = content_type
        try:
            request = self._client.build_request(
                method, path, params=params, content=data, headers=headers, timeout=timeout or httpx.USE_CLIENT_DEFAULT
            )
            response = self._client.send(request, stream=stream)
            if response.status_code >= 400 and stream:
                response.read()
                response.close()
        except _TRANSPORT_ERRORS as error:
            raise Unreachable(f"cannot reach the API server at {self.server}: {error!r}") from None
        except (ConfigError, KeyError, ValueError) as error:  # lightkube's credentials: an exec plugin, a token file
            raise BadCredentials(
                f"{verb} {resource.name} on {self.server}: the credentials failed: {error!r}"
            ) from None
        if response.status_code >= 400:
            raise http_error(resource, self.server, verb, response.status_code, response.content)
        return response


_TRANSPORT_ERRORS = (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, OSError)


def http_error(resource: Resource, server: str, verb: str, status: int, body: bytes) -> KubeError:
    """The error for an HTTP status, with the server's own message."""
    try:
        message = str(orjson.loads(body).get("message") or "")
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        message = body[:300].decode(errors="replace")
    return status_error(resource, server, verb, {"code": status, "message": message})


_ERRORS: dict[int, tuple[type[KubeError], str]] = {
    410: (Gone, "410 Gone, the resourceVersion was compacted ({said}); relisting"),
    401: (Unauthorized, "401 Unauthorized, the API server rejects the credentials ({said})"),
    403: (
        Forbidden,
        "403 Forbidden ({said}); the agent needs get, list and watch on {resource} (deploy/agent/base/rbac.yaml)",
    ),
    409: (Conflict, "409 Conflict ({said})"),
}


def status_error(resource: Resource, server: str, verb: str, status: Mapping[str, Any]) -> KubeError:
    """The error for a Kubernetes ``Status`` object (an HTTP error, or a watch's ERROR event)."""
    try:
        code = int(status.get("code") or 0)
    except (TypeError, ValueError):
        code = 0
    said = str(status.get("message") or status.get("reason") or "")
    where = f"{verb} {resource.name} on {server}"
    if code == 404:
        if verb in ("list", "watch"):
            return NotFound(f"{where}: 404 Not Found, the server does not serve {resource.name}: is its CRD installed?")
        return NotFound(f"{where}: 404 Not Found ({said})")
    kind, text = _ERRORS.get(code, (KubeError, f"HTTP {code} ({{said}})"))
    return kind(f"{where}: " + text.format(said=said, resource=resource.name))
