"""casfarm: a simulated Exchange Client Access farm for labs, demos and tests.

The other side of the wire from caslb: N CAS servers on loopback, each with
HTTPS virtual directories that answer healthcheck.htm as Exchange does, IMAP,
POP and SMTP with Exchange's banners and dialogue, component states with
requesters, and injectable faults (docs/exchange.md §6). It imports nothing from
`lb` or `probes`.

Library use::

    async with casfarm.running(servers=3) as farm:
        cas1 = farm.server("cas1")   # FarmServer(name, fqdn, host, ports)
        cas1.ports["https"]          # also imap, imaps, pop, pops, smtp, submission
        farm.ca_path                 # CA PEM to trust; certificates name the FQDN,
                                     # the namespace (mail.lab.local) and the address
        farm.control_url             # "http://127.0.0.1:PORT", or None
        farm.set_component("cas1", "EwsProxy", "Inactive", requester="HealthApi")
        farm.inject("cas1", "crash"); farm.clear("cas1", "crash"); farm.clear("cas1")
        farm.inject("cas2", "app_pool_stopped", vdir="ews")
        farm.inject("cas2", "errors", vdir="owa", status=500)
        farm.inject("cas3", "slow", seconds=1.5)
        farm.counts("cas1")          # ServerCounts(requests, healthchecks, connections, errors)
        farm.requests                # {"cas1": {"owa": 12, "ews": 3, ...}, ...}
        farm.reset_counts()

`running()` keywords: distinct_addresses (True: cas1 on 127.0.0.11, cas2 on
.12...; False: all on 127.0.0.1, base ports + index), base_ports (None: every
port 0), health_cache_delay, responder (a `ResponderPolicy`: Managed
Availability offlines a failing protocol's component and brings it back),
heartbeat, pending_period, oab_size, rpc_out_interval, cert_dir, namespace,
control, control_host, control_port, auth (False: every request anonymous;
True: NTLM/Negotiate, Basic and OWA forms as Exchange, docs/exchange.md §1.4),
users (default `LAB_USERS`, the lab user LAB\\alice / Passw0rd),
owa_session_timeout, idle_close, mailbox_server.
Every vdir answers `GET /<vdir>/healthcheck.htm` with 200 and
`200 OK<br/><fqdn>` while its component is Active or Draining, a TCP reset
when it (or ServerWideOffline) is Inactive, and HTTP.sys's 503 when its app
pool is stopped. Responses carry `X-FEServer: CAS1`; answers proxied to the
mailbox server also `X-CalculatedBETarget`/`X-BEServer` naming it (mailbox_server,
default mbx1.<domain>). Idle keep-alive HTTPS connections close after idle_close
seconds (IIS connectionTimeout, 120). IMAP and POP ports refuse connections while
their service is stopped (ImapProxy/PopProxy/ServerWideOffline Inactive); SMTP
refuses MAIL FROM with 452 4.3.2 while HubTransport drains.
`farm.start_maintenance("cas1")` / `end_maintenance` run Microsoft's sequence.

Faults: crash, blackhole, hang, hang_tls, slow (seconds), app_pool_stopped
(vdir), errors (vdir, status), flap (seconds = half-period), wrong_body,
bad_cert (mode wrong_name | expired). The demo ports (`caslb farm`) are in
`DEMO_PORTS`; the control API is described in `casfarm.control`.
"""

from casfarm.auth import LAB_DOMAIN, LAB_USERS
from casfarm.components import Component, ComponentState, Requester
from casfarm.counters import ServerCounts
from casfarm.farm import DEMO_CONTROL_PORT, DEMO_PORTS, Farm, running
from casfarm.faults import FaultKind
from casfarm.responder import LAB_POLICY, ResponderPolicy
from casfarm.server import PORT_KINDS, FarmServer
from casfarm.trafficprofile import TrafficProfile
from casfarm.vdirs import VDIRS, Vdir

__all__ = [
    "DEMO_CONTROL_PORT",
    "DEMO_PORTS",
    "LAB_DOMAIN",
    "LAB_POLICY",
    "LAB_USERS",
    "PORT_KINDS",
    "VDIRS",
    "Component",
    "ComponentState",
    "Farm",
    "FarmServer",
    "FaultKind",
    "Requester",
    "ResponderPolicy",
    "ServerCounts",
    "TrafficProfile",
    "Vdir",
    "running",
]
