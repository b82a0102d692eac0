"""NTLM logons through caslb, at L7 and at L4, with real clients (requests_ntlm, curl --ntlm).

casfarm binds NTLM to the TCP connection (tests/smoke/test_farm_auth.py shows an
answer on another connection failing). So a logon that succeeds, and later
requests on the same client connection that are served with no new handshake,
prove the balancer kept that client on one upstream connection: at L7 that is
the proxy's pinning, at L4 it is one TCP flow. At L7 the pinning is per pool:
a switch to another protocol opens another upstream connection, and the client
logs on again there, as it would against Exchange.
"""

from __future__ import annotations

import casfarm
import pytest

from tests.authclients import curl_ntlm, ntlm_session, post
from tests.smoke.test_app_l4 import l4_config
from tests.smoke.test_app_l7 import NAMESPACE, balancer, farm_config, wait_for

pytestmark = pytest.mark.smoke


@pytest.mark.parametrize("mode", ["l7", "l4"])
async def test_an_ntlm_logon_holds_through_the_balancer(mode: str) -> None:
    async with casfarm.running(servers=2, auth=True) as farm:
        config = farm_config(farm) if mode == "l7" else l4_config(farm, "l4")
        async with balancer(farm, config) as app:
            await wait_for(lambda: all(m.eligible for p in app.pools.values() for m in p.members))
            host, port = app.addresses["https"]
            session = ntlm_session(farm.ca_path, NAMESPACE)
            url = f"https://{host}:{port}"
            first = await post(session, f"{url}/EWS/Exchange.asmx")
            assert (first.status, first.challenges) == (200, [401, 401])
            # Same client connection, no Authorization: only the authenticated upstream serves it.
            for _ in range(3):
                again = await post(session, f"{url}/EWS/Exchange.asmx")
                assert (again.status, again.challenges, again.server) == (200, [], first.server)
            # Another protocol: at L7 another pool, so another upstream connection, which has
            # to log on again; at L4 the same TCP flow, still authenticated.
            mapi = await post(session, f"{url}/mapi/emsmdb/?MailboxId=a@lab.local")
            assert (mapi.status, mapi.challenges) == (200, [401, 401] if mode == "l7" else [])
            session.close()
            status, connects = await curl_ntlm(
                farm.ca_path, NAMESPACE, host, port, "/EWS/Exchange.asmx"
            )
            assert (status, connects) == (200, 1)
