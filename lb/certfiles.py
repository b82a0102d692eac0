"""What is wrong with a certificate, key or CA file, in words a person can act on.

Theory of operation
-------------------
`ssl` reports every problem with a certificate chain as an `SSLError` or an
`OSError` whose text names neither the file nor the fault in plain terms
("[SSL] PEM lib"). `caslb check` must fail on these before `caslb run` does
(systemd runs `caslb check` as ExecStartPre), and `run` must say the same
thing when it meets them, so both ask this module, which tries the same load
the balancer will make, one step at a time, and names the first step that
fails: the file is missing, unreadable, does not parse, or the key does not
match the certificate. Each answer says which file ("cert", "key", "ca") so
the caller can put its own key path in front.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FileProblem:
    """One problem: which file of the pair ("cert", "key" or "ca") and what is wrong."""

    which: str
    problem: str


def file_problem(which: str, path: str | Path) -> FileProblem | None:
    """Whether `path` exists and can be read, as the balancer will need it."""
    path = Path(path)
    if not path.exists():
        return FileProblem(which, f"file {str(path)!r} does not exist")
    if not path.is_file():
        return FileProblem(which, f"{str(path)!r} is not a file")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        return FileProblem(which, f"cannot read {str(path)!r}: {reason}")
    return None


def certificate_problem(cert_file: str | Path, key_file: str | Path | None) -> FileProblem | None:
    """The first problem with a certificate chain and its key, None when they load."""
    for which, path in (("cert", cert_file), ("key", key_file)):
        if path is not None and (found := file_problem(which, path)) is not None:
            return found
    cert = str(cert_file)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=cert)
    except (ssl.SSLError, ValueError):
        return FileProblem("cert", f"{cert!r} does not hold a PEM certificate")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(cert, None if key_file is None else str(key_file))
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
            return FileProblem("key", f"{str(key_file)!r} is not the key of {cert!r}")
        return FileProblem("key", f"{str(key_file or cert)!r} does not hold a PEM private key")
    except OSError as exc:  # read between the checks above and now
        return FileProblem("cert", f"cannot load {cert!r}: {exc}")
    return None


def ca_problem(ca_file: str | Path) -> FileProblem | None:
    """The problem with a CA bundle, None when it loads."""
    found = file_problem("ca", ca_file)
    if found is not None:
        return found
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(ca_file))
    except (ssl.SSLError, ValueError):
        return FileProblem("ca", f"{str(ca_file)!r} does not hold a PEM certificate")
    return None
