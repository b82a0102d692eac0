"""One blocking HTTP request that must answer a JSON object, for the CLI's API clients.

`caslb status|drain|enable|maint` (the balancer's admin API) and `caslb farm ...`
(casfarm's control API) both send one urllib request and want a JSON object
back. This module does the exchange; each caller builds its request and words
its own errors from `JsonStatusError` (an HTTP error answer and its `detail`) or `JsonApiError`.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


class JsonApiError(Exception):
    """The API could not be reached, or its answer was not a JSON object."""


class JsonStatusError(JsonApiError):
    """The API answered an HTTP error status."""

    def __init__(self, status: int, body: bytes) -> None:
        """Keep the status and the error body for the caller to word.

        Args:
            status: the HTTP status code of the answer.
            body: the answer's body, as sent.
        """
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body

    @property
    def detail(self) -> str:
        """The `error` field of a JSON error answer, else the body as text ("" if empty)."""
        try:
            return str(json.loads(self.body)["error"])
        except (ValueError, KeyError, TypeError):
            return self.body.decode("utf-8", "replace").strip()


def fetch_json(request: urllib.request.Request, *, peer: str, timeout: float) -> dict[str, Any]:
    """Send `request` and return its answer, decoded as a JSON object.

    Args:
        request: the prepared request (URL, method, headers, body).
        peer: how error messages name the API, e.g. "the farm at http://127.0.0.1:8099".
        timeout: seconds for the connection and each read.

    Raises:
        JsonStatusError: the API answered an HTTP error status.
        JsonApiError: the API is unreachable, or did not answer a JSON object.
    """
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            raise JsonStatusError(exc.code, exc.read()) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise JsonApiError(f"cannot reach {peer}: {reason}") from None
    try:
        answer = json.loads(body)
    except ValueError:
        raise JsonApiError(f"{peer} did not answer JSON") from None
    if not isinstance(answer, dict):
        raise JsonApiError(f"{peer} answered {type(answer).__name__}")
    return answer
