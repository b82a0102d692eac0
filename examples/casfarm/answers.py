"""Small answers every vdir may give: content types, 404, 405 and ASP.NET's 500 page."""

from __future__ import annotations

from casfarm.http import HttpExchange

HTML = ("Content-Type", "text/html; charset=utf-8")
XML = ("Content-Type", "text/xml; charset=utf-8")
JSON = ("Content-Type", "application/json; charset=utf-8")


async def server_error(ex: HttpExchange, status: int) -> None:
    """ASP.NET's runtime error page with `status` (the errors fault)."""
    await ex.read_body(0)
    body = (
        b"<html><head><title>Runtime Error</title></head><body><h1>Server Error in "
        b"Application.</h1><p>An unexpected error occurred on the server.</p></body></html>"
    )
    await ex.respond(status, body, [HTML])


async def method_not_allowed(ex: HttpExchange) -> None:
    """IIS's 405 for a verb the vdir does not take."""
    await ex.read_body(0)
    await ex.respond(
        405, b"<h1>405 - HTTP verb used to access this page is not allowed.</h1>", [HTML]
    )


async def not_found(ex: HttpExchange) -> None:
    """IIS's 404 page."""
    await ex.read_body(0)
    await ex.respond(404, b"<h1>404 - File or directory not found.</h1>", [HTML])
