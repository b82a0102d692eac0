"""The lab's comparison: one farm behind the three designs at once, one fault, three answers.

What the README walk-through shows with curl, driven through the same
`[exchange.compare]` expansion as config/lab-compare.toml: with EWS's application
pool stopped on cas1, L7 and L4-SNI take cas1 out of their EWS pool on its
health page and no client sees a 503, while L4's one pool is checked on OWA,
keeps cas1, and hands EWS clients its 503s.
"""

from __future__ import annotations

from collections import Counter

import casfarm
from casfarm.ewsxml import SAMPLE_REQUEST as SOAP

from lb.app import Balancer
from tests.farmclient import https_client
from tests.smoke.test_app_l7 import NAMESPACE, balancer, farm_config, wait_for

COMPARE = '[exchange.compare]\nl4 = 9444\n"l4-sni" = 9445\n'
REQUESTS = 12
# The name each design's clients reach EWS by: the SNI design routes on it.
EWS_NAME = {"https": NAMESPACE, "l4-https": NAMESPACE, "l4-sni-https": f"ews.{NAMESPACE}"}


async def ews_statuses(app: Balancer, farm: casfarm.Farm, frontend: str) -> Counter[int]:
    """Statuses of REQUESTS EWS posts, each on a new connection (as curl does)."""
    host, port = app.addresses[frontend]
    seen: Counter[int] = Counter()
    for _ in range(REQUESTS):
        client = await https_client(host, port, ca_path=farm.ca_path,
                                    server_hostname=EWS_NAME[frontend])
        try:
            response = await client.request("POST", "/EWS/Exchange.asmx", body=SOAP)
        finally:
            await client.aclose()
        seen[response.status] += 1
    return seen


async def test_a_stopped_ews_app_pool_reaches_clients_only_through_single_namespace_l4() -> None:
    async with casfarm.running(servers=3) as farm, balancer(
            farm, farm_config(farm, "l7", COMPARE)) as app:
        ews_pools = ("ews", "l4-https", "l4-sni-ews")
        await wait_for(lambda: all(m.eligible for p in ews_pools for m in app.pools[p].members))
        farm.inject("cas1", "app_pool_stopped", vdir="ews")
        # The verdicts, not a fixed wait: both per-protocol designs take cas1 out of EWS...
        await wait_for(lambda: not app.pools["ews"].member("cas1").eligible
                       and not app.pools["l4-sni-ews"].member("cas1").eligible)
        # ... while the L4 pool, checked on OWA, still finds it healthy.
        assert app.pools["l4-https"].member("cas1").eligible
        l7 = await ews_statuses(app, farm, "https")
        sni = await ews_statuses(app, farm, "l4-sni-https")
        l4 = await ews_statuses(app, farm, "l4-https")
        assert l7 == Counter({200: REQUESTS}) and sni == Counter({200: REQUESTS})
        assert 0 < l4[503] < REQUESTS and l4[200] + l4[503] == REQUESTS, l4
        assert app.pools["l4-https"].member("cas1").eligible
