"""The admin API: metrics, status, status page and drain/enable/maint actions.

`server` carries HTTP over trio streams, `guard` decides whether a request
may be served at all (Host, Origin, the state-change marker, the token), and
`routes` turns an admitted request into its reply. Only `server` does I/O.
"""

from lb.admin.server import (
    MAX_REQUESTS_PER_CONNECTION,
    READ_TIMEOUT,
    AdminBindError,
    AdminContext,
    AdminHook,
    Reply,
    Request,
    check_bind,
    respond,
    serve_admin,
    serve_connection,
)

__all__ = [
    "MAX_REQUESTS_PER_CONNECTION",
    "READ_TIMEOUT",
    "AdminBindError",
    "AdminContext",
    "AdminHook",
    "Reply",
    "Request",
    "check_bind",
    "respond",
    "serve_admin",
    "serve_connection",
]
