"""Judging a case: does what the client got and what the backends recorded match an outcome?

Each check returns the list of its complaints, so a failing case prints every
way it differs from each acceptable outcome, not just the first.
"""

from __future__ import annotations

import logging

import pytest

from tests.hostile.case import CLOSING_VERDICTS, Case, Forwarded, Outcome
from tests.hostile.recording_backend import RecordingBackend, fixed_body
from tests.hostile.strict_reader import ReceivedRequest
from tests.hostile.wire import Reply


def reply_complaints(reply: Reply) -> list[str]:
    """What is wrong with the form of a reply, whatever the verdict."""
    found = []
    if reply.malformed is not None:
        found.append(f"not a well-formed HTTP/1.1 response stream: {reply.malformed}")
    if reply.ending == "hung":
        found.append("neither answered nor closed")
    return found


def verdict_complaints(reply: Reply, outcome: Outcome) -> list[str]:
    """How the client's side differs from `outcome`."""
    if outcome.verdict == "close":
        if reply.answers or reply.ending not in ("eof", "reset"):
            return [f"wanted a close without an answer, got {reply.describe()}"]
        return []
    found = []
    if [a.status for a in reply.answers] != [outcome.verdict] or not reply.answers[0].complete:
        found.append(f"wanted one complete {outcome.verdict}, got {reply.describe()}")
    elif outcome.verdict in CLOSING_VERDICTS and reply.ending not in ("eof", "reset"):
        found.append(f"wanted the connection closed after {outcome.verdict}, it was {reply.ending}")
    elif outcome.verdict == 200 and outcome.forwarded:
        answer, first = reply.answers[0], outcome.forwarded[0]
        if answer.header(b"x-backend") != first.pool.encode():
            found.append(f"answered by {answer.header(b'x-backend')!r}, wanted pool {first.pool}")
    return found


def request_complaints(got: ReceivedRequest, want: Forwarded) -> list[str]:
    """How one forwarded request differs from what the backend must receive."""
    found = []
    for attr in ("method", "target", "body", "framing"):
        if getattr(got, attr) != getattr(want, attr):
            found.append(f"{attr}: got {getattr(got, attr)!r}, wanted {getattr(want, attr)!r}")
    hosts = got.values(b"host")
    if len(hosts) != 1:
        found.append(f"wanted exactly one Host upstream, got {hosts!r}")
    for name, value in want.fields:
        if got.values(name) != [value]:
            found.append(f"{name.decode()}: got {got.values(name)!r}, wanted [{value!r}]")
    for name in want.absent:
        if got.values(name):
            found.append(f"{name.decode()} must not be forwarded, got {got.values(name)!r}")
    return found


def backend_complaints(backends: dict[str, RecordingBackend], outcome: Outcome) -> list[str]:
    """How what every backend recorded differs from `outcome`."""
    found = []
    for name, backend in backends.items():
        found += [f"backend {name} saw a malformed request: {v}" for v in backend.violations]
        wanted = [f for f in outcome.forwarded if f.pool == name]
        got = backend.complete
        if len(got) != len(wanted):
            targets = [r.target for r in got]
            found.append(
                f"backend {name}: got {len(got)} requests {targets!r}, wanted {len(wanted)}"
            )
        else:
            for g, w in zip(got, wanted, strict=True):
                found += [f"backend {name}: {c}" for c in request_complaints(g, w)]
        cut = [r for r in backend.requests if not r.complete]
        if cut and (outcome.partial != name or len(cut) > 1):
            found.append(f"backend {name}: got the start of {[r.target for r in cut]!r}")
    return found


def bodies_complaints(reply: Reply, outcome: Outcome) -> list[str]:
    """For a forwarded 200: the body the client got is the backend's answer to the right target."""
    if outcome.verdict != 200 or not outcome.forwarded or not reply.answers:
        return []
    want = outcome.forwarded[0]
    expected = fixed_body(want.pool, _as_received(want))
    if reply.answers[0].body != expected:
        return [f"body: got {reply.answers[0].body!r}, wanted {expected!r}"]
    return []


def _as_received(want: Forwarded) -> ReceivedRequest:
    return ReceivedRequest(0, want.method, want.target, b"1.1", (), want.body, want.framing)


def judge(case: Case, reply: Reply, backends: dict[str, RecordingBackend]) -> str | None:
    """None when the case passed, else every complaint against every outcome."""
    general = reply_complaints(reply)
    per_outcome = []
    for outcome in case.outcomes:
        found = (
            general
            + verdict_complaints(reply, outcome)
            + bodies_complaints(reply, outcome)
            + backend_complaints(backends, outcome)
        )
        if not found:
            return None
        per_outcome.append(f"against {outcome.verdict}: " + "; ".join(found))
    return " | ".join(per_outcome)


def assert_quiet_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing at ERROR and no traceback: a peer's input must never look like a bug."""
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, f"logged at ERROR: {errors}"
    assert "Traceback" not in caplog.text, caplog.text[-2000:]
