"""The admin API: metrics, status, status page and drain/enable/maint actions.

`server` carries HTTP over trio streams and is each connection's failure
boundary, `guard` decides whether a request may be served at all (Host,
Origin, the state-change marker, the token), and `routes` turns an admitted
request into its reply. Only `server` does I/O.
"""

from lb.admin.messages import Reply, Request
from lb.admin.routes import AdminContext, AdminHook, ReloadHook, respond
from lb.admin.server import (
    MAX_REQUESTS_PER_CONNECTION,
    READ_TIMEOUT,
    AdminBindError,
    InternalErrorHook,
    check_bind,
    serve_admin,
    serve_connection,
)

__all__ = [
    "MAX_REQUESTS_PER_CONNECTION",
    "READ_TIMEOUT",
    "AdminBindError",
    "AdminContext",
    "AdminHook",
    "InternalErrorHook",
    "ReloadHook",
    "Reply",
    "Request",
    "check_bind",
    "respond",
    "serve_admin",
    "serve_connection",
]
