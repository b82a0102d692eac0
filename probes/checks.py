"""Exchange-aware health checks: what to check, where, and the verdict.

A :class:`CheckSpec` says *what* (healthcheck.htm GET, TCP connect, IMAP, POP or
SMTP dialogue, with or without TLS), a :class:`Target` says *where* (the FQDN
for Host and SNI, and the address and port to dial, which may differ: a lab
farm on loopback is probed under its real names). :func:`run_check` runs one
check under the spec's timeout and always returns a :class:`CheckResult`:
network trouble is a result, never an exception.
"""

from __future__ import annotations

import dataclasses
import math
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from probes import httpcheck, mailchecks
from probes.catalog import CheckKind, ExchangeProtocol
from probes.kept import EndpointKey, KeptConnections
from probes.lag import LagMeter, run_within
from probes.wire import CheckFailed, Reason, Session, tls_context

__all__ = ["CheckKind", "CheckResult", "CheckSpec", "Reason", "Target", "run_check"]

_MAIL_KINDS = (CheckKind.IMAP, CheckKind.POP, CheckKind.SMTP)


@dataclass(frozen=True)
class Target:
    """Where to send a check.

    Attributes:
        fqdn: the server's name, sent as Host and TLS SNI and matched
            against its certificate and its healthcheck body.
        host: the address (or resolvable name) to dial.
        port: the port to dial.
    """

    fqdn: str
    host: str
    port: int

    def __post_init__(self) -> None:
        if not self.fqdn or any(c.isspace() for c in self.fqdn):
            raise ValueError(f"fqdn must be a non-empty name without spaces, got {self.fqdn!r}")
        if not self.host:
            raise ValueError(f"host must not be empty (server {self.fqdn!r})")
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise ValueError(f"port must be an integer, got {self.port!r}")
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be in 1..65535, got {self.port!r}")


@dataclass(frozen=True)
class CheckSpec:
    """What one check does.

    Attributes:
        kind: the dialogue (see :class:`~probes.catalog.CheckKind`).
        path: the request path, required for HEALTHCHECK.
        timeout: bound on the whole check, connect included, in seconds.
        tls: TLS from the first byte (HTTPS, IMAPS, POP3S; TCP: connect + handshake).
        starttls: upgrade in the dialogue (IMAP STARTTLS, POP STLS, SMTP STARTTLS).
        expect_fqdn: HEALTHCHECK only: the body must name the target's FQDN.
        verify: check the certificate chain and name; False accepts any certificate.
        ca_file: CA bundle to verify against (None: the system store).
    """

    kind: CheckKind
    path: str | None = None
    timeout: float = 2.0
    tls: bool = True
    starttls: bool = False
    expect_fqdn: bool = False
    verify: bool = True
    ca_file: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, CheckKind):
            raise ValueError(f"kind must be a CheckKind, got {self.kind!r}")
        if not (isinstance(self.timeout, int | float) and math.isfinite(self.timeout)):
            raise ValueError(f"timeout must be a number of seconds, got {self.timeout!r}")
        if self.timeout <= 0:
            raise ValueError(f"timeout must be positive, got {self.timeout!r}")
        if self.kind is CheckKind.HEALTHCHECK and not (self.path or "").startswith("/"):
            raise ValueError(f"path must start with '/' for a healthcheck, got {self.path!r}")
        if self.starttls and self.kind not in _MAIL_KINDS:
            kind = self.kind.value
            raise ValueError(f"starttls applies to imap, pop and smtp checks, not {kind}")
        if self.starttls and self.tls:
            raise ValueError("starttls and tls (implicit TLS) exclude each other")
        if self.ca_file is not None and not self.verify:
            raise ValueError(f"ca_file {self.ca_file!r} given but verify is off")

    @classmethod
    def for_protocol(cls, proto: ExchangeProtocol, **overrides: Any) -> CheckSpec:
        """The catalog's check for ``proto``, with fields overridden.

        Asking for ``starttls=True`` turns implicit TLS off unless ``tls`` is given.

        Raises:
            ValueError: an override is invalid; TypeError: an unknown field.
        """
        fields: dict[str, Any] = {
            "kind": proto.check,
            "path": proto.healthcheck_path,
            "timeout": proto.check_timeout,
            "tls": proto.implicit_tls,
        }
        if overrides.get("starttls") and "tls" not in overrides:
            fields["tls"] = False
        return cls(**(fields | overrides))

    def tls_context(self) -> ssl.SSLContext:
        """The TLS client context this spec verifies with (cached).

        Raises:
            ValueError: the CA file cannot be loaded.
        """
        return tls_context(self.verify, self.ca_file)

    def replace(self, **changes: Any) -> CheckSpec:
        """A copy with fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class CheckResult:
    """The verdict of one check.

    Attributes:
        ok: True when the server passed.
        reason: what happened (``Reason.OK`` when it passed).
        detail: a short human account, e.g. "HTTP 503 Service Unavailable".
        duration: how long the check took, in seconds.
    """

    ok: bool
    reason: Reason
    detail: str
    duration: float

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}" if self.detail else self.reason.value

    @property
    def skipped(self) -> bool:
        """True when the check could not run for the balancer's own lack of fds or
        memory: neither a pass nor a failure of the server."""
        return self.reason is Reason.LOCAL_RESOURCES


Dialogue = Callable[[Session, CheckSpec], Awaitable[str]]


async def _tcp(session: Session, spec: CheckSpec) -> str:
    return "TLS handshake ok" if spec.tls else "connected"


async def _healthcheck(session: Session, spec: CheckSpec, *, keep_alive: bool = False) -> str:
    assert spec.path is not None  # validated by CheckSpec
    return await httpcheck.healthcheck(
        session, spec.path, expect_fqdn=spec.expect_fqdn, keep_alive=keep_alive
    )


def _mail(dialogue: Callable[[Session, ssl.SSLContext | None], Awaitable[str]]) -> Dialogue:
    async def run(session: Session, spec: CheckSpec) -> str:
        return await dialogue(session, spec.tls_context() if spec.starttls else None)

    return run


_DIALOGUES: dict[CheckKind, Dialogue] = {
    CheckKind.TCP: _tcp,
    CheckKind.HEALTHCHECK: _healthcheck,
    CheckKind.IMAP: _mail(mailchecks.imap),
    CheckKind.POP: _mail(mailchecks.pop),
    CheckKind.SMTP: _mail(mailchecks.smtp),
}


_IDLE_CLOSE = (Reason.CLOSED, Reason.RESET)
# How long a check waits for the kept connection another check of the same
# server is using, as a share of its timeout: a hung vdir holds the connection,
# and delays the verdicts behind it by no more than this.
_PATIENCE = 0.1


class _Conversation:
    """One check's dialogue, on a kept connection when one may carry it.

    `session` is the connection in use, for the timeout's phase and the clean-up.
    """

    def __init__(
        self, spec: CheckSpec, target: Target, kept: KeptConnections | None, reuse_for: float
    ) -> None:
        self.spec = spec
        self.target = target
        self.session: Session | None = None
        reusable = spec.kind is CheckKind.HEALTHCHECK and reuse_for > 0
        self._kept = kept if reusable else None
        self._reuse_for = reuse_for
        context_id = id(spec.tls_context()) if spec.tls else 0
        self._key: EndpointKey = (context_id, target.fqdn, target.host, target.port)
        self._borrowed = False  # holds the endpoint's turn (probes.kept)

    async def run(self) -> str:
        if self._kept is not None:
            session = await self._kept.borrow(self._key, self.spec.timeout * _PATIENCE)
            self._borrowed = True
            if session is not None:
                self.session = session
                before = session.received
                try:
                    return await _healthcheck(session, self.spec, keep_alive=True)
                except CheckFailed as failed:
                    if failed.reason not in _IDLE_CLOSE or session.received != before:
                        raise
                # The server closed the idle connection before this GET: that is
                # not the server failing, so ask again on a new connection.
                await session.aclose()
        self.session = session = Session(self.target.fqdn, self.target.host, self.target.port)
        await session.connect()
        if self.spec.tls:
            await session.start_tls(self.spec.tls_context())
        if self._kept is not None:
            return await _healthcheck(session, self.spec, keep_alive=True)
        return await _DIALOGUES[self.spec.kind](session, self.spec)

    async def finish(self, passed: bool) -> None:
        session = self.session
        if session is not None and passed:
            session.passed()
            if self._kept is not None and self._borrowed and session.reusable:
                self._kept.give(self._key, session, self._reuse_for)
                return
        if self._kept is not None and self._borrowed:
            self._kept.release(self._key)  # before the close: the next check need not wait
        if session is not None:
            await session.aclose()


async def run_check(
    spec: CheckSpec,
    target: Target,
    *,
    lag: LagMeter | None = None,
    kept: KeptConnections | None = None,
    reuse_for: float = 0.0,
) -> CheckResult:
    """Run one check against one server, bounded by ``spec.timeout``.

    With a `lag` meter, the timeout counts only the time the balancer could
    run (probes.lag): what its own lateness stole is added back, up to once more.
    With `kept` and a positive `reuse_for`, a healthcheck GET rides a
    connection an earlier check to the same endpoint left open, if that was
    opened less than `reuse_for` seconds ago (probes.kept).

    Never raises for network trouble: refusals, resets, TLS failures, timeouts
    and protocol errors all come back as a failed :class:`CheckResult`.

    Raises:
        ValueError: the spec's CA file cannot be loaded (a configuration error).
    """
    spec.tls_context()  # a bad CA file is a config error: raise it, don't report it
    conversation = _Conversation(spec, target, kept, reuse_for)
    started = trio.current_time()
    passed = False
    try:
        detail = await run_within(lag, spec.timeout, conversation.run)
        if detail is None:
            phase = conversation.session.phase if conversation.session else "connecting"
            raise _timed_out(phase, spec.timeout)
    except CheckFailed as failed:
        result = CheckResult(False, failed.reason, failed.detail, trio.current_time() - started)
    else:
        result = CheckResult(True, Reason.OK, detail, trio.current_time() - started)
        passed = True
    finally:
        await conversation.finish(passed)
    return result


def _timed_out(phase: str, timeout: float) -> CheckFailed:
    if phase == "connecting":
        return CheckFailed(Reason.CONNECT_TIMEOUT, f"no connection within {timeout:g}s")
    return CheckFailed(Reason.TIMEOUT, f"{timeout:g}s passed {phase}")
