"""`plan_reload` on config tables: what a reload retires, replaces, starts and reuses."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from lb import renewal
from lb.config.model import (
    AdminConfig,
    CertConfig,
    CheckConfig,
    Config,
    FrontendConfig,
    Mode,
    PoolConfig,
    ServerConfig,
    UpstreamTlsConfig,
)
from lb.reload import ReloadPlan, plan_reload
from probes.checks import CheckKind, CheckSpec
from probes.state import Timing

SERVERS = (ServerConfig("cas1", "127.0.0.11", 443, "cas1.lab.local"),)


def pool(name: str, **settings: object) -> PoolConfig:
    return PoolConfig(name, SERVERS, **settings)  # type: ignore[arg-type]


def tcp(name: str, port: int, pool_name: str = "owa", host: str = "127.0.0.1") -> FrontendConfig:
    return FrontendConfig(name, Mode.TCP, host, port, pool=pool_name)


def http(name: str, port: int, *pools: str) -> FrontendConfig:
    return FrontendConfig(name, Mode.HTTP, "127.0.0.1", port, default_pool=pools[0],
                          routes={f"/{p}": p for p in pools})


def config(*frontends: FrontendConfig, pools: tuple[PoolConfig, ...] = (pool("owa"),)) -> Config:
    return Config(frontends, {p.name: p for p in pools})


def serving(c: Config) -> dict[str, FrontendConfig]:
    return {fe.name: fe for fe in c.frontends}


OLD = config(tcp("imap", 993), http("https", 443, "owa", "ews"),
             pools=(pool("owa"), pool("ews")))

CASES = [
    ("nothing changed", OLD, ReloadPlan(reconfigure=("owa", "ews"), keep=("imap", "https"))),
    ("a new frontend starts",
     dataclasses.replace(OLD, frontends=(*OLD.frontends, tcp("pop", 995))),
     ReloadPlan(reconfigure=("owa", "ews"), start=("pop",), keep=("imap", "https"))),
    ("a frontend gone is retired",
     dataclasses.replace(OLD, frontends=OLD.frontends[1:]),
     ReloadPlan(reconfigure=("owa", "ews"), retire=("imap",), keep=("https",))),
    ("a changed frontend on the same address reuses its sockets",
     dataclasses.replace(OLD, frontends=(dataclasses.replace(OLD.frontends[0],
                                                             idle_timeout=60.0),
                                         OLD.frontends[1])),
     ReloadPlan(reconfigure=("owa", "ews"), replace=("imap",), reuse=frozenset({"imap"}),
                keep=("https",))),
    ("a frontend that moves gets fresh sockets",
     dataclasses.replace(OLD, frontends=(tcp("imap", 1993), OLD.frontends[1])),
     ReloadPlan(reconfigure=("owa", "ews"), replace=("imap",), keep=("https",))),
    ("an L7 frontend is rebuilt when one of its pools changes; L4 reads its pool live",
     dataclasses.replace(OLD, pools={"owa": pool("owa", connect_timeout=9.0), "ews": pool("ews")}),
     ReloadPlan(reconfigure=("owa", "ews"), replace=("https",), reuse=frozenset({"https"}),
                keep=("imap",))),
    ("pools added and removed",
     config(tcp("imap", 993), pools=(pool("owa"), pool("mapi"))),
     ReloadPlan(reconfigure=("owa",), add=("mapi",), remove=("ews",), retire=("https",),
                keep=("imap",))),
    ("an admin listener change needs a restart",
     dataclasses.replace(OLD, admin=AdminConfig(port=9191)),
     ReloadPlan(reconfigure=("owa", "ews"), keep=("imap", "https"), needs_restart=("admin",))),
]


@pytest.mark.parametrize(("new", "plan"), [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_plan(new: Config, plan: ReloadPlan) -> None:
    assert plan_reload(OLD, new, serving(OLD)) == plan


def test_a_process_without_frontends_plans_pools_only() -> None:
    new = dataclasses.replace(OLD, frontends=(*OLD.frontends, tcp("pop", 995)))
    assert plan_reload(OLD, new, {}, serve_frontends=False) == ReloadPlan(
        reconfigure=("owa", "ews"))


def test_pools_left_behind_by_a_failed_reload_are_removed_by_the_next() -> None:
    new = config(tcp("imap", 993), http("https", 443, "owa", "ews"),
                 pools=(pool("owa"), pool("ews")))
    plan = plan_reload(OLD, new, serving(OLD), pools=["owa", "ews", "ecp"])
    assert plan.remove == ("ecp",)


def test_the_plan_follows_config_order() -> None:
    new = config(tcp("c", 3), tcp("a", 1), tcp("b", 2))
    assert plan_reload(config(), new, {}).start == ("c", "a", "b")


TLS = config(tcp("imap", 993),
             dataclasses.replace(http("https", 443, "owa", "ews"),
                                 tls=(CertConfig("/etc/caslb/mail.pem", "/etc/caslb/mail.key"),)),
             pools=(pool("owa"), pool("ews", upstream_tls=UpstreamTlsConfig(
                 ca_file="/etc/caslb/farm-ca.pem"))))


@pytest.mark.parametrize("renewed", ["/etc/caslb/mail.pem", "/etc/caslb/mail.key",
                                     "/etc/caslb/farm-ca.pem"])
def test_a_frontend_whose_file_was_renewed_is_rebuilt_on_its_sockets(renewed: str) -> None:
    assert plan_reload(TLS, TLS, serving(TLS), renewed={renewed}) == ReloadPlan(
        reconfigure=("owa", "ews"), replace=("https",), reuse=frozenset({"https"}),
        keep=("imap",))


def test_a_file_no_frontend_was_built_from_changes_nothing() -> None:
    assert plan_reload(TLS, TLS, serving(TLS), renewed={"/etc/caslb/other.pem"}).keep == (
        "imap", "https")


def test_digests_see_a_file_rewritten_in_place(tmp_path: Path) -> None:
    cert, ca = tmp_path / "mail.pem", tmp_path / "ca.pem"
    cert.write_text("one")
    ca.write_text("ca")
    files = config(dataclasses.replace(http("https", 443, "owa"),
                                       tls=(CertConfig(str(cert), str(cert)),)),
                   pools=(pool("owa", check=CheckConfig(
                       CheckSpec(kind=CheckKind.HEALTHCHECK, path="/owa/healthcheck.htm",
                                 tls=True, ca_file=str(ca)), Timing())),))
    before = renewal.digests(files)
    assert set(before) == {str(cert), str(ca)}
    assert renewal.renewed(before, renewal.digests(files)) == frozenset()
    cert.write_text("two")  # same size, maybe the same mtime: the digest still moves
    ca.unlink()
    assert renewal.renewed(before, renewal.digests(files)) == {str(cert), str(ca)}
