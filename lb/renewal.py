"""Certificate renewal: the certificate, key and CA files a config names, and which changed.

Theory of operation
-------------------
A renewed certificate usually keeps its file name, so the config text does not
change and comparing configs (lb/reload.py) would leave the old certificate in
force. A reload therefore also takes a digest of every file the config names
and compares it with the digests the running objects were built from: a
frontend whose certificate or key, or (http) whose pools' re-encryption CA
changed, is rebuilt; a probe CA that changed is loaded again. Digests, not
modification times: a renewal copied in with its times kept, or a file
rewritten within the clock's resolution, is still seen.

The files are read once per reload (a few kB each), never per connection.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping

from lb.config import Config, FrontendConfig, Mode

Digests = Mapping[str, str]
"""File name, as the config names it → digest of its contents ("" when it cannot be read)."""


def frontend_files(fe: FrontendConfig, config: Config) -> Iterator[str]:
    """The files a frontend object is built from: its certificates and keys, and for an
    http frontend the CA files its pools re-encrypt with."""
    for cert in fe.tls:
        yield cert.cert_file
        yield cert.key_file
    if fe.mode is Mode.HTTP:
        for name in fe.pool_names:
            pool = config.pools.get(name)
            if pool is not None and pool.upstream_tls is not None and pool.upstream_tls.ca_file:
                yield pool.upstream_tls.ca_file


def check_files(config: Config) -> Iterator[str]:
    """The CA files the pools' health checks verify with."""
    for pool in config.pools.values():
        if pool.check is not None and pool.check.spec.ca_file:
            yield pool.check.spec.ca_file


def _digest(path: str) -> str:
    try:
        with open(path, "rb") as file:
            return hashlib.sha256(file.read()).hexdigest()
    except OSError:
        # Building the object that needs it says what is wrong (lb.certfiles).
        return ""


def digests(config: Config) -> dict[str, str]:
    """A digest of every certificate, key and CA file `config` names."""
    names = [*(f for fe in config.frontends for f in frontend_files(fe, config)),
             *check_files(config)]
    return {name: _digest(name) for name in dict.fromkeys(names)}


def renewed(before: Digests, after: Digests) -> frozenset[str]:
    """The files named both times whose contents changed."""
    return frozenset(name for name, digest in after.items()
                     if before.get(name, digest) != digest)
