"""A JSON API for operators and their scripts: hubs, what they reported, and resync requests.

    GET  /api/hubs/                      hubs with their state and heartbeat           manager.view_hub
    GET  /api/hubs/<name>/               one hub: state per type, recent requests      manager.view_hub
    GET  /api/clusters/                  managed clusters                              manager.view_managedcluster
    GET  /api/policies/                  local policies                                manager.view_localpolicy
    GET  /api/compliance/                local compliance, with the policy's name      manager.view_localcompliance
    POST /api/resync/                    ask hubs for full state                       manager.add_resyncrequest
    GET  /api/resync-requests/<id>/      a request and its completion per hub          manager.view_resyncrequest

Modules: ``auth`` (who calls and whether they may: Bearer token, Basic, session), ``tokens`` (issuing and checking
tokens), ``pages`` (strict query strings, keyset pagination), ``hubs`` and ``inventory`` (the endpoints),
``responses`` (JSON errors, the JSON 404 for unknown paths). Every answer is JSON, errors included. README.md
documents the parameters.
"""

from globalhub.manager.api.hubs import hub_detail, hubs, resync, resync_request_detail
from globalhub.manager.api.inventory import clusters, compliance, policies
from globalhub.manager.api.responses import not_found

__all__ = [
    "clusters",
    "compliance",
    "hub_detail",
    "hubs",
    "not_found",
    "policies",
    "resync",
    "resync_request_detail",
]
