"""The few 'core' Kubernetes API calls the local apiextensions-apiserver makes: a stand-in for kube-apiserver.

``apiextensions-apiserver`` delegates authentication (TokenReview), authorization (SubjectAccessReview) and its
Service informer to a core API server. The local stack has none, so this stdlib-only server answers them:

* ``POST /apis/authentication.k8s.io/v1/tokenreviews``: bearer tokens from a CSV file (``token,user,uid,groups``,
  groups separated by ``|``), read on every request so tests can change it;
* ``POST /apis/authorization.k8s.io/v1/subjectaccessreviews``: allowed when one of the user's (or groups') RBAC
  ``PolicyRule``s in a JSON file (``{"users": {name: [rule...]}, "groups": {name: [rule...]}}``) matches;
* ``GET /api/v1/services``: an empty list, and a watch that stays quiet, so the server's informers sync.

    python3 stack/kube/core_stub.py --port 56442 --tokens tokens.csv --rules rules.json
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit


def load_tokens(path: Path) -> dict[str, dict[str, Any]]:
    tokens: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return tokens
    with path.open(newline="") as handle:
        for row in csv.reader(handle):
            if len(row) < 3 or row[0].startswith("#"):
                continue
            groups = [g for g in (row[3] if len(row) > 3 else "").split("|") if g]
            tokens[row[0]] = {"username": row[1], "uid": row[2], "groups": [*groups, "system:authenticated"]}
    return tokens


def load_rules(path: Path) -> dict[str, dict[str, list[dict[str, Any]]]]:
    if not path.exists():
        return {"users": {}, "groups": {}}
    data = json.loads(path.read_text())
    return {"users": data.get("users", {}), "groups": data.get("groups", {})}


def _matches(values: list[str], wanted: str) -> bool:
    return "*" in values or wanted in values


def rule_allows(rule: dict[str, Any], attributes: dict[str, Any]) -> bool:
    """RBAC's rule matching for a resource request (non-resource URLs: ``nonResourceURLs`` and verbs)."""
    verbs = rule.get("verbs") or []
    if "resourceAttributes" in attributes:
        wanted = attributes["resourceAttributes"]
        resource = wanted.get("resource", "")
        if wanted.get("subresource"):
            resource += "/" + wanted["subresource"]
        names = rule.get("resourceNames") or []
        return (
            _matches(verbs, wanted.get("verb", ""))
            and _matches(rule.get("apiGroups") or [], wanted.get("group", ""))
            and _matches(rule.get("resources") or [], resource)
            and (not names or wanted.get("name", "") in names)
        )
    wanted = attributes.get("nonResourceAttributes") or {}
    urls = rule.get("nonResourceURLs") or []
    path = wanted.get("path", "")
    return _matches(verbs, wanted.get("verb", "")) and any(
        url in (path, "*") or (url.endswith("*") and path.startswith(url[:-1])) for url in urls
    )


class Handler(BaseHTTPRequestHandler):
    server: StubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{time.strftime('%H:%M:%S')} {format % args}\n")

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        result: dict[str, Any] = json.loads(self.rfile.read(length) or b"{}")
        return result

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        review = self._body()
        if path == "/apis/authentication.k8s.io/v1/tokenreviews":
            user = load_tokens(self.server.tokens).get((review.get("spec") or {}).get("token", ""))
            status: dict[str, Any] = {"authenticated": user is not None}
            if user is not None:
                status["user"] = user
            self._reply(201, {**review, "status": status})
        elif path == "/apis/authorization.k8s.io/v1/subjectaccessreviews":
            spec = review.get("spec") or {}
            rules = load_rules(self.server.rules)
            granted = list(rules["users"].get(spec.get("user", ""), []))
            for group in spec.get("groups") or []:
                granted.extend(rules["groups"].get(group, []))
            allowed = any(rule_allows(rule, spec) for rule in granted)
            reason = "allowed by the local stack's rules" if allowed else "no rule of the local stack allows it"
            self._reply(201, {**review, "status": {"allowed": allowed, "reason": reason}})
        else:
            self._reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404})

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/api/v1/services":
            self._reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404})
            return
        query = parse_qs(url.query)
        if query.get("watch", ["false"])[0] not in ("true", "1"):
            self._reply(200, {"kind": "ServiceList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}})
            return
        # A watch on an empty, unchanging list: nothing to say until the client's timeout ends it.
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        time.sleep(min(float(query.get("timeoutSeconds", ["300"])[0]), 600.0))
        self.wfile.write(b"0\r\n\r\n")


class StubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, tokens: Path, rules: Path) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.tokens = tokens
        self.rules = rules


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", type=Path, required=True)
    parser.add_argument("--rules", type=Path, required=True)
    args = parser.parse_args()
    StubServer(args.port, args.tokens, args.rules).serve_forever()


if __name__ == "__main__":
    main()
